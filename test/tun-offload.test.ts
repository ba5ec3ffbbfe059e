// TUN offloads (IFF_VNET_HDR + TUNSETOFFLOAD), their fallbacks, and the I/O counters, against a real
// kernel in two network namespaces this test creates (runs as root).
//
// Topology: the helper (test/support/tun-child.ts) runs in NS_A and opens TUN pairs there; the
// second TUN of each pair is then moved to NS_B (its fd stays with the helper). The helper forwards
// every packet read from one TUN into the other unchanged, vnet header included, so a TCP
// connection from NS_A (10.201.x.1) to a server in NS_B (10.201.x.2) crosses userspace twice per
// segment. With TSO the kernel hands over GSO super-packets; written back with their header it
// segments (or delivers) them itself. All traffic stays inside NS_A/NS_B.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HEADROOM,
  OFFLOAD_SLOT_SIZE,
  PacketBatch,
  SLOT_SIZE,
  TUN_F,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VNET,
  ioDropCounts,
  offloadNames,
  tunSysStats,
} from '../src/io';
import { tcpSinkSource } from '../scripts/bench-io';
import { ipv4, udp4, udpValid } from './support/packets';
import { Helper } from './support/tun-helper';
import { claimPrefix } from '../scripts/lab';

const TAG = randomBytes(3).toString('hex');
const NS_A = `kt${TAG}-offa`;
const NS_B = `kt${TAG}-offb`;
const SERVER_PORT = 7100;
const SEED = Number(process.env.KT_SEED ?? 0x5eed1234);
const TRANSFER = 16 * 1024 * 1024;
console.log(`tun-offload: namespaces ${NS_A} ${NS_B}, pattern seed ${SEED} (KT_SEED to repeat)`);

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

function ns(n: string, ...args: string[]): string {
  return sh('ip', ['netns', 'exec', n, ...args]);
}

/** The same xorshift32 stream tun-child's tcpSend sends, hashed here independently. */
function patternSha(seed: number, total: number): string {
  const h = createHash('sha256');
  let x = seed >>> 0 || 1;
  const chunk = Buffer.alloc(65536);
  for (let sent = 0; sent < total; sent += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      chunk.writeUInt32LE(x >>> 0, i);
    }
    h.update(chunk.subarray(0, Math.min(chunk.length, total - sent)));
  }
  return h.digest('hex');
}

let helper: Helper | undefined;
let server: ChildProcess | undefined;
const created: string[] = [];
let release = () => {};

beforeAll(async () => {
  release = claimPrefix(`kt${TAG}`); // the stale-lab collector removes kt<TAG>-* if this run dies
  for (const n of [NS_A, NS_B]) {
    sh('ip', ['netns', 'add', n]);
    created.push(n);
    ns(n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    ns(n, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  }
  helper = new Helper(NS_A);
  server = spawn('ip', ['netns', 'exec', NS_B, process.execPath, '-e', tcpSinkSource(SERVER_PORT)], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('server did not start')), 30_000);
    readline.createInterface({ input: server!.stdout! }).once('line', () => (clearTimeout(t), resolve()));
  });
});

afterAll(async () => {
  try {
    server?.stdin?.end();
    await helper?.stop();
  } finally {
    for (const n of created) sh('ip', ['netns', 'del', n]);
    release();
  }
});

function h(): Helper {
  if (helper === undefined) throw new Error('helper not started');
  return helper;
}

interface Opened {
  name: string;
  vnetHdr: boolean;
  offload: number;
  offloadRequested: number;
  vnetRefused: string | null;
}

/** Opens TUN pair `ka`/`kb` (devices kto<ka>0 / kto<kb>0), moves kb to NS_B, addresses 10.201.<net>.1/.2, forwards. */
async function pair(ka: string, kb: string, net: number, opts: { vnetHdr?: boolean; offload?: boolean }) {
  const a = await h().call<Opened>('openTun', { key: ka, name: `kto${ka}0`, ...opts });
  const b = await h().call<Opened>('openTun', { key: kb, name: `kto${kb}0`, ...opts });
  sh('ip', ['-n', NS_A, 'link', 'set', b.name, 'netns', NS_B]);
  sh('ip', ['-n', NS_A, 'addr', 'add', `10.201.${net}.1/24`, 'dev', a.name]);
  sh('ip', ['-n', NS_B, 'addr', 'add', `10.201.${net}.2/24`, 'dev', b.name]);
  sh('ip', ['-n', NS_A, 'link', 'set', a.name, 'up']);
  sh('ip', ['-n', NS_B, 'link', 'set', b.name, 'up']);
  await h().call('forward', { a: ka, b: kb });
  return { a, b };
}

interface Seen {
  packets: number;
  maxLen: number;
  superPackets: number;
  gso: Record<string, number>;
  maxGsoSize: number;
  needsCsum: number;
  firstSuper: { len: number; gsoType: number; gsoSize: number; hdrLen: number; csumStart: number; csumOffset: number } | null;
}

async function transfer(net: number): Promise<{ ms: number }> {
  const r = await h().call<{ sha256: string; reply: string; ms: number }>(
    'tcpSend',
    { address: `10.201.${net}.2`, port: SERVER_PORT, bytes: TRANSFER, seed: SEED, timeoutMs: 60_000 },
    70_000,
  );
  const want = patternSha(SEED, TRANSFER);
  expect(r.sha256).toBe(want);
  expect(r.reply).toBe(`${want} ${TRANSFER}`);
  return r;
}

describe('PacketBatch slot size (no device)', () => {
  it('keeps 2048-byte slots by default and takes a per-batch slot size for super-packets', () => {
    const plain = new PacketBatch(4);
    expect(plain.slotSize).toBe(SLOT_SIZE);
    expect(plain.slab.length).toBe(4 * SLOT_SIZE);
    expect(plain.vnet.length).toBe(4 * VNET.FIELDS);
    const big = new PacketBatch(4, OFFLOAD_SLOT_SIZE);
    expect(big.slab.length).toBe(4 * OFFLOAD_SLOT_SIZE);
    expect(big.slotOffset(2)).toBe(2 * OFFLOAD_SLOT_SIZE + HEADROOM);
    expect(big.maxPacket).toBeGreaterThanOrEqual(65535); // the largest IPv4 packet fits
    big.vnet.fill(7);
    big.push(Buffer.alloc(60000, 0x45));
    expect([...big.vnet.subarray(0, VNET.FIELDS)]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => new PacketBatch(1, HEADROOM)).toThrow(RangeError);
    expect(offloadNames(TUN_F.CSUM | TUN_F.TSO4 | TUN_F.USO6)).toEqual(['CSUM', 'TSO4', 'USO6']);
  });

  it('folds native and sysfs counters into drop reasons; a missing device reads as null', () => {
    expect(tunSysStats('kt-no-such-dev0')).toBeNull();
    expect(tunSysStats('../etc')).toBeNull();
    const d = ioDropCounts({ tunSys: { rxPackets: 0, txPackets: 0, rxDropped: 2, txDropped: 5, rxErrors: 0, txErrors: 0, txQueueLen: 500 } });
    expect(d.tun_queue_full).toBe(5);
    expect(d.tun_rx_dropped).toBe(2);
    expect(d.ipip_write_error).toBe(0);
  });
});

describe(`TUN offloads in ${NS_A} / ${NS_B}`, () => {
  it('vnet header + TSO: a TCP transfer is read as GSO super-packets and completes when written back unchanged', async () => {
    const { a, b } = await pair('a', 'b', 1, { vnetHdr: true });
    console.log(`offloads in effect: ${offloadNames(a.offload).join('|')} (asked ${offloadNames(a.offloadRequested).join('|')})`);
    for (const t of [a, b]) {
      expect(t.vnetHdr).toBe(true);
      expect(t.vnetRefused).toBeNull();
      expect(t.offload & (TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6)).toBe(TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6);
    }
    expect(sh('ip', ['-n', NS_A, '-d', 'link', 'show', a.name])).toMatch(/vnet_hdr on/);
    const r = await transfer(1);
    const seen = await h().call<Seen>('forwardStats', { a: 'a' });
    console.log(`TSO transfer: ${TRANSFER} B in ${r.ms} ms; A->B ${seen.packets} packets, ${seen.superPackets} super, max ${seen.maxLen} B, gso ${JSON.stringify(seen.gso)}`);
    expect(seen.superPackets).toBeGreaterThan(0);
    expect(seen.maxLen).toBeGreaterThan(1500);
    expect(seen.gso[String(VIRTIO_NET_HDR_GSO_TCPV4)]).toBeGreaterThan(0);
    const s = seen.firstSuper!;
    expect(s.gsoType & 0x7f).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
    expect(s.gsoSize).toBeGreaterThan(0);
    expect(s.gsoSize).toBeLessThanOrEqual(1500 - 40);
    expect(s.csumStart).toBe(20); // checksum left to finish from the TCP header on (NEEDS_CSUM)
    expect(s.csumOffset).toBe(16);
    expect(s.hdrLen).toBeGreaterThanOrEqual(40);
    expect(seen.needsCsum).toBeGreaterThan(0);
    const stats = await h().call('stats', { key: 'b' });
    expect(stats.writePackets).toBeGreaterThanOrEqual(seen.packets); // everything A->B went out ...
    expect(stats.writeErrors).toBe(0); // ... and the kernel accepted every vnet header we handed back
    expect(stats.writeCalls).toBeGreaterThan(0);
  });

  it('vnet header with offloads off: plain packets (no GSO, no partial checksums), transfer completes', async () => {
    const { a } = await pair('c', 'd', 2, { vnetHdr: true, offload: false });
    expect(a.vnetHdr).toBe(true);
    expect(a.offload).toBe(0);
    await transfer(2);
    const seen = await h().call<Seen>('forwardStats', { a: 'c' });
    expect(seen.packets).toBeGreaterThan(0);
    expect(seen.maxLen).toBeLessThanOrEqual(1500);
    expect(seen.superPackets).toBe(0);
    expect(Object.keys(seen.gso)).toEqual(['0']);
    expect(seen.needsCsum).toBe(0);
  });

  it('plain TUN (no vnet header), as today: MTU-sized packets, transfer completes', async () => {
    const { a } = await pair('e', 'f', 3, {});
    expect(a.vnetHdr).toBe(false);
    expect(a.offload).toBe(0);
    expect(sh('ip', ['-n', NS_A, '-d', 'link', 'show', a.name])).toMatch(/vnet_hdr off/);
    await transfer(3);
    const seen = await h().call<Seen>('forwardStats', { a: 'e' });
    expect(seen.maxLen).toBeLessThanOrEqual(1500);
    expect(seen.superPackets).toBe(0);
  });

  it('asking for the vnet header does not hide a real open error', async () => {
    const r = await h().call('openError', { name: 'lo', vnetHdr: true });
    expect(r).toMatchObject({ threw: true, message: 'TUNSETIFF lo: Invalid argument', code: 'EINVAL' });
  });

  it('a persistent TUN left with offloads by its previous owner is reset to plain: full checksums', async () => {
    const dev = 'ktop0';
    sh('ip', ['-n', NS_A, 'tuntap', 'add', 'dev', dev, 'mode', 'tun']);
    try {
      const first = await h().call<Opened>('openTun', { key: 'p', name: dev, vnetHdr: true });
      expect(first.offload & TUN_F.CSUM).toBe(TUN_F.CSUM);
      await h().call('closeTun', { key: 'p' });
      const again = await h().call<Opened>('openTun', { key: 'p', name: dev });
      expect([again.vnetHdr, again.offload]).toEqual([false, 0]);
      sh('ip', ['-n', NS_A, 'addr', 'add', '10.201.9.1/24', 'dev', dev]);
      sh('ip', ['-n', NS_A, 'link', 'set', dev, 'up']);
      await h().call('udpSend', { address: '10.201.9.2', port: 5600, count: 3, prefix: 'kt-persist-', size: 1200 });
      const r = await h().call<{ packets: string[] }>('collect', { dev: 'p', want: 3, timeoutMs: 5_000, proto: 17 });
      expect(r.packets.length).toBe(3);
      for (const x of r.packets) expect(udpValid(Buffer.from(x, 'hex'))).toBe(true);
    } finally {
      await h().call('closeTun', { key: 'p' }).catch(() => undefined);
      sh('ip', ['-n', NS_A, 'tuntap', 'del', 'dev', dev, 'mode', 'tun']);
    }
  });
});

describe(`I/O counters in ${NS_A}`, () => {
  const LOCAL = 0x0ac90801; // 10.201.8.1 on ktoq0
  const PEER = 0x0ac90802; // 10.201.8.2 beyond it

  beforeAll(async () => {
    await h().call<Opened>('openTun', { key: 'q', name: 'ktoq0' });
    sh('ip', ['-n', NS_A, 'addr', 'add', '10.201.8.1/24', 'dev', 'ktoq0']);
    sh('ip', ['-n', NS_A, 'link', 'set', 'ktoq0', 'up']);
    await h().call('ipipOpen');
  });

  it('the raw IPIP socket reads a queued batch with one recvmmsg', async () => {
    const N = 20;
    const outer = Array.from({ length: N }, (_, i) =>
      ipv4(PEER, LOCAL, 4, udp4(PEER, LOCAL, 40000, 7000 + i, Buffer.from(`kt-mmsg-${i}`)), 0x3000 + i).toString('hex'),
    );
    const w = await h().call<{ written: number }>('write', { dev: 'q', packets: outer });
    expect(w.written).toBe(N);
    const before = await h().call('stats', { dev: 'ipip' });
    const r = await h().call<{ count: number; packets: string[]; stats: Record<string, number> }>('readOnce', { dev: 'ipip', capacity: 64 });
    expect(r.count).toBe(N);
    expect(r.packets).toEqual(outer);
    expect(r.stats.readCalls - before.readCalls).toBe(1);
    expect(r.stats.readPackets - before.readPackets).toBe(N);
  });

  it('the raw IPIP socket discards (and counts) a datagram larger than a slot, keeps the next one', async () => {
    const big = ipv4(PEER, LOCAL, 4, udp4(PEER, LOCAL, 40000, 7500, Buffer.alloc(3000, 0x62)), 0x3500).toString('hex');
    const small = ipv4(PEER, LOCAL, 4, udp4(PEER, LOCAL, 40000, 7501, Buffer.from('kt-small')), 0x3501).toString('hex');
    expect((await h().call<{ written: number }>('write', { dev: 'q', packets: [big, small] })).written).toBe(2);
    const before = await h().call('stats', { dev: 'ipip' });
    const r = await h().call<{ count: number; packets: string[]; stats: Record<string, number> }>('readOnce', { dev: 'ipip', capacity: 8 });
    expect(r.packets).toEqual([small]);
    expect(r.stats.readOversizeDrops - before.readOversizeDrops).toBe(1);
  });

  it('the raw IPIP socket writes whole outer packets with one sendmmsg, each to its own destination', async () => {
    const outer = [0, 1, 2].map((i) =>
      ipv4(LOCAL, PEER, 4, udp4(LOCAL, PEER, 41000, 8000 + i, Buffer.from(`kt-send-${i}`)), 0x4000 + i).toString('hex'),
    );
    const pending = h().call<{ packets: string[] }>('collect', { dev: 'q', want: 3, timeoutMs: 5_000, proto: 4 });
    const w = await h().call<{ written: number; stats: Record<string, number> }>('ipipWrite', { packets: outer });
    expect(w.written).toBe(3);
    expect(w.stats.writeCalls).toBe(1);
    expect((await pending).packets).toEqual(outer);
  });

  it('a full TUN read queue shows up as tx_dropped in sysfs (tun_queue_full)', async () => {
    sh('ip', ['-n', NS_A, 'link', 'set', 'ktoq0', 'txqueuelen', '8']);
    const before = await h().call('sysStats', { name: 'ktoq0' });
    expect(before.txQueueLen).toBe(8);
    // Nobody reads ktoq0 now: the first 8 datagrams queue, the rest are dropped by the kernel.
    await h().call('udpSend', { address: '10.201.8.2', port: 5700, count: 100, prefix: 'kt-full-' });
    const after = await h().call('sysStats', { name: 'ktoq0' });
    expect(after.txDropped - before.txDropped).toBeGreaterThanOrEqual(50);
    const drops = ioDropCounts({ tunSys: after, tun: await h().call('stats', { dev: 'q' }) });
    expect(drops.tun_queue_full).toBe(after.txDropped);
  });
});
