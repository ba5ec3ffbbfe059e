/**
 * System calls per packet on the raw IPIP socket, before (one read()/write() per packet) and after
 * (one recvmmsg()/sendmmsg() per batch), counted by the addon itself (READ_STAT.CALLS /
 * WRITE_STAT.CALLS) and timed.
 *
 *   npx ts-node --transpile-only scripts/bench-io.ts [packets-per-case] [batch]     (root)
 *
 * Bounded and private: it creates a network namespace `ktbio-<hex>`, re-runs itself inside it and
 * deletes the namespace afterwards (also on failure). Inside: a TUN ktbio0 (10.202.0.1/24), a second
 * TUN ktbio1 (10.202.1.1/24) nobody reads, which discards what is routed to it once its queue is
 * full, and the raw IPIP socket.
 *   receive: IPIP packets (64-byte UDP inside) written into the TUN, addressed to 10.202.0.1, are
 *     delivered to the raw socket; it is drained `batch` at a time with read() per packet (the
 *     addon's readBatch, what IpipSocket did before) or one recvmmsg() (recvBatch).
 *   send: IPIP packets to 10.202.1.2 sent `batch` at a time through the TUN (write() per packet:
 *     how the daemon sends IPIP today; the kernel then forwards them) or the raw socket's
 *     sendmmsg() (IpipSocket.write); ktbio1 drops them.
 * Each case stops after `packets-per-case` packets or 10 s.
 *
 * Then the TUN itself, offloads off and on: a TUN pair, the second moved to a second namespace,
 * forwarded both ways in this process (read a batch from one, write it unchanged into the other,
 * vnet header included), carrying one TCP transfer of 256 MiB (client and sink are child
 * processes). Prints Gbit/s, TUN reads per MiB and the largest packet read.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import * as readline from 'node:readline';
import {
  HEADROOM,
  IpipSocket,
  OFFLOAD_SLOT_SIZE,
  PacketBatch,
  READ_STAT,
  TunDevice,
  WRITE_STAT,
  loadNative,
  offloadNames,
} from '../src/io';
import { IPPROTO_IPIP, buildPacket, parseIp } from '../src/netstack';

const PACKETS = Number(process.argv[2] ?? 200_000);
const BATCH = Number(process.argv[3] ?? 64);
const CASE_MS = 10_000;

function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 20_000 });
}

function outer(src: string, dst: string, i: number): Buffer {
  const inner = buildPacket({
    src: parseIp('10.203.0.2'),
    dst: parseIp('10.203.0.1'),
    udp: { sport: 40000, dport: 9000 + (i % 100), payload: Buffer.alloc(36, 0x61) },
  });
  return buildPacket({ src: parseIp(src), dst: parseIp(dst), proto: IPPROTO_IPIP, id: i & 0xffff, df: true, payload: inner });
}

/** A batch holding `n` copies of the packets from `make`, ready to write. */
function filled(n: number, make: (i: number) => Buffer): PacketBatch {
  const b = new PacketBatch(n);
  for (let i = 0; i < n; i++) b.push(make(i));
  return b;
}

interface Result {
  name: string;
  packets: number;
  calls: number;
  ms: number;
}

function report(r: Result): void {
  const perPkt = r.calls / r.packets;
  const kpps = r.packets / r.ms;
  console.log(`${r.name.padEnd(34)} ${String(r.packets).padStart(8)} pkts  ${perPkt.toFixed(3)} syscalls/pkt  ${kpps.toFixed(0)} kpps  (${r.ms.toFixed(0)} ms)`);
}

function receiveCase(name: string, tun: TunDevice, sock: IpipSocket, useMmsg: boolean): Result {
  const native = loadNative();
  const src = filled(BATCH, (i) => outer('10.202.0.2', '10.202.0.1', i));
  const dst = new PacketBatch(BATCH);
  const stats = new Float64Array(READ_STAT.LEN);
  let got = 0;
  let ms = 0;
  const deadline = performance.now() + CASE_MS;
  while (got < PACKETS && performance.now() < deadline) {
    tun.write(src);
    const t0 = performance.now();
    for (;;) {
      const n = useMmsg
        ? native.recvBatch(sock.fd, dst.slab, dst.offs, dst.lens, dst.slotSize, HEADROOM, dst.capacity, stats)
        : native.readBatch(sock.fd, dst.slab, dst.offs, dst.lens, dst.slotSize, HEADROOM, dst.capacity, stats);
      if (n === 0) break;
      got += n;
    }
    ms += performance.now() - t0;
  }
  return { name, packets: got, calls: stats[READ_STAT.CALLS], ms };
}

function sendCase(name: string, write: (b: PacketBatch) => number, calls: () => number): Result {
  const b = filled(BATCH, (i) => outer('10.202.1.1', '10.202.1.2', i));
  const calls0 = calls();
  let sent = 0;
  const t0 = performance.now();
  const deadline = t0 + CASE_MS;
  while (sent < PACKETS && performance.now() < deadline) sent += write(b);
  return { name, packets: sent, calls: calls() - calls0, ms: performance.now() - t0 };
}

/**
 * Node source of a TCP sink listening on 0.0.0.0:port: hashes what it receives, answers
 * "<sha256> <bytes>" and closes; prints "listening" when ready; exits when its stdin ends.
 * (Also used by test/tun-offload.test.ts.)
 */
export function tcpSinkSource(port: number): string {
  return `
const net = require('node:net'), crypto = require('node:crypto');
net.createServer((s) => {
  const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { h.update(d); n += d.length; });
  s.on('end', () => s.end(h.digest('hex') + ' ' + n + '\\n'));
  s.on('error', () => {});
}).listen(${port}, '0.0.0.0', () => console.log('listening'));
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
`;
}

const CLIENT = (host: string, port: number, bytes: number) => `
const s = require('node:net').connect(${port}, '${host}'); const chunk = Buffer.alloc(1 << 20, 0x6b);
let left = ${bytes}, reply = '';
const pump = () => { while (left > 0) { left -= chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
s.on('connect', pump); s.on('data', (d) => (reply += d)); s.on('end', () => console.log(reply.trim()));
`;

/** Copies every packet read from `a` into `b` unchanged (vnet header included); returns reads/packets/max length seen. */
function forward(a: TunDevice, b: TunDevice) {
  const batch = new PacketBatch(32, a.vnetHdr ? OFFLOAD_SLOT_SIZE : undefined);
  const seen = { maxLen: 0 };
  a.onReadable(() => {
    for (let k = 0; k < 64; k++) {
      const n = a.read(batch);
      if (n === 0) break;
      for (let i = 0; i < n; i++) if (batch.lens[i] > seen.maxLen) seen.maxLen = batch.lens[i];
      b.write(batch);
    }
  });
  return seen;
}

async function tunForwardCase(peerNs: string, net: number, vnetHdr: boolean): Promise<void> {
  const BYTES = 256 * 1024 * 1024;
  const a = TunDevice.open(`ktbfa${net}`, { vnetHdr });
  const b = TunDevice.open(`ktbfb${net}`, { vnetHdr });
  const sink = spawn('ip', ['netns', 'exec', peerNs, process.execPath, '-e', tcpSinkSource(7200)], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    sh('ip', ['link', 'set', b.name, 'netns', peerNs]);
    sh('ip', ['addr', 'add', `10.204.${net}.1/24`, 'dev', a.name]);
    sh('ip', ['link', 'set', a.name, 'up']);
    sh('ip', ['-n', peerNs, 'addr', 'add', `10.204.${net}.2/24`, 'dev', b.name]);
    sh('ip', ['-n', peerNs, 'link', 'set', b.name, 'up']);
    await new Promise((r) => readline.createInterface({ input: sink.stdout! }).once('line', r));
    const ab = forward(a, b);
    forward(b, a);
    const t0 = performance.now();
    const client = spawn(process.execPath, ['-e', CLIENT(`10.204.${net}.2`, 7200, BYTES)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const reply = await new Promise<string>((resolve) => {
      let out = '';
      const timer = setTimeout(() => client.kill(), 60_000);
      client.stdout!.on('data', (d) => (out += d));
      client.on('exit', () => (clearTimeout(timer), resolve(out.trim())));
    });
    const ms = performance.now() - t0;
    const ok = reply.endsWith(` ${BYTES}`);
    const reads = a.readStats[READ_STAT.CALLS];
    console.log(
      `TUN forward, ${vnetHdr ? `vnet header, offload ${offloadNames(a.offload).join('|')}` : 'plain'}`.padEnd(58) +
        ` ${ok ? ((BYTES * 8) / ms / 1e6).toFixed(2) + ' Gbit/s' : 'FAILED: ' + reply}  ${(reads / (BYTES / 1048576)).toFixed(1)} reads/MiB` +
        `  max packet ${ab.maxLen} B  (${ms.toFixed(0)} ms)`,
    );
  } finally {
    sink.stdin!.end();
    a.close();
    b.close();
  }
}

async function inner(): Promise<void> {
  const tun = TunDevice.open('ktbio0');
  sh('ip', ['addr', 'add', '10.202.0.1/24', 'dev', 'ktbio0']);
  sh('ip', ['link', 'set', 'ktbio0', 'up']);
  const sink = TunDevice.open('ktbio1'); // never read: its queue fills and the kernel drops the rest
  sh('ip', ['addr', 'add', '10.202.1.1/24', 'dev', 'ktbio1']);
  sh('ip', ['link', 'set', 'ktbio1', 'up']);
  sh('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.ktbio0.rp_filter=0']);
  const sock = IpipSocket.open();
  try {
    console.log(`kernel ${process.platform} ${require('node:os').release()}, batch ${BATCH}, up to ${PACKETS} packets per case`);
    report(receiveCase('receive: read() per packet', tun, sock, false));
    report(receiveCase('receive: recvmmsg() per batch', tun, sock, true));
    report(sendCase('send: TUN write() per packet', (b) => tun.write(b), () => tun.writeStats[WRITE_STAT.CALLS]));
    report(sendCase('send: raw socket sendmmsg()', (b) => sock.write(b), () => sock.writeStats[WRITE_STAT.CALLS]));
    const s = sock.stats();
    console.log(`raw socket counters: read errors ${s.readErrors}, oversize ${s.readOversizeDrops}, write errors ${s.writeErrors} (last errno ${s.lastWriteErrno}), backpressure ${s.writeBackpressureDrops}`);
    await tunForwardCase(String(process.env.KT_BENCH_IO_PEER), 1, false);
    await tunForwardCase(String(process.env.KT_BENCH_IO_PEER), 2, true);
  } finally {
    sock.close();
    sink.close();
    tun.close();
  }
}

function outerMain(): void {
  const tag = randomBytes(3).toString('hex');
  const ns = `ktbio-${tag}`;
  const peer = `ktbio-${tag}-b`;
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['netns', 'add', peer]);
  try {
    sh('ip', ['-n', peer, 'link', 'set', 'lo', 'up']);
    const register = require.resolve('ts-node/register/transpile-only');
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-r', register, __filename, ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, KT_BENCH_IO_INNER: '1', KT_BENCH_IO_PEER: peer },
      timeout: 120_000,
    });
    if (r.status !== 0) process.exitCode = 1;
  } finally {
    sh('ip', ['netns', 'del', ns]);
    sh('ip', ['netns', 'del', peer]);
  }
}

if (require.main === module) {
  if (process.env.KT_BENCH_IO_INNER === '1') {
    inner().catch((e) => {
      console.error(e);
      process.exitCode = 1;
    });
  } else outerMain();
}
