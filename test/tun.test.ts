// The TUN addon against a real kernel, inside a network namespace this test creates (runs as root).
// A helper process (test/support/tun-child.ts) runs in the namespace and drives src/io/tun.ts;
// this file sends it requests and checks the bytes. All traffic stays inside the namespace: the only
// addresses used are the namespace's own 10.200.0.1 (on the TUN) and 10.200.0.2 (beyond the TUN,
// i.e. this test's helper reading the device).

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEADROOM, MAX_READ_PACKET, PacketBatch, SLOT_SIZE, TunDevice } from '../src/io';
import { claimPrefix } from '../scripts/lab';
import { checksum, ipv4, udp4, udpValid } from './support/packets';
import { Helper } from './support/tun-helper';

// Named like a lab (`<prefix>-<name>`) and registered like one (a pid file under STATE_DIR), so the
// stale-lab reaper (test/support/global-setup.ts) removes it if this run crashes before afterAll.
const PREFIX = `kt${randomBytes(4).toString('hex')}`;
const NS = `${PREFIX}-tun`;
const DEV = 'kttun0';
const LOCAL = 0x0ac80001; // 10.200.0.1, on the TUN inside the namespace
const PEER = 0x0ac80002; // 10.200.0.2, "the other side" of the TUN (our helper)

// ---------------------------------------------------------------- namespace + helper process

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

let helper: Helper | undefined;
let nsCreated = false;
let release = () => {};

beforeAll(async () => {
  release = claimPrefix(PREFIX);
  sh('ip', ['netns', 'add', NS]);
  nsCreated = true;
  // No IPv6 in the namespace: no router solicitations / MLD reports on the TUN to filter around.
  sh('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  sh('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
  sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  helper = new Helper(NS);
  const opened = await helper.call<{ name: string; fd: number }>('open', { name: DEV }, 60_000);
  expect(opened.name).toBe(DEV);
  sh('ip', ['-n', NS, 'addr', 'add', '10.200.0.1/24', 'dev', DEV]);
  sh('ip', ['-n', NS, 'link', 'set', DEV, 'up']);
});

afterAll(async () => {
  try {
    await helper?.stop();
  } finally {
    if (nsCreated) sh('ip', ['netns', 'del', NS]);
    release();
  }
});

function h(): Helper {
  if (helper === undefined) throw new Error('helper not started');
  return helper;
}

// ---------------------------------------------------------------- tests

describe('PacketBatch (no device)', () => {
  it('lays out capacity slots of SLOT_SIZE in one slab', () => {
    const b = new PacketBatch(8);
    expect(b.capacity).toBe(8);
    expect(b.slab.length).toBe(8 * SLOT_SIZE);
    expect(b.offs).toBeInstanceOf(Uint32Array);
    expect(b.lens.length).toBe(8);
    expect(b.count).toBe(0);
    expect(b.slotOffset(3)).toBe(3 * SLOT_SIZE + HEADROOM);
    expect(SLOT_SIZE).toBe(2048);
    expect(HEADROOM).toBe(64);
    const i = b.push(Buffer.from([0x45, 1, 2]));
    expect(i).toBe(0);
    expect(b.offs[0]).toBe(HEADROOM);
    expect([...b.packet(0)]).toEqual([0x45, 1, 2]);
    expect(() => new PacketBatch(0)).toThrow(RangeError);
  });

  it('loads the addon under vitest and reports syscall + errno in errors', () => {
    expect(() => TunDevice.open('x'.repeat(20))).toThrow(/^TUNSETIFF x{20}: Invalid argument$/);
  });
});

describe(`TunDevice in netns ${NS}`, () => {
  it('creates a plain TUN: no packet info, no vnet header', () => {
    const link = sh('ip', ['-n', NS, '-d', 'link', 'show', DEV]);
    expect(link).toMatch(/tun type tun pi off vnet_hdr off/);
  });

  it('throws an Error naming TUNSETIFF, the device and the errno text', async () => {
    const r = await h().call('openError', { name: 'lo' });
    expect(r).toMatchObject({ threw: true, message: 'TUNSETIFF lo: Invalid argument', code: 'EINVAL', syscall: 'TUNSETIFF' });
  });

  it('attaches to an existing persistent TUN device', async () => {
    sh('ip', ['-n', NS, 'tuntap', 'add', 'dev', 'ktpersist0', 'mode', 'tun']);
    try {
      expect(await h().call('openError', { name: 'ktpersist0' })).toEqual({ threw: false });
    } finally {
      sh('ip', ['-n', NS, 'tuntap', 'del', 'dev', 'ktpersist0', 'mode', 'tun']);
    }
  });

  it('reads queued packets in batches with one call, bytes intact', async () => {
    const N = 50;
    const PORT = 5555;
    // The helper is not reading: all 50 datagrams queue on the TUN before the first read.
    await h().call('udpSend', { address: '10.200.0.2', port: PORT, count: N, prefix: 'kt-udp-', size: 0 });
    const first = await h().call<{ count: number; batchCount: number; offs: number[]; packets: string[] }>('readOnce', {
      capacity: 16,
      proto: 17,
    });
    expect(first.count).toBeGreaterThan(1); // one read() call returned a batch ...
    expect(first.count).toBeLessThanOrEqual(16); // ... and stopped at the batch's capacity
    expect(first.batchCount).toBe(first.count);
    expect(first.offs).toEqual(first.offs.map((_, i) => i * SLOT_SIZE + HEADROOM));
    const rest = await h().call<{ packets: string[]; batches: number[]; callbacks: number }>('collect', {
      want: N - first.packets.length,
      timeoutMs: 5_000,
      proto: 17,
    });
    const all = [...first.packets, ...rest.packets].map((x) => Buffer.from(x, 'hex'));
    const seen = new Set<string>();
    for (const p of all) {
      expect(p[0]).toBe(0x45);
      expect(p.readUInt16BE(2)).toBe(p.length); // total length = what read() returned
      expect(p[9]).toBe(17);
      expect(p.readUInt32BE(12)).toBe(LOCAL);
      expect(p.readUInt32BE(16)).toBe(PEER);
      expect(checksum(p, 0, 20)).toBe(0); // header checksum complete (no offload)
      expect(p.readUInt16BE(22)).toBe(PORT);
      expect(udpValid(p)).toBe(true); // full UDP checksum, not a partial one
      seen.add(p.subarray(28).toString());
    }
    expect(all.length).toBe(N);
    expect(seen).toEqual(new Set(Array.from({ length: N }, (_, i) => `kt-udp-${i}`)));
  });

  it('delivers readiness through onReadable (uv_poll)', async () => {
    const pending = h().call<{ packets: string[]; callbacks: number; timedOut: boolean }>('collect', {
      want: 3,
      timeoutMs: 5_000,
      proto: 17,
    });
    await h().call('udpSend', { address: '10.200.0.2', port: 5556, count: 3, prefix: 'kt-poll-' });
    const r = await pending;
    expect(r.timedOut).toBe(false);
    expect(r.callbacks).toBeGreaterThanOrEqual(1);
    expect(r.packets.length).toBe(3);
  });

  it('writes a batch; a malformed packet is skipped and counted, not thrown', async () => {
    const PORT = 6000;
    await h().call('udpListen', { address: '10.200.0.1', port: PORT });
    const pkt = (s: string) => udp4(PEER, LOCAL, 40000, PORT, Buffer.from(s)).toString('hex');
    const garbage = Buffer.alloc(40, 0).toString('hex'); // version nibble 0: the TUN rejects it (EINVAL)
    const before = await h().call('stats', {});
    const w = await h().call<{ written: number; stats: Record<string, number> }>('write', {
      packets: [pkt('kt-w-0'), garbage, '', pkt('kt-w-1'), pkt('kt-w-2')],
    });
    expect(w.written).toBe(3);
    expect(w.stats.writeErrors - before.writeErrors).toBe(1);
    expect(w.stats.lastWriteErrno).toBe(22); // EINVAL
    expect(w.stats.writePackets - before.writePackets).toBe(3);
    const got = await h().call<{ msgs: { hex: string; from: string; port: number }[] }>('udpReceived', {
      port: PORT,
      want: 3,
      timeoutMs: 5_000,
    });
    expect(got.msgs.map((m) => Buffer.from(m.hex, 'hex').toString())).toEqual(['kt-w-0', 'kt-w-1', 'kt-w-2']);
    for (const m of got.msgs) expect([m.from, m.port]).toEqual(['10.200.0.2', 40000]);
  });

  it('discards (and counts) a packet larger than a slot instead of returning a truncated one', async () => {
    sh('ip', ['-n', NS, 'link', 'set', DEV, 'mtu', '4000']);
    try {
      const before = await h().call('stats', {});
      await h().call('udpSend', { address: '10.200.0.2', port: 5557, count: 1, prefix: 'kt-big-', size: 3000 });
      await h().call('udpSend', { address: '10.200.0.2', port: 5557, count: 1, prefix: 'kt-small-' });
      const r = await h().call<{ packets: string[] }>('collect', { want: 1, timeoutMs: 5_000, proto: 17 });
      expect(r.packets.map((x) => Buffer.from(x, 'hex').subarray(28).toString())).toEqual(['kt-small-0']);
      const after = await h().call('stats', {});
      expect(after.readOversizeDrops - before.readOversizeDrops).toBe(1);
      expect(MAX_READ_PACKET).toBe(SLOT_SIZE - HEADROOM - 1);
    } finally {
      sh('ip', ['-n', NS, 'link', 'set', DEV, 'mtu', '1500']);
    }
  });

  it('IpipSocket receives a whole IPIP packet (outer header included)', async () => {
    const inner = udp4(PEER, LOCAL, 40001, 7000, Buffer.from('kt-inner'));
    const outer = ipv4(PEER, LOCAL, 4, inner, 0x1111);

    // Without the raw socket, the kernel answers IPIP (it has no handler) with ICMP unreachable.
    const icmpBefore = h().call<{ packets: string[] }>('collect', { want: 1, timeoutMs: 2_000, proto: 1 });
    await h().call('write', { packets: [outer.toString('hex')] });
    const unreachBefore = (await icmpBefore).packets.map((x) => Buffer.from(x, 'hex'));
    const kernelHasNoIpipHandler = unreachBefore.some((p) => p[20] === 3 && p[21] === 2);

    await h().call('ipipOpen');
    const pending = h().call<{ packets: string[]; timedOut: boolean }>('collect', { dev: 'ipip', want: 1, timeoutMs: 5_000 });
    const icmpAfter = h().call<{ packets: string[] }>('collect', { want: 1, timeoutMs: 1_000, proto: 1 });
    const outer2 = ipv4(PEER, LOCAL, 4, inner, 0x2222);
    await h().call('write', { packets: [outer2.toString('hex')] });
    const r = await pending;
    expect(r.timedOut).toBe(false);
    expect(r.packets).toEqual([outer2.toString('hex')]);
    const protoUnreach = (await icmpAfter).packets.map((x) => Buffer.from(x, 'hex')).filter((p) => p[20] === 3 && p[21] === 2);
    if (kernelHasNoIpipHandler) expect(protoUnreach).toEqual([]);
  });

  it('close() is idempotent, stops the poller, removes the device and lets the process exit', async () => {
    await h().call('arm', { dev: 'tun' }); // a readiness callback left armed: close() must stop it
    await h().call('arm', { dev: 'ipip' });
    const c = await h().call<{ readAfterCloseThrew: boolean }>('close');
    expect(c.readAfterCloseThrew).toBe(true);
    expect(sh('ip', ['-n', NS, '-o', 'link', 'show'])).not.toContain(DEV); // non-persistent TUN goes with its fd
    // The helper never calls process.exit: it ends only when no handle keeps its loop alive.
    h().proc.stdin.end();
    const code = await Promise.race([h().exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    expect(code).toBe(0);
  });
});
