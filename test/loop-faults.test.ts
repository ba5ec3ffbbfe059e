// datapath/loop's fault boundary and the counters below the pipeline as `stats` and /metrics
// show them (issue 10 item 6, issue 13 item 8). Fake TUN/IPIP sources and pcap tap, a real
// Pipeline; no root needed.
import { describe, expect, it, vi } from 'vitest';
import * as path from 'node:path';
import { PacketBatch, HEADROOM, SLOT_SIZE, IO_DROP_REASONS, type PacketIoStats, type TunSysStats } from '../src/io';
import type { PcapTap } from '../src/io/pcap';
import { buildPacket, writeIcmpFragNeeded, writeIcmpUnreachable, ICMP_PORT_UNREACH } from '../src/netstack';
import { ConntrackTable } from '../src/conntrack';
import { buildRules, compileMatcher, loadConfig, makeNodeSettings, parseIPv4 } from '../src/nat';
import { Pipeline } from '../src/datapath/pipeline';
import { BatchLoop, FAULT_EXCEPTIONS, FAULT_IO_ERRORS, FAULT_PACKETS, FAULT_LOG_INTERVAL_MS, type FdFailure } from '../src/datapath/loop';
import { daemonStats, pipelineMetricsSource, type DataPathIo } from '../src/ops/stats';
import { createMetricsRegistry, SyncRecorder } from '../src/ops/metrics';

const ROOT = path.resolve(__dirname, '..');
const ip = parseIPv4;

function pipeline(): Pipeline {
  const state = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
  const node = makeNodeSettings(state, { hostnameOverride: 'worker-2' });
  return new Pipeline({
    nodeIP: ip('192.168.2.2'), tunnelAddress: 0, serviceNet: ip('10.96.0.0'), serviceMask: ip('255.240.0.0'),
    remoteNodes: [], tunnelMtu: 1480, fullyRandom: true, avoidReuseMs: 0,
  }, compileMatcher(buildRules(state, node), node), new ConntrackTable({ max: 64, seed: 1 }));
}

/** A source whose next read() does what `next` says: deliver packets, return 0, or throw. */
class FakeFd {
  readable: (() => void) | null = null;
  next: (b: PacketBatch) => number = () => 0;
  written = 0;
  constructor(readonly name: string) {}
  read(b: PacketBatch): number { const n = this.next(b); this.next = () => 0; b.count = n; return n; }
  write(b: PacketBatch): number { this.written += b.count; return b.count; }
  onReadable(cb: () => void): void { this.readable = cb; }
  offReadable(): void { this.readable = null; }
}

const UDP = buildPacket({ src: ip('10.1.139.84'), dst: ip('10.1.236.141'), udp: { sport: 1000, dport: 53, payload: new Uint8Array(8) } });
const deliver = (n: number) => (b: PacketBatch): number => {
  for (let i = 0; i < n; i++) { const at = i * SLOT_SIZE + HEADROOM; b.slab.set(UDP, at); b.offs[i] = at; b.lens[i] = UDP.length; }
  return n;
};
const errnoError = (syscall: string, errno: number, text: string) =>
  Object.assign(new Error(`${syscall} fd 9: ${text}`), { errno: -errno, syscall, code: 'X' });

function setup() {
  const p = pipeline(), tun = new FakeFd('kt0'), ipip = new FakeFd('ipip');
  const tap = { ingress: vi.fn(), egress: vi.fn() };
  const log = { error: vi.fn(), warn: vi.fn() };
  const failures: FdFailure[] = [];
  const loop = new BatchLoop(p, tap as unknown as PcapTap, tun as never, ipip as never, { log: log as never, onFdFailure: (f) => failures.push(f) });
  loop.start();
  return { p, tun, ipip, tap, log, failures, loop };
}

describe('BatchLoop fault boundary', () => {
  it('a batch that throws is counted and logged once with its stack; the loop goes on', () => {
    const s = setup();
    const boom = vi.spyOn(s.p, 'processTunBatch').mockImplementation(() => { throw new TypeError('bug in the pipeline'); });
    s.tun.next = deliver(3);
    s.tun.readable!();
    expect(s.loop.faults[FAULT_EXCEPTIONS]).toBe(1);
    expect(s.loop.faults[FAULT_PACKETS]).toBe(3);
    expect(s.loop.lastException).toBe('bug in the pipeline');
    expect(s.log.warn).toHaveBeenCalledTimes(1);
    expect(s.log.warn.mock.calls[0][0].stack).toMatch(/TypeError: bug in the pipeline\n\s+at /);
    expect(s.log.warn.mock.calls[0][1]).toBe('loop-exception: batch from kt0 dropped');
    // Within the log interval: counted, not logged.
    s.tun.next = deliver(2);
    s.tun.readable!();
    expect(s.loop.faults[FAULT_EXCEPTIONS]).toBe(2);
    expect(s.loop.faults[FAULT_PACKETS]).toBe(5);
    expect(s.log.warn).toHaveBeenCalledTimes(1);
    // The loop still works once the bug is gone, and the polls are still armed.
    boom.mockRestore();
    s.tun.next = deliver(4);
    s.tun.readable!();
    expect(s.tun.written).toBe(4);
    expect(s.failures).toEqual([]);
    expect(s.log.error).not.toHaveBeenCalled();
    expect(FAULT_LOG_INTERVAL_MS).toBeGreaterThan(0);
  });

  it('the TUN gone (read: EBADFD): polls stopped, one error line naming kt0 and the errno, onFdFailure once', () => {
    const s = setup();
    s.tun.next = () => { throw errnoError('read', 77, 'File descriptor in bad state'); };
    s.tun.readable!();
    expect(s.failures).toEqual([{ device: 'kt0', syscall: 'read', errno: 77, code: 'EBADFD', message: 'read fd 9: File descriptor in bad state' }]);
    expect(s.log.error).toHaveBeenCalledTimes(1);
    expect(s.log.error.mock.calls[0][1]).toBe('tun device kt0 failed: read: EBADFD (errno 77); stopping the daemon');
    expect(s.tun.readable).toBeNull();
    expect(s.ipip.readable).toBeNull();
    expect(s.loop.faults[FAULT_EXCEPTIONS]).toBe(0);
  });

  it('a transient raw-socket error (recvmmsg: ENOPROTOOPT from a peer without kube-tun) is not fatal', () => {
    const s = setup();
    s.ipip.next = () => { throw errnoError('recvmmsg', 92, 'Protocol not available'); };
    s.ipip.readable!();
    expect(s.failures).toEqual([]);
    expect(s.loop.faults[FAULT_IO_ERRORS]).toBe(1);
    expect(s.loop.faults[FAULT_EXCEPTIONS]).toBe(0);
    expect(s.log.warn.mock.calls[0][0]).toMatchObject({ device: 'ipip', errno: 92, code: 'ENOPROTOOPT' });
    expect(s.ipip.readable).not.toBeNull();
  });

  it('an EIO from the pcap file (not a device read/write) is a loop exception, not an fd failure', () => {
    const s = setup();
    s.tap.ingress.mockImplementationOnce(() => { throw errnoError('write', 5, 'Input/output error'); });
    s.tun.next = deliver(1);
    s.tun.readable!();
    expect(s.failures).toEqual([]);
    expect(s.loop.faults[FAULT_EXCEPTIONS]).toBe(1);
  });

  it('generated ICMP errors are counted by type as they are written', () => {
    const s = setup();
    vi.spyOn(s.p, 'processTunBatch').mockImplementation(() => {
      const g = s.p.generated;
      for (const kind of ['frag', 'port', 'frag']) {
        const at = g.count * SLOT_SIZE + HEADROOM;
        const n = kind === 'frag'
          ? writeIcmpFragNeeded(g.slab, at, UDP, 0, UDP.length, ip('192.168.2.2'), 1480)
          : writeIcmpUnreachable(g.slab, at, UDP, 0, UDP.length, ip('192.168.2.2'), ICMP_PORT_UNREACH);
        g.offs[g.count] = at; g.lens[g.count] = n; g.count++;
      }
    });
    s.tun.next = deliver(1);
    s.tun.readable!();
    expect(Array.from(s.loop.icmpSent)).toEqual([2, 1, 0, 0]);
    expect(s.p.generated.count).toBe(0);
  });
});

describe('stats and /metrics below the pipeline', () => {
  const nativeStats = (o: Partial<PacketIoStats>): PacketIoStats => ({
    readPackets: 10, readBytes: 1000, readOversizeDrops: 0, readCalls: 5, readErrors: 0, lastReadErrno: 0,
    writePackets: 9, writeBytes: 900, writeBackpressureDrops: 0, writeErrors: 0, lastWriteErrno: 0, writeCalls: 4, ...o,
  });
  const sys: TunSysStats = { rxPackets: 9, txPackets: 10, rxDropped: 1, txDropped: 42, rxErrors: 0, txErrors: 0, txQueueLen: 500 };

  function io(): DataPathIo & { loop: BatchLoop } {
    const s = setup();
    s.loop.faults[FAULT_EXCEPTIONS] = 1; s.loop.faults[FAULT_PACKETS] = 7; s.loop.icmpSent[0] = 3;
    return {
      tun: { name: 'kt0', stats: () => nativeStats({ writeBackpressureDrops: 4, writeErrors: 2, lastWriteErrno: 22, readOversizeDrops: 1 }) },
      ipip: { stats: () => nativeStats({ readErrors: 6, lastReadErrno: 92 }) },
      loop: s.loop,
      tunSys: (name) => (name === 'kt0' ? sys : null),
    };
  }

  it('kube-tun stats: an io section (native counters, the TUN device\'s, drops by reason), ICMP sent apart from drops', () => {
    const p = pipeline();
    const out = daemonStats({
      node: 'worker-2', tun: 'kt0', startedAt: Date.now(), pipeline: p, eventListeners: 0,
      sync: { count: 1, lastSyncAt: Date.now(), compileMs: 1, pendingSince: 0, healthy: null },
      pcap: { enabled: false }, io: io(),
    }) as any;
    expect(out.drops).toEqual({ 'loop-exception': 7 });
    expect(out.icmpErrorsSent).toEqual({ 'frag-needed': 3, 'port-unreachable': 0, 'dest-unreachable': 0, other: 0 });
    expect(out.io.tunDevice).toEqual(sys);
    expect(out.io.drops).toEqual({
      tun_queue_full: 42, tun_rx_dropped: 1, tun_read_oversize: 1, tun_read_error: 0, tun_write_backpressure: 4, tun_write_error: 2,
      ipip_read_oversize: 0, ipip_read_error: 6, ipip_write_backpressure: 0, ipip_write_error: 0,
    });
    expect(out.io.tun.lastWriteErrno).toBe(22);
    expect(out.io.ipip.lastReadErrno).toBe(92);
    expect(out.io.loop).toEqual({ exceptions: 1, packetsLost: 7, ioErrors: 0, lastException: '' });
  });

  it('/metrics: kubetun_io_drops_total{reason}, kubetun_tun_queue_length, kubetun_icmp_errors_sent_total{type}; no reason="none"', async () => {
    const p = pipeline();
    p.drops[0] = 99; // 'none' must never show, even if counted
    const reg = createMetricsRegistry(pipelineMetricsSource(p, () => new SyncRecorder().snapshot(), io()), { processMetrics: false });
    const text = await reg.metrics();
    expect(text).not.toMatch(/reason="none"/);
    expect(text).toMatch(/^kubetun_drops_total\{reason="loop-exception"\} 7$/m);
    expect(text).toMatch(/^kubetun_drops_total\{reason="frag-needed-sent"\} 0$/m);
    for (const r of IO_DROP_REASONS) expect(text).toMatch(new RegExp(`^kubetun_io_drops_total\\{reason="${r}"\\} \\d+$`, 'm'));
    expect(text).toMatch(/^kubetun_io_drops_total\{reason="tun_queue_full"\} 42$/m);
    expect(text).toMatch(/^# TYPE kubetun_tun_queue_length gauge$/m);
    expect(text).toMatch(/^kubetun_tun_queue_length 500$/m);
    expect(text).toMatch(/^kubetun_icmp_errors_sent_total\{type="frag-needed"\} 3$/m);
    expect(text).toMatch(/^kubetun_io_last_errno\{fd="ipip",op="read"\} 92$/m);
    expect(text).toMatch(/^kubetun_loop_exceptions_total 1$/m);
  });
});
