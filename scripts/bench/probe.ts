// Small load tools the benchmark runs inside lab namespaces (`ip netns exec NS node probe.js …`).
// Each mode is bounded in count and time and prints one JSON line on stdout.
//
//   echo-server PORT                      TCP echo (request latency case)
//   rr HOST PORT COUNT SIZE TIMEOUT_MS    one connection, COUNT request/response round trips
//   connect HOST PORT COUNT TIMEOUT_MS    COUNT sequential new connections: connect() latency
//   flood TUN DST DPORT SRC_BASE SRCS START COUNT RATE TIMEOUT_MS
//                                         TCP SYNs with distinct (src, sport), written into a TUN
//                                         device in this namespace: conntrack entries in bulk
import * as net from 'node:net';
import { execFileSync } from 'node:child_process';

function percentiles(us: number[]): Record<string, number> {
  const s = [...us].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { n: s.length, p50: r(q(0.5)), p90: r(q(0.9)), p99: r(q(0.99)), min: r(s[0]), max: r(s[s.length - 1]), mean: r(mean) };
}

function out(o: unknown): void { process.stdout.write(JSON.stringify(o) + '\n'); }

function echoServer(port: number): void {
  const srv = net.createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('error', () => s.destroy());
  });
  srv.listen(port, '0.0.0.0', () => out({ listening: port }));
}

function rr(host: string, port: number, count: number, size: number, timeoutMs: number): void {
  const payload = Buffer.alloc(size, 0x61);
  const rtts: number[] = [];
  const timer = setTimeout(() => { out({ error: 'timeout', ...percentiles(rtts) }); process.exit(3); }, timeoutMs);
  const s = net.connect({ host, port, noDelay: true });
  let got = 0, t0 = 0n;
  const send = () => { got = 0; t0 = process.hrtime.bigint(); s.write(payload); };
  s.on('connect', send);
  s.on('data', (d) => {
    got += d.length;
    if (got < size) return;
    rtts.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (rtts.length >= count) {
      clearTimeout(timer);
      out(percentiles(rtts.slice(Math.min(10, rtts.length >> 4))));  // the first few warm up both ends
      s.destroy();
      return;
    }
    send();
  });
  s.on('error', (e) => { clearTimeout(timer); out({ error: e.message, ...percentiles(rtts) }); process.exit(2); });
}

function connectLoop(host: string, port: number, count: number, timeoutMs: number): void {
  const us: number[] = [];
  let failures = 0;
  const deadline = Date.now() + timeoutMs;
  const one = () => {
    if (us.length + failures >= count || Date.now() > deadline) {
      out({ ...percentiles(us), failures, timedOut: Date.now() > deadline });
      return;
    }
    const t0 = process.hrtime.bigint();
    const s = net.connect({ host, port });
    const guard = setTimeout(() => { failures++; s.destroy(); one(); }, 3000);
    s.on('connect', () => {
      clearTimeout(guard);
      us.push(Number(process.hrtime.bigint() - t0) / 1000);
      s.resetAndDestroy();  // RST: no TIME_WAIT on either end, the port is free again at once
      setImmediate(one);
    });
    s.on('error', () => { clearTimeout(guard); failures++; s.destroy(); setImmediate(one); });
  };
  one();
}

function ipNum(a: string): number { return a.split('.').reduce((n, o) => (n * 256) + Number(o), 0) >>> 0; }

function csum(buf: Buffer, off: number, len: number, init = 0): number {
  let sum = init;
  for (let i = 0; i < len - 1; i += 2) sum += buf.readUInt16BE(off + i);
  if (len & 1) sum += buf[off + len - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * SYN number k: source base+(k % srcs), sport 1024 + floor(k / srcs). Distinct for k < srcs * 64,000;
 * beyond that the numbering wraps, and a repeated SYN only refreshes the entry it already made.
 */
function writeSyn(buf: Buffer, off: number, k: number, dst: number, dport: number, srcBase: number, srcs: number): void {
  k %= srcs * 64_000;
  const src = (srcBase + (k % srcs)) >>> 0, sport = 1024 + Math.floor(k / srcs);
  buf.fill(0, off, off + 40);
  buf[off] = 0x45; buf.writeUInt16BE(40, off + 2); buf.writeUInt16BE(k & 0xffff, off + 4);
  buf[off + 8] = 64; buf[off + 9] = 6;
  buf.writeUInt32BE(src, off + 12); buf.writeUInt32BE(dst, off + 16);
  buf.writeUInt16BE((~csum(buf, off, 20)) & 0xffff, off + 10);
  const t = off + 20;
  buf.writeUInt16BE(sport, t); buf.writeUInt16BE(dport, t + 2);
  buf.writeUInt32BE((k * 2654435761) >>> 0, t + 4);
  buf[t + 12] = 0x50; buf[t + 13] = 0x02; buf.writeUInt16BE(64240, t + 14);
  const pseudo = ((src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + 20);
  buf.writeUInt16BE((~csum(buf, t, 20, pseudo)) & 0xffff, t + 16);
}

async function flood(tunName: string, dst: string, dport: number, srcBase: string, srcs: number, start: number, count: number,
  rate: number, timeoutMs: number): Promise<void> {
  // The product's TUN binding (dist/src/io/tun.js); loaded lazily so other modes need no addon.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { TunDevice, PacketBatch } = require('../../src/io') as typeof import('../../src/io');
  const tun = TunDevice.open(tunName);
  const sh = (args: string) => execFileSync('sh', ['-c', args]);
  sh(`ip link set ${tunName} up && sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.${tunName}.rp_filter=0`);
  const batch = new PacketBatch(256);
  const d = ipNum(dst), b = ipNum(srcBase);
  const t0 = Date.now();
  let sent = 0;
  while (sent < count && Date.now() - t0 < timeoutMs) {
    const n = Math.min(batch.capacity, count - sent);
    for (let i = 0; i < n; i++) {
      const off = batch.slotOffset(i);
      writeSyn(batch.slab, off, start + sent + i, d, dport, b, srcs);
      batch.offs[i] = off; batch.lens[i] = 40;
    }
    batch.count = n;
    tun.write(batch, n);
    sent += n;
    const ahead = sent / rate * 1000 - (Date.now() - t0);
    if (ahead > 1) await new Promise((r) => setTimeout(r, ahead));
  }
  const st = tun.stats();
  tun.close();
  out({ sent, ms: Date.now() - t0, written: st.writePackets, backpressure: st.writeBackpressureDrops, errors: st.writeErrors });
}

const [mode, ...a] = process.argv.slice(2);
switch (mode) {
  case 'echo-server': echoServer(Number(a[0])); break;
  case 'rr': rr(a[0], Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4])); break;
  case 'connect': connectLoop(a[0], Number(a[1]), Number(a[2]), Number(a[3])); break;
  case 'flood':
    flood(a[0], a[1], Number(a[2]), a[3], Number(a[4]), Number(a[5]), Number(a[6]), Number(a[7]), Number(a[8]))
      .catch((e) => { out({ error: String(e && e.message || e) }); process.exit(1); });
    break;
  default:
    process.stderr.write(`probe: unknown mode ${mode}\n`);
    process.exit(2);
}
