// Operating kube-tun (issue 6): metrics exposition, health endpoints, --ready-fd, pcap capture
// (read back with tshark), the daemon config file and flag precedence. No root needed.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
import { createMetricsServer, createMetricsRegistry, MetricsSource, SyncRecorder, ConntrackSnapshot } from '../src/ops/metrics';
import { batchSizeBucket } from '../src/datapath/batch-size';
import { createHealthServer, notifyReadyFd } from '../src/ops/health';
import { parseBindAddress } from '../src/ops/http';
import { PcapWriter, PcapTap, pcapControl, LINKTYPE_RAW, LINKTYPE_IPV4 } from '../src/io/pcap';
import { loadDaemonConfigFile, mergeFlags, explicitFlags, parseDuration, ConfigFileError } from '../src/cli/config-file';
import { buildPacket } from '../src/netstack/repr';
import { parseIp } from '../src/netstack/addr';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-ops-'));
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => { while (closers.length) await closers.pop()!(); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function hasTshark(): boolean {
  try { execFileSync('tshark', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}
const TSHARK = hasTshark();

async function get(port: number, p: string): Promise<{ status: number; body: string; type: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
}

// ---- metrics ---------------------------------------------------------------------------------

interface Sample { name: string; labels: Record<string, string>; value: number }
/** Prometheus text format 0.0.4: every non-comment line is `name{labels} value`. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [], types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# TYPE ')) { const [, , n, t] = line.split(' '); types.set(n, t); continue; }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/y;
      let at = 0;
      while (at < m[2].length) {
        re.lastIndex = at;
        const l = re.exec(m[2]);
        if (!l) throw new Error(`bad labels in: ${line}`);
        labels[l[1]] = l[2];
        at = re.lastIndex;
      }
    }
    // Go's ParseFloat (Prometheus' parser) takes NaN/Inf case-insensitively; prom-client prints "Nan".
    const v = m[3].toLowerCase();
    const value = v === '+inf' || v === 'inf' ? Infinity : v === '-inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && v !== 'nan') throw new Error(`bad value in: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { samples, types };
}
function val(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}

function fakeSource() {
  const counters = new Float64Array(16);
  const drops = new Float64Array(4);
  const hist = new Uint32Array(7); // sizes up to 64
  let batchCount = 0;
  const ct: ConntrackSnapshot = {
    entries: 3, max: 262144, byProtoState: { 'tcp/ESTABLISHED': 2, 'udp/UNREPLIED': 1 },
    inserts: 10, deletes: 7, expirations: 5, earlyDrops: 1, insertFailed: 0,
  };
  const sync = new SyncRecorder();
  let conntrackCalls = 0;
  const source: MetricsSource = {
    counters: () => counters,
    counterIndex: { rx_tun: 0, rx_ipip: 2, tx_local: 4, tx_ipip: 6, tx_generated: 8, dnat: 11, snat: 12, nat_clash: 13 },
    drops: () => drops,
    dropReasons: ['bad-checksum', 'ttl-exceeded', 'no-service', 'reason "with" quotes\\'],
    conntrack: () => { conntrackCalls++; return ct; },
    batches: () => ({ count: batchCount, sizeHistogram: hist }),
    sync: () => sync.snapshot(),
  };
  const batch = (n: number, bytes: number) => {
    counters[0] += n; counters[1] += bytes; hist[batchSizeBucket(n)]++; batchCount++;
  };
  return { source, counters, drops, ct, sync, batch, conntrackCalls: () => conntrackCalls };
}

describe('metrics', () => {
  it('batchSizeBucket puts n in (2^(i-1), 2^i]', () => {
    expect([1, 2, 3, 4, 5, 8, 9, 33, 64].map(batchSizeBucket)).toEqual([0, 1, 2, 2, 3, 3, 4, 6, 6]);
  });

  it('serves /metrics whose counters move with the source', async () => {
    const f = fakeSource();
    const srv = createMetricsServer({ bindAddress: '127.0.0.1:0', source: f.source });
    closers.push(() => srv.close());
    const { port } = await srv.listening;

    f.batch(3, 300); f.batch(64, 6400);
    f.counters[4] += 60; f.counters[5] += 6000; f.counters[11] = 4; f.counters[12] = 2; f.counters[13] = 1;
    f.drops[2] = 7;
    f.sync.record(0.0042, { endpoints: 3, services: 1 }, 1_700_000_000_000);

    const r1 = await get(port, '/metrics');
    expect(r1.status).toBe(200);
    expect(r1.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const a = parseExposition(r1.body);
    expect(a.types.get('kubetun_packets_total')).toBe('counter');
    expect(a.types.get('kubetun_bytes_total')).toBe('counter');
    expect(a.types.get('kubetun_drops_total')).toBe('counter');
    expect(a.types.get('kubetun_conntrack_entries')).toBe('gauge');
    expect(a.types.get('kubetun_conntrack_max')).toBe('gauge');
    expect(a.types.get('kubetun_batch_size')).toBe('histogram');
    expect(a.types.get('kubeproxy_sync_proxy_rules_duration_seconds')).toBe('histogram');
    expect(a.types.get('kubeproxy_sync_proxy_rules_last_timestamp_seconds')).toBe('gauge');
    for (const [n, t] of a.types) if (/^kube(tun|proxy)_.*_total$/.test(n)) expect(t, n).toBe('counter');
    for (const n of ['kubetun_conntrack_inserts_total', 'kubetun_conntrack_deletes_total', 'kubetun_conntrack_expirations_total',
      'kubetun_conntrack_early_drops_total', 'kubetun_conntrack_insert_failed_total', 'kubetun_nat_clashes_total',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total', 'kubeproxy_sync_proxy_rules_service_changes_total']) {
      expect(a.types.get(n), n).toBe('counter');
    }

    const s = a.samples;
    expect(val(s, 'kubetun_packets_total', { direction: 'rx_tun' })).toBe(67);
    expect(val(s, 'kubetun_bytes_total', { direction: 'rx_tun' })).toBe(6700);
    expect(val(s, 'kubetun_packets_total', { direction: 'tx_local' })).toBe(60);
    expect(val(s, 'kubetun_packets_total', { direction: 'tx_generated' })).toBe(0);
    expect(val(s, 'kubetun_drops_total', { reason: 'no-service' })).toBe(7);
    expect(val(s, 'kubetun_drops_total', { reason: 'bad-checksum' })).toBe(0); // every reason, zeros included
    expect(s.filter((x) => x.name === 'kubetun_drops_total')).toHaveLength(4);
    expect(r1.body).toContain('kubetun_drops_total{reason="reason \\"with\\" quotes\\\\"} 0');
    expect(val(s, 'kubetun_conntrack_entries', { proto: 'tcp', state: 'ESTABLISHED' })).toBe(2);
    expect(val(s, 'kubetun_conntrack_entries', { proto: 'udp', state: 'UNREPLIED' })).toBe(1);
    expect(val(s, 'kubetun_conntrack_max')).toBe(262144);
    expect(val(s, 'kubetun_conntrack_inserts_total')).toBe(10);
    expect(val(s, 'kubetun_conntrack_early_drops_total')).toBe(1);
    expect(val(s, 'kubetun_nat_allocations_total', { type: 'dnat' })).toBe(4);
    expect(val(s, 'kubetun_nat_allocations_total', { type: 'snat' })).toBe(2);
    expect(val(s, 'kubetun_nat_clashes_total')).toBe(1);
    // batch histogram: cumulative buckets, +Inf == _count, _sum == packets read
    expect(val(s, 'kubetun_batch_size_bucket', { le: '2' })).toBe(0);
    expect(val(s, 'kubetun_batch_size_bucket', { le: '4' })).toBe(1);
    expect(val(s, 'kubetun_batch_size_bucket', { le: '64' })).toBe(2);
    expect(val(s, 'kubetun_batch_size_bucket', { le: '+Inf' })).toBe(2);
    expect(val(s, 'kubetun_batch_size_count')).toBe(2);
    expect(val(s, 'kubetun_batch_size_sum')).toBe(67);
    // kube-proxy's sync metrics
    expect(val(s, 'kubeproxy_sync_proxy_rules_duration_seconds_count')).toBe(1);
    expect(val(s, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket', { le: '0.004' })).toBe(0);
    expect(val(s, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket', { le: '0.008' })).toBe(1);
    expect(val(s, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds')).toBe(1_700_000_000);
    expect(val(s, 'kubeproxy_sync_proxy_rules_endpoint_changes_total')).toBe(3);
    expect(val(s, 'kubeproxy_sync_proxy_rules_service_changes_total')).toBe(1);
    // process metrics are there too
    expect(a.types.has('process_cpu_seconds_total')).toBe(true);
    // the (costly) conntrack snapshot is taken once per scrape, not once per metric
    expect(f.conntrackCalls()).toBe(1);

    // The source moves; the next scrape shows it. Sync durations are observed once each.
    f.batch(10, 1000);
    f.drops[2] += 5;
    f.ct.byProtoState = { 'tcp/TIME_WAIT': 4 };
    const b = parseExposition((await get(port, '/metrics')).body).samples;
    expect(val(b, 'kubetun_packets_total', { direction: 'rx_tun' })).toBe(77);
    expect(val(b, 'kubetun_drops_total', { reason: 'no-service' })).toBe(12);
    expect(val(b, 'kubetun_batch_size_count')).toBe(3);
    expect(val(b, 'kubetun_batch_size_bucket', { le: '16' })).toBe(2);
    expect(val(b, 'kubetun_conntrack_entries', { proto: 'tcp', state: 'ESTABLISHED' })).toBeUndefined();
    expect(val(b, 'kubetun_conntrack_entries', { proto: 'tcp', state: 'TIME_WAIT' })).toBe(4);
    expect(val(b, 'kubeproxy_sync_proxy_rules_duration_seconds_count')).toBe(1);
    expect(f.conntrackCalls()).toBe(2);
    f.sync.record(0.5, { endpoints: 2 });
    const c = parseExposition((await get(port, '/metrics')).body).samples;
    expect(val(c, 'kubeproxy_sync_proxy_rules_duration_seconds_count')).toBe(2);
    expect(val(c, 'kubeproxy_sync_proxy_rules_duration_seconds_sum')).toBeCloseTo(0.5042, 6);
    expect(val(c, 'kubeproxy_sync_proxy_rules_endpoint_changes_total')).toBe(5);

    expect((await get(port, '/nope')).status).toBe(404);
  });

  it('counters missing from counterIndex are left out; the registry works without a server', async () => {
    const f = fakeSource();
    f.source.counterIndex = { rx_tun: 0 };
    const reg = createMetricsRegistry(f.source, { processMetrics: false });
    const { samples, types } = parseExposition(await reg.metrics());
    expect(samples.filter((x) => x.name === 'kubetun_packets_total').map((x) => x.labels.direction)).toEqual(['rx_tun']);
    expect(samples.some((x) => x.name === 'kubetun_nat_clashes_total')).toBe(false);
    expect(types.has('process_cpu_seconds_total')).toBe(false);
  });

  it('a bind failure rejects `listening`', async () => {
    const f = fakeSource();
    const a = createMetricsServer({ bindAddress: '127.0.0.1:0', source: f.source, processMetrics: false });
    closers.push(() => a.close());
    const { port } = await a.listening;
    const b = createMetricsServer({ bindAddress: `127.0.0.1:${port}`, source: f.source, processMetrics: false });
    closers.push(() => b.close());
    await expect(b.listening).rejects.toThrow(/EADDRINUSE/);
  });
});

// ---- health ----------------------------------------------------------------------------------

describe('health', () => {
  it('parses kube-proxy style bind addresses', () => {
    expect(parseBindAddress('127.0.0.1:10249')).toEqual({ host: '127.0.0.1', port: 10249 });
    expect(parseBindAddress(':10256')).toEqual({ host: '', port: 10256 });
    expect(parseBindAddress('[::1]:10256')).toEqual({ host: '::1', port: 10256 });
    expect(parseBindAddress('0.0.0.0', 10249)).toEqual({ host: '0.0.0.0', port: 10249 });
    expect(() => parseBindAddress('127.0.0.1:99999')).toThrow(/port/);
    expect(() => parseBindAddress('::1:80')).toThrow(/brackets/);
    expect(() => parseBindAddress('127.0.0.1')).toThrow(/missing port/);
  });

  it('/healthz goes 503 once the last sync is 2 sync periods old; /readyz follows ready()', async () => {
    let now = 1_700_000_000_000, lastSync = now, ready = false;
    const h = createHealthServer({ bindAddress: '127.0.0.1:0', lastSync: () => lastSync, syncPeriodMs: 30_000, ready: () => ready, now: () => now });
    closers.push(() => h.close());
    const { port } = await h.listening;

    let r = await get(port, '/healthz');
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    const body = JSON.parse(r.body);
    expect(body).toEqual({ lastUpdated: new Date(now).toISOString(), currentTime: new Date(now).toISOString(), nodeEligible: true });

    now += 59_999;
    expect((await get(port, '/healthz')).status).toBe(200);
    now += 1; // exactly 2 * syncPeriod
    r = await get(port, '/healthz');
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body).lastUpdated).toBe(new Date(lastSync).toISOString()); // the real one when unhealthy
    expect((await get(port, '/livez')).status).toBe(503);
    expect(h.healthy()).toBe(false);
    lastSync = now; // a sync happened
    expect((await get(port, '/healthz')).status).toBe(200);

    expect((await get(port, '/readyz')).status).toBe(503);
    ready = true;
    r = await get(port, '/readyz');
    expect(r.status).toBe(200);
    expect(r.body).toBe('ok\n');
    expect((await get(port, '/other')).status).toBe(404);
  });

  it("with pendingSince it is kube-proxy's rule: only an update pending for 2 periods is unhealthy", async () => {
    let now = 1_000_000, pending = 0, eligible = true;
    const h = createHealthServer({
      bindAddress: '127.0.0.1:0', lastSync: () => 1, syncPeriodMs: 1000, ready: () => true,
      pendingSince: () => pending, nodeEligible: () => eligible, now: () => now,
    });
    closers.push(() => h.close());
    const { port } = await h.listening;
    expect((await get(port, '/healthz')).status).toBe(200); // nothing pending: healthy however old the sync
    pending = now; now += 1999;
    expect((await get(port, '/healthz')).status).toBe(200); // pending, not late yet
    now += 1;
    expect((await get(port, '/healthz')).status).toBe(503);
    pending = 0;
    expect((await get(port, '/healthz')).status).toBe(200);
    eligible = false; // /healthz includes the node's eligibility, /livez does not
    const r = await get(port, '/healthz');
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body).nodeEligible).toBe(false);
    expect((await get(port, '/livez')).status).toBe(200);
  });

  it('notifyReadyFd writes READY=1 and closes the fd', () => {
    const file = path.join(tmp, 'ready');
    const fd = fs.openSync(file, 'w');
    notifyReadyFd(fd);
    expect(fs.readFileSync(file, 'utf8')).toBe('READY=1\n');
    expect(() => fs.fstatSync(fd)).toThrow(/EBADF/);
    expect(() => notifyReadyFd(fd)).toThrow(/--ready-fd \d+: cannot write: EBADF/);
  });
});

// ---- pcap ------------------------------------------------------------------------------------

const SLOT = 2048, HEAD = 64;
/** A PacketBatch-shaped object holding the given packets at slot*2048+64, like tun.ts lays them out. */
function batchOf(pkts: Buffer[]) {
  const slab = Buffer.alloc(Math.max(1, pkts.length) * SLOT);
  const offs = new Uint32Array(pkts.length), lens = new Uint32Array(pkts.length);
  pkts.forEach((p, i) => { offs[i] = i * SLOT + HEAD; lens[i] = p.length; p.copy(slab, offs[i]); });
  return { slab, offs, lens, count: pkts.length };
}
const ip = parseIp;
function tcp(src: string, dst: string, sport: number, dport: number, payload = 0): Buffer {
  return buildPacket({ src: ip(src), dst: ip(dst), tcp: { sport, dport, flags: 0x02, seq: 1, payload: Buffer.alloc(payload, 0x61) } });
}
function tshark(file: string, fields: string[]): string[][] {
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

describe('pcap', () => {
  const packets = () => [
    tcp('10.244.1.5', '10.96.0.10', 40000, 80),
    tcp('10.244.1.5', '10.244.2.7', 40001, 8080, 100),
    // IPIP: outer node-to-node header around a pod-to-pod TCP SYN
    buildPacket({ src: ip('192.168.56.11'), dst: ip('192.168.56.12'), proto: 4, payload: tcp('10.244.1.5', '10.244.2.7', 40002, 443) }),
    buildPacket({ src: ip('10.244.1.5'), dst: ip('10.96.0.53'), udp: { sport: 5353, dport: 53, payload: Buffer.from('x') } }),
  ];

  it.skipIf(!TSHARK).each([LINKTYPE_RAW, LINKTYPE_IPV4])('tshark reads the IPv4 packets (linktype %i), dropped ones skipped', (linktype) => {
    const file = path.join(tmp, `cap-${linktype}.pcap`);
    const w = new PcapWriter(file, { linktype });
    const b = batchOf(packets());
    b.lens[3] = 0; // dropped by the pipeline: not in the file
    const before = Date.now();
    w.writeBatch(b.slab, b.offs, b.lens, b.count);
    w.writeBatch(b.slab, b.offs, b.lens, 1); // a second batch
    w.close();
    expect(w.written).toBe(4);
    const hdr = fs.readFileSync(file).subarray(0, 24);
    expect(hdr.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect([hdr.readUInt16LE(4), hdr.readUInt16LE(6)]).toEqual([2, 4]);
    expect(hdr.readUInt32LE(20)).toBe(linktype);

    const rows = tshark(file, ['ip.src', 'ip.dst', 'tcp.dstport', 'frame.time_epoch', 'frame.len', 'ip.proto']);
    expect(rows.map((r) => r.slice(0, 3))).toEqual([
      ['10.244.1.5', '10.96.0.10', '80'],
      ['10.244.1.5', '10.244.2.7', '8080'],
      ['192.168.56.11,10.244.1.5', '192.168.56.12,10.244.2.7', '443'],
      ['10.244.1.5', '10.96.0.10', '80'],
    ]);
    expect(rows[2][5]).toBe('4,6');
    expect(Number(rows[1][4])).toBe(40 + 100);
    for (const r of rows) {
      const t = Number(r[3]) * 1000;
      expect(t).toBeGreaterThanOrEqual(before - 1);
      expect(t).toBeLessThanOrEqual(Date.now() + 1);
    }
    // all packets of one batch carry the same timestamp
    expect(new Set(rows.slice(0, 3).map((r) => r[3])).size).toBe(1);
  });

  it('stops after maxPackets and truncates to snaplen', () => {
    const file = path.join(tmp, 'max.pcap');
    const w = new PcapWriter(file, { maxPackets: 3, snaplen: 60 });
    const b = batchOf([...packets(), ...packets()]);
    w.writeBatch(b.slab, b.offs, b.lens, 2);
    expect(w.written).toBe(2);
    w.writeBatch(b.slab, b.offs, b.lens, b.count);
    expect(w.written).toBe(3);
    expect(w.closed).toBe(true);
    w.writeBatch(b.slab, b.offs, b.lens, b.count); // no-op
    expect(w.written).toBe(3);
    const buf = fs.readFileSync(file);
    // 24 + (16+40) + (16+60 of 140) + (16+40)
    expect(buf.length).toBe(24 + 56 + 76 + 56);
    expect(buf.readUInt32LE(24 + 56 + 8)).toBe(60);  // incl_len
    expect(buf.readUInt32LE(24 + 56 + 12)).toBe(140); // orig_len
    if (TSHARK) expect(tshark(file, ['tcp.dstport']).map((r) => r[0])).toEqual(['80', '8080', '80']);
  });

  it('grows its staging buffer for a batch larger than 64 KiB', () => {
    const file = path.join(tmp, 'big.pcap');
    const w = new PcapWriter(file);
    const big = Array.from({ length: 64 }, (_, i) => tcp('10.0.0.1', '10.0.0.2', 1000 + i, 80, 1400));
    const b = batchOf(big);
    w.writeBatch(b.slab, b.offs, b.lens, b.count);
    w.close();
    expect(fs.statSync(file).size).toBe(24 + 64 * (16 + 1440));
  });

  it('PcapTap: no-op when disabled, ingress/egress when enabled, toggled by pcapControl, stops at maxPackets', () => {
    const stops: unknown[] = [];
    const tap = new PcapTap({ onStop: (s) => stops.push(s) });
    const b = batchOf(packets());
    tap.ingress(b); tap.egress(b); // disabled: nothing
    expect(tap.enabled).toBe(false);
    expect(JSON.parse(pcapControl(tap, {}))).toEqual({ enabled: false });

    const file = path.join(tmp, 'tap.pcap');
    expect(JSON.parse(pcapControl(tap, { action: 'start', file, maxPackets: 6 }))).toMatchObject({ enabled: true, file, written: 0, maxPackets: 6 });
    tap.ingress(b);
    expect(tap.status().written).toBe(4);
    tap.egress(b); // only 2 more fit
    expect(tap.enabled).toBe(false);
    expect(stops).toEqual([{ enabled: false, file, written: 6, maxPackets: 6, stopped: 'maxPackets reached' }]);
    expect(JSON.parse(pcapControl(tap, { action: 'status' }))).toMatchObject({ enabled: false, written: 6, stopped: 'maxPackets reached' });
    if (TSHARK) expect(tshark(file, ['ip.dst'])).toHaveLength(6);

    pcapControl(tap, { action: 'start', file: path.join(tmp, 'tap2.pcap') });
    tap.ingress(b);
    expect(JSON.parse(pcapControl(tap, { action: 'stop' }))).toMatchObject({ enabled: false, written: 4, stopped: 'disabled' });
    expect(() => pcapControl(tap, { action: 'start' })).toThrow(/file/);
    expect(() => pcapControl(tap, { action: 'start', file, maxPackets: -1 })).toThrow(/maxPackets/);
    expect(() => pcapControl(tap, { action: 'rewind' })).toThrow(/unknown action/);
    expect(() => tap.enable(path.join(tmp, 'no', 'such', 'dir.pcap'))).toThrow(/ENOENT/);
  });
});

// ---- config file -----------------------------------------------------------------------------

describe('daemon config file', () => {
  const write = (name: string, text: string) => { const f = path.join(tmp, name); fs.writeFileSync(f, text); return f; };
  const HEAD_YAML = 'apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunDaemonConfiguration\n';

  it('loads every key, resolving relative paths against the file', () => {
    const f = write('daemon.yaml', HEAD_YAML + [
      'hostnameOverride: worker-1', 'tun: kt1', 'ctMax: 4096', 'clusterCIDR: 10.244.0.0/16', 'masqueradeAll: true',
      'nodeIPs: [192.168.56.11]', 'metricsBindAddress: 0.0.0.0:10249', 'healthzBindAddress: ""', 'syncPeriod: 1m30s',
      'logLevel: debug', 'controlSocket: run/kt1.sock', 'pcap: /var/tmp/kt1.pcap', 'pcapMaxPackets: 1000',
      'config:', '  - cluster.yaml', '  - /etc/kube-tun/more.yaml', 'rules: dump.txt', 'watch: false', 'keepRouting: true',
    ].join('\n') + '\n');
    expect(loadDaemonConfigFile(f)).toEqual({
      hostnameOverride: 'worker-1', tun: 'kt1', ctMax: 4096, clusterCIDR: '10.244.0.0/16', masqueradeAll: true,
      nodeIPs: ['192.168.56.11'], metricsBindAddress: '0.0.0.0:10249', healthzBindAddress: '', syncPeriod: '1m30s',
      logLevel: 'debug', controlSocket: path.join(tmp, 'run/kt1.sock'), pcap: '/var/tmp/kt1.pcap', pcapMaxPackets: 1000,
      config: [path.join(tmp, 'cluster.yaml'), '/etc/kube-tun/more.yaml'], rules: path.join(tmp, 'dump.txt'),
      watch: false, keepRouting: true,
    });
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('500ms')).toBe(500);
  });

  it('an unknown key is an error naming the key, the file and the line, with a suggestion', () => {
    const f = write('daemon.yaml', HEAD_YAML + 'tun: kt0\nmetricsBindAdress: 127.0.0.1:10249\n');
    expect(() => loadDaemonConfigFile(f)).toThrow(ConfigFileError);
    expect(() => loadDaemonConfigFile(f)).toThrow(`${f}:4: unknown key "metricsBindAdress" (did you mean "metricsBindAddress"?)`);
    const g = write('flagstyle.yaml', HEAD_YAML + 'ct-max: 10\n');
    expect(() => loadDaemonConfigFile(g)).toThrow('unknown key "ct-max" (did you mean "ctMax"?)');
    const h = write('nohint.yaml', HEAD_YAML + 'proxyMode: iptables\n');
    expect(() => loadDaemonConfigFile(h)).toThrow(/unknown key "proxyMode"$/);
  });

  it('a wrong type names the key', () => {
    const cases: [string, RegExp][] = [
      ['ctMax: lots', /:3: ctMax: expected an integer, got the string "lots"/],
      ['ctMax: 8', /ctMax: expected an integer 16-16777216, got 8/],
      ['masqueradeAll: "yes"', /masqueradeAll: expected true or false/],
      ['config: 3', /config: expected a list of file paths/],
      ['metricsBindAddress: 127.0.0.1:http', /metricsBindAddress: bind address "127.0.0.1:http": port must be 0-65535/],
      ['clusterCIDR: 10.244.0.0', /clusterCIDR: "10.244.0.0" is not an IPv4 CIDR/],
      ['clusterCIDR: fd00::/8', /clusterCIDR: "fd00::\/8" is not an IPv4 CIDR/],
      // ipaddr.js alone would take these: the config's one grammar is four decimal parts.
      ['nodeIPs: ["10.1"]', /nodeIPs: "10.1" is not an IPv4 address/],
      ['nodeIPs: [0x0a.0.0.1]', /nodeIPs: "0x0a.0.0.1" is not an IPv4 address/],
      ['nodeIPs: ["::1"]', /nodeIPs: "::1" is not an IPv4 address/],
      ['logLevel: loud', /logLevel: expected one of fatal, error, warn, info, debug, trace, silent/],
      ['tun: this-name-is-too-long', /tun: "this-name-is-too-long" is not a valid interface name/],
      ['syncPeriod: 30', /syncPeriod: expected a duration/],
    ];
    for (const [line, re] of cases) {
      const f = write('bad.yaml', HEAD_YAML + line + '\n');
      expect(() => loadDaemonConfigFile(f), line).toThrow(re);
    }
  });

  it('checks kind, apiVersion, document count and YAML syntax', () => {
    expect(() => loadDaemonConfigFile(write('k.yaml', 'apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunConfiguration\nclusterCIDR: 10.0.0.0/8\n')))
      .toThrow(/kind must be "KubeTunDaemonConfiguration", got "KubeTunConfiguration" \(that is a cluster document: pass it with --config\)/);
    expect(() => loadDaemonConfigFile(write('a.yaml', 'apiVersion: v1\nkind: KubeTunDaemonConfiguration\n'))).toThrow(/apiVersion must be "kubetun.dev\/v1alpha1", got "v1"/);
    expect(() => loadDaemonConfigFile(write('two.yaml', HEAD_YAML + '---\n' + HEAD_YAML))).toThrow(/expected one KubeTunDaemonConfiguration document, found 2/);
    expect(() => loadDaemonConfigFile(write('dup.yaml', HEAD_YAML + 'tun: a\ntun: b\n'))).toThrow(/dup\.yaml:4: Map keys must be unique/);
    expect(() => loadDaemonConfigFile(write('empty.yaml', '# nothing\n'))).toThrow(/empty/);
    expect(() => loadDaemonConfigFile(path.join(tmp, 'missing.yaml'))).toThrow(/missing\.yaml: cannot read: ENOENT/);
  });

  it('flags win over the file; parseArgs defaults do not count as given', () => {
    const file = loadDaemonConfigFile(write('d.yaml', HEAD_YAML +
      'hostnameOverride: from-file\ntun: kt9\nctMax: 4096\nlogLevel: debug\nwatch: false\nconfig: [a.yaml, b.yaml]\nmetricsBindAddress: 0.0.0.0:10249\n'));
    const OPTIONS = {
      config: { type: 'string', multiple: true }, 'hostname-override': { type: 'string' }, node: { type: 'string' },
      tun: { type: 'string', default: 'kt0' }, 'ct-max': { type: 'string' }, 'log-level': { type: 'string', default: 'info' },
      'no-watch': { type: 'boolean' }, 'metrics-bind-address': { type: 'string' },
    } as const;
    const args = ['--ct-max', '8192', '--config', 'flag.yaml', '--node', 'from-flag'];
    const { values, tokens } = parseArgs({ args, options: OPTIONS, tokens: true, strict: true });
    const merged = mergeFlags(file, values, explicitFlags(tokens));
    expect(merged).toEqual({
      'ct-max': '8192',                  // flag
      config: ['flag.yaml'],             // flag list replaces the file's list
      node: 'from-flag',                 // --node is --hostname-override: the file's hostnameOverride is not used
      tun: 'kt9',                        // file (the flag only had its default)
      'log-level': 'debug',              // file
      'no-watch': true,                  // file's watch: false
      'metrics-bind-address': '0.0.0.0:10249',
    });
    expect(values.tun).toBe('kt0'); // not mutated
    // without the explicit set, any defined value counts as given
    expect(mergeFlags(file, { tun: 'kt0' }).tun).toBe('kt0');
    expect(mergeFlags(file, {})['hostname-override']).toBe('from-file');
    expect(mergeFlags(file, {})['ct-max']).toBe('4096');
    // and the explicit --tun kt0 beats the file's kt9
    const again = parseArgs({ args: ['--tun', 'kt0'], options: OPTIONS, tokens: true, strict: true });
    expect(mergeFlags(file, again.values, explicitFlags(again.tokens)).tun).toBe('kt0');
  });
});
