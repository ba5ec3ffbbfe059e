// Test helper for test/tun.test.ts: runs INSIDE a network namespace (`ip netns exec NS node -r
// ts-node/register/transpile-only test/support/tun-child.ts`) and drives src/io/tun.ts there.
// Protocol: one JSON request per stdin line {id, op, ...}; one JSON reply per stdout line
// {id, ok, result | error}. Requests are handled concurrently (a 'collect' can wait while a later
// 'write' runs). Every wait is bounded by its timeoutMs. When stdin ends the helper closes what it
// opened and lets the event loop drain: it never calls process.exit, so a leaked poller or socket
// shows up as a child that does not exit.

import * as dgram from 'node:dgram';
import * as readline from 'node:readline';
import { IpipSocket, PacketBatch, TunDevice } from '../../src/io';

type Dev = TunDevice | IpipSocket;

let tun: TunDevice | null = null;
let ipip: IpipSocket | null = null;
const udp = new Map<number, { sock: dgram.Socket; msgs: { hex: string; from: string; port: number }[] }>();

function dev(which: unknown): Dev {
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

async function handle(req: Record<string, any>): Promise<unknown> {
  switch (req.op) {
    case 'open': {
      tun = TunDevice.open(String(req.name));
      return { name: tun.name, fd: tun.fd };
    }
    case 'openError': {
      try {
        TunDevice.open(String(req.name)).close();
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
      return { count: n, batchCount: batch.count, offs: Array.from(batch.offs.subarray(0, n)), packets };
    }
    case 'collect':
      return collect(dev(req.dev), Number(req.want), Number(req.timeoutMs), req.proto);
    case 'write': {
      // packets: hex strings; '' = a zero-length slot (must be skipped).
      const hexes: string[] = req.packets;
      const batch = new PacketBatch(Math.max(1, hexes.length));
      for (const h of hexes) {
        const i = batch.push(Buffer.from(h, 'hex'));
        if (h === '') batch.lens[i] = 0;
      }
      const t = dev('tun') as TunDevice;
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
      return dev(req.dev).stats();
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
  tun?.close();
  ipip?.close();
  for (const { sock } of udp.values()) sock.close();
});
