/**
 * Micro-benchmark of the per-packet codec work: parseIpv4 + rewriteDst + rewriteSrc
 * on a 60-byte TCP SYN (Linux-style options), in place in a slab, as the pipeline does it.
 *
 *   npx ts-node scripts/bench-codec.ts [iterations]
 *
 * Each iteration alternates between two NAT bindings so every rewrite really changes bytes and
 * checksums; the packet is re-validated by the next parse, so a broken rewrite shows up as a
 * non-zero drop count. Prints ns/packet for L4 checksum verification on and off.
 */
import { performance } from 'node:perf_hooks';
import {
  PacketMeta,
  TCP_SYN,
  buildPacket,
  parseIp,
  parseIpv4,
  rewriteDst,
  rewriteSrc,
} from '../src/netstack';

const ITER = Number(process.argv[2] ?? 5_000_000);

const pkt = buildPacket({
  src: parseIp('10.244.1.5'),
  dst: parseIp('10.96.0.10'),
  ttl: 64,
  id: 0x4d2e,
  df: true,
  tcp: {
    sport: 43210,
    dport: 80,
    seq: 0x9c2d1f3a,
    flags: TCP_SYN,
    window: 64240,
    options: Buffer.from('020405b40402080a0a1b2c3d0000000001030307', 'hex'),
  },
});
if (pkt.length !== 60) throw new Error(`expected a 60-byte packet, got ${pkt.length}`);

const slab = Buffer.alloc(2048);
const OFF = 64;
const m = new PacketMeta();
const A = { dst: parseIp('10.244.2.7'), dport: 8080, src: parseIp('10.0.0.11'), sport: 61000 };
const B = { dst: parseIp('10.96.0.10'), dport: 80, src: parseIp('10.244.1.5'), sport: 43210 };

function run(n: number, verifyL4: boolean): { ns: number; drops: number } {
  pkt.copy(slab, OFF);
  let drops = 0;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const r = parseIpv4(slab, OFF, 60, m, verifyL4);
    if (r !== 0) {
      drops++;
      continue;
    }
    const b = (i & 1) === 0 ? A : B;
    rewriteDst(slab, m, b.dst, b.dport);
    rewriteSrc(slab, m, b.src, b.sport);
  }
  const t1 = performance.now();
  return { ns: ((t1 - t0) * 1e6) / n, drops };
}

// Warm up (lets V8 optimise the hot functions), then measure.
run(200_000, true);
run(200_000, false);
const rows: Array<[string, number, number]> = [];
for (const [name, v] of [
  ['parse(verify L4) + rewriteDst + rewriteSrc', true],
  ['parse(no L4 verify) + rewriteDst + rewriteSrc', false],
] as const) {
  let best = Infinity;
  let drops = 0;
  for (let rep = 0; rep < 5; rep++) {
    const r = run(ITER, v);
    if (r.ns < best) best = r.ns;
    drops += r.drops;
  }
  rows.push([name, best, drops]);
}
console.log(`node ${process.version}, ${ITER} packets per run, best of 5, 60-byte TCP SYN`);
for (const [name, ns, drops] of rows) {
  console.log(`${name.padEnd(62)} ${ns.toFixed(1).padStart(7)} ns/packet  (${(1e3 / ns).toFixed(2)} Mpps)${drops ? `  DROPS ${drops}` : ''}`);
}
