// Test helper for test/tun.test.ts: runs INSIDE a network namespace (`ip netns exec NS node -r
// ts-node/register/transpile-only test/support/tun-child.ts`) and drives src/io/tun.ts there.
// Protocol: one JSON request per stdin line {id, op, ...}; one JSON reply per stdout line
// {id, ok, result | error}. Requests are handled concurrently (a 'collect' can wait while a later
// 'write' runs). Every wait is bounded by its timeoutMs. When stdin ends the helper closes what it
// opened and lets the event loop drain: it never calls process.exit, so a leaked poller or socket
// shows up as a child that does not exit.

import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as readline from 'node:readline';
import { HEADROOM, IpipSocket, OFFLOAD_SLOT_SIZE, PacketBatch, SLOT_SIZE, TunDevice, VNET, tunSysStats } from '../../src/io';

type Dev = TunDevice | IpipSocket;

let tun: TunDevice | null = null;
let ipip: IpipSocket | null = null;
const keyed = new Map<string, TunDevice>(); // TUNs opened by 'openTun' (offload tests), by key
const forwards: Forward[] = [];
const udp = new Map<number, { sock: dgram.Socket; msgs: { hex: string; from: string; port: number }[] }>();

function dev(which: unknown): Dev {
  const k = keyed.get(String(which));
  if (k !== undefined) return k;
  const d = which === 'ipip' ? ipip : tun;
  if (d === null) throw new Error(`${String(which ?? 'tun')} is not open`);
  return d;
}

function packetsOf(batch: PacketBatch, n: number, proto: number | undefined, out: string[]): void {
  for (let i = 0; i < n; i++) {
    const p = batch.packet(i);
    if (proto === undefined || (p.length >= 20 && p[0] >> 4 === 4 && p[9] === proto)) out.push(p.toString('hex'));
  }
}

/** Waits for readiness via onReadable and drains; resolves after `want` matching packets or timeoutMs. */
function collect(d: Dev, want: number, timeoutMs: number, proto: number | undefined) {
  const batch = new PacketBatch(64);
  const batches: number[] = [];
  const packets: string[] = [];
  let callbacks = 0;
  return new Promise<{ batches: number[]; packets: string[]; callbacks: number; timedOut: boolean }>((resolve) => {
    let done = false;
    const finish = (timedOut: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      d.offReadable();
      resolve({ batches, packets, callbacks, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    if (want <= 0) {
      finish(false);
      return;
    }
    d.onReadable(() => {
      callbacks++;
      for (let k = 0; k < 1000; k++) {
        const n = d.read(batch);
        if (n === 0) break;
        batches.push(n);
        packetsOf(batch, n, proto, packets);
      }
      if (packets.length >= want) finish(false);
    });
  });
}

/** What a forwarder saw in one direction (a -> b). */
interface Seen {
  packets: number;
  bytes: number;
  maxLen: number;
  superPackets: number; // longer than 1500 bytes
  gso: Record<string, number>; // gso_type -> packets
  maxGsoSize: number;
  needsCsum: number;
  firstSuper: { len: number; gsoType: number; gsoSize: number; hdrLen: number; csumStart: number; csumOffset: number } | null;
}

interface Forward {
  a: TunDevice;
  b: TunDevice;
  seen: Seen;
}

/**
 * Copies every packet read from `a` into `b` unchanged, vnet header included (batch.vnet as read),
 * and records what it saw. Runs until close.
 */
function forward(a: TunDevice, b: TunDevice): Forward {
  const batch = new PacketBatch(16, a.vnetHdr ? OFFLOAD_SLOT_SIZE : undefined);
  const seen: Seen = { packets: 0, bytes: 0, maxLen: 0, superPackets: 0, gso: {}, maxGsoSize: 0, needsCsum: 0, firstSuper: null };
  a.onReadable(() => {
    for (let k = 0; k < 64; k++) {
      const n = a.read(batch);
      if (n === 0) break;
      for (let i = 0; i < n; i++) {
        const len = batch.lens[i];
        const v = i * VNET.FIELDS;
        const gsoType = batch.vnet[v + VNET.GSO_TYPE];
        seen.packets++;
        seen.bytes += len;
        if (len > seen.maxLen) seen.maxLen = len;
        seen.gso[gsoType] = (seen.gso[gsoType] ?? 0) + 1;
        if (batch.vnet[v + VNET.GSO_SIZE] > seen.maxGsoSize) seen.maxGsoSize = batch.vnet[v + VNET.GSO_SIZE];
        if ((batch.vnet[v + VNET.FLAGS] & 1) !== 0) seen.needsCsum++;
        if (len > 1500) {
          seen.superPackets++;
          if (seen.firstSuper === null) {
            seen.firstSuper = {
              len,
              gsoType,
              gsoSize: batch.vnet[v + VNET.GSO_SIZE],
              hdrLen: batch.vnet[v + VNET.HDR_LEN],
              csumStart: batch.vnet[v + VNET.CSUM_START],
              csumOffset: batch.vnet[v + VNET.CSUM_OFFSET],
            };
          }
        }
      }
      b.write(batch);
    }
  });
  const f = { a, b, seen };
  forwards.push(f);
  return f;
}

/** A deterministic byte stream (xorshift32 from `seed`), `total` bytes in 64 KiB chunks. */
function* pattern(seed: number, total: number): Generator<Buffer> {
  let x = seed >>> 0 || 1;
  for (let sent = 0; sent < total; ) {
    const chunk = Buffer.alloc(Math.min(65536, total - sent));
    for (let i = 0; i < chunk.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      chunk.writeUInt32LE(x >>> 0, i);
    }
    sent += chunk.length;
    yield chunk;
  }
}

/** Sends `bytes` bytes to address:port, half-closes, and returns our sha256 and the server's reply line. */
function tcpSend(address: string, port: number, bytes: number, seed: number, timeoutMs: number) {
  return new Promise<{ sha256: string; reply: string; ms: number }>((resolve, reject) => {
    const t0 = Date.now();
    const hash = createHash('sha256');
    let reply = '';
    const sock = net.connect({ host: address, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tcpSend timed out after ${timeoutMs} ms (reply so far: ${reply})`));
    }, timeoutMs);
    sock.on('error', (e) => (clearTimeout(timer), reject(e)));
    sock.on('data', (d) => (reply += d.toString()));
    sock.on('end', () => {
      clearTimeout(timer);
      resolve({ sha256: hash.digest('hex'), reply: reply.trim(), ms: Date.now() - t0 });
    });
    sock.on('connect', async () => {
      for (const chunk of pattern(seed, bytes)) {
        hash.update(chunk);
        if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
      }
      sock.end();
    });
  });
}

function keyedTun(key: unknown): TunDevice {
  const t = keyed.get(String(key));
  if (t === undefined) throw new Error(`no TUN opened as ${String(key)}`);
  return t;
}

async function handle(req: Record<string, any>): Promise<unknown> {
  switch (req.op) {
    case 'open': {
      tun = TunDevice.open(String(req.name));
      return { name: tun.name, fd: tun.fd };
    }
    case 'openError': {
      try {
        TunDevice.open(String(req.name), req.vnetHdr ? { vnetHdr: true } : undefined).close();
        return { threw: false };
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        return { threw: true, message: err.message, code: err.code, syscall: err.syscall };
      }
    }
    case 'ipipOpen': {
      ipip = IpipSocket.open();
      return { fd: ipip.fd };
    }
    case 'readOnce': {
      const batch = new PacketBatch(Number(req.capacity ?? 64));
      const n = dev(req.dev).read(batch);
      const packets: string[] = [];
      packetsOf(batch, n, req.proto, packets);
      return { count: n, batchCount: batch.count, offs: Array.from(batch.offs.subarray(0, n)), packets, stats: dev(req.dev).stats() };
    }
    case 'collect':
      return collect(dev(req.dev), Number(req.want), Number(req.timeoutMs), req.proto);
    case 'write': {
      // packets: hex strings; '' = a zero-length slot (must be skipped).
      const hexes: string[] = req.packets;
      const big = hexes.some((h) => h.length / 2 > SLOT_SIZE - HEADROOM); // e.g. an oversize-read probe
      const batch = new PacketBatch(Math.max(1, hexes.length), big ? OFFLOAD_SLOT_SIZE : SLOT_SIZE);
      for (const h of hexes) {
        const i = batch.push(Buffer.from(h, 'hex'));
        if (h === '') batch.lens[i] = 0;
      }
      const t = dev(req.dev ?? 'tun') as TunDevice;
      const written = t.write(batch);
      return { written, stats: t.stats() };
    }
    case 'arm': {
      // A readiness callback that stays armed until close() (no timer of its own).
      const d = dev(req.dev);
      const batch = new PacketBatch(8);
      d.onReadable(() => {
        while (d.read(batch) > 0) {
          /* discard */
        }
      });
      return {};
    }
    case 'stats':
      return req.key !== undefined ? keyedTun(req.key).stats() : dev(req.dev).stats();
    case 'openTun': {
      const t = TunDevice.open(String(req.name), { vnetHdr: Boolean(req.vnetHdr), offload: req.offload });
      keyed.set(String(req.key), t);
      return { name: t.name, vnetHdr: t.vnetHdr, offload: t.offload, offloadRequested: t.offloadRequested, vnetRefused: t.vnetRefused ?? null };
    }
    case 'closeTun': {
      const t = keyedTun(req.key);
      for (let i = forwards.length - 1; i >= 0; i--) if (forwards[i].a === t || forwards[i].b === t) forwards.splice(i, 1);
      t.close();
      keyed.delete(String(req.key));
      return {};
    }
    case 'forward': {
      // Both directions between two keyed TUNs.
      const a = keyedTun(req.a);
      const b = keyedTun(req.b);
      forward(a, b);
      forward(b, a);
      return {};
    }
    case 'forwardStats': {
      const a = keyedTun(req.a);
      const f = forwards.find((x) => x.a === a);
      if (f === undefined) throw new Error(`no forwarder from ${String(req.a)}`);
      return f.seen;
    }
    case 'tcpSend':
      return tcpSend(String(req.address), Number(req.port), Number(req.bytes), Number(req.seed), Number(req.timeoutMs));
    case 'sysStats':
      return tunSysStats(String(req.name));
    case 'ipipWrite': {
      const hexes: string[] = req.packets;
      const batch = new PacketBatch(Math.max(1, hexes.length));
      for (const h of hexes) batch.push(Buffer.from(h, 'hex'));
      const s = dev('ipip') as IpipSocket;
      return { written: s.write(batch), stats: s.stats() };
    }
    case 'udpListen': {
      const sock = dgram.createSocket('udp4');
      const entry = { sock, msgs: [] as { hex: string; from: string; port: number }[] };
      sock.on('message', (m, rinfo) => entry.msgs.push({ hex: m.toString('hex'), from: rinfo.address, port: rinfo.port }));
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(Number(req.port), String(req.address), () => resolve());
      });
      udp.set(Number(req.port), entry);
      return {};
    }
    case 'udpReceived': {
      const entry = udp.get(Number(req.port));
      if (entry === undefined) throw new Error(`no listener on ${req.port}`);
      const deadline = Date.now() + Number(req.timeoutMs);
      while (entry.msgs.length < Number(req.want) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      return { msgs: entry.msgs };
    }
    case 'udpSend': {
      // Sends count datagrams `${prefix}${i}` padded to `size` bytes (when larger) from an ephemeral port.
      const sock = dgram.createSocket('udp4');
      const count = Number(req.count);
      const size = Number(req.size ?? 0);
      try {
        for (let i = 0; i < count; i++) {
          let payload = Buffer.from(`${req.prefix}${i}`);
          if (payload.length < size) payload = Buffer.concat([payload, Buffer.alloc(size - payload.length, 0x61)]);
          await new Promise<void>((resolve, reject) =>
            sock.send(payload, Number(req.port), String(req.address), (err) => (err ? reject(err) : resolve())),
          );
        }
      } finally {
        sock.close();
      }
      return { sent: count };
    }
    case 'close': {
      if (tun !== null) {
        tun.close();
        tun.close(); // idempotent
      }
      if (ipip !== null) {
        ipip.close();
        ipip.close();
      }
      let threw = false;
      try {
        if (tun !== null) tun.read(new PacketBatch(1));
      } catch {
        threw = true;
      }
      for (const { sock } of udp.values()) sock.close();
      udp.clear();
      return { readAfterCloseThrew: threw };
    }
    default:
      throw new Error(`unknown op ${String(req.op)}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === '') return;
  let req: Record<string, any>;
  try {
    req = JSON.parse(line);
  } catch {
    return;
  }
  handle(req).then(
    (result) => process.stdout.write(JSON.stringify({ id: req.id, ok: true, result }) + '\n'),
    (e: Error) => process.stdout.write(JSON.stringify({ id: req.id, ok: false, error: String(e?.stack ?? e) }) + '\n'),
  );
});
rl.on('close', () => {
  for (const t of keyed.values()) t.close();
  tun?.close();
  ipip?.close();
  for (const { sock } of udp.values()) sock.close();
});
