/**
 * virtio_net_hdr codec, partial-checksum NAT, software GSO and TCP GRO (src/netstack/{vnet,partial,gso}).
 *
 * Packets are built and checked here with an independent checksum implementation (refSum: a plain
 * loop, no shared code with src/netstack/checksum.ts), so a bug shared by the builder and the code
 * under test cannot cancel out.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  GSO_REASON_COUNT,
  GSO_REASON_NAMES,
  GsoReason,
  IPPROTO_TCP,
  IPPROTO_UDP,
  PacketMeta,
  DropReason,
  SegmentBatch,
  TCP_ACK,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  TcpGroTable,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VNET_HDR_LEN,
  VnetHdr,
  coalesceTcp,
  emitVnetHdrRepr,
  parseIpv4,
  parseVnetHdrRepr,
  readVnetHdr,
  rewriteDst,
  rewriteDstPartial,
  rewriteSrcPartial,
  segmentTcp,
  segmentUdp,
  vnetCheck,
  vnetFinishChecksum,
  writeVnetHdr,
} from '../src/netstack';

// --- independent reference helpers -----------------------------------------------------------

/** One's-complement sum of bytes [from, to) as big-endian words plus extra words, folded (not complemented). */
function refSum(b: Uint8Array, from: number, to: number, extra: number[] = []): number {
  let s = 0;
  for (const w of extra) s += w;
  for (let i = from; i < to; i += 2) s += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}
const be16 = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];
const be32 = (b: Uint8Array, at: number) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
const put16 = (b: Uint8Array, at: number, v: number) => { b[at] = (v >>> 8) & 0xff; b[at + 1] = v & 0xff; };
const put32 = (b: Uint8Array, at: number, v: number) => { put16(b, at, v >>> 16); put16(b, at + 2, v & 0xffff); };
const pseudoWords = (src: number, dst: number, proto: number, l4len: number) =>
  [src >>> 16, src & 0xffff, dst >>> 16, dst & 0xffff, proto, l4len];

/** True if the IP header checksum and the TCP/UDP checksum (UDP 0 = none) of a complete packet verify. */
function refVerify(p: Uint8Array): { ip: boolean; l4: boolean } {
  const ihl = (p[0] & 15) * 4;
  const total = be16(p, 2);
  const ip = refSum(p, 0, ihl) === 0xffff;
  const proto = p[9];
  const src = be32(p, 12), dst = be32(p, 16);
  if (proto === IPPROTO_UDP && be16(p, ihl + 6) === 0) return { ip, l4: true };
  const l4 = refSum(p, ihl, total, pseudoWords(src, dst, proto, total - ihl)) === 0xffff;
  return { ip, l4 };
}

interface Spec {
  src: number; dst: number; sport: number; dport: number;
  id: number; df: boolean; tos: number; ttl: number; ipOpts: number; // ipOpts: option words (0..10)
  seq: number; ack: number; flags: number; window: number; tcpOpts: number; // tcpOpts: option words
  payload: Uint8Array;
}

/**
 * A TCP or UDP packet. csum: 'full' = complete checksum, 'partial' = the kernel's CHECKSUM_PARTIAL
 * form (folded pseudo-header sum with this packet's L4 length, not complemented), 'none' (UDP 0).
 */
function build(s: Spec, proto: number, csum: 'full' | 'partial' | 'none'): Uint8Array {
  const ihl = 20 + 4 * s.ipOpts;
  const l4h = proto === IPPROTO_TCP ? 20 + 4 * s.tcpOpts : 8;
  const total = ihl + l4h + s.payload.length;
  const p = new Uint8Array(total);
  p[0] = 0x40 | (ihl / 4);
  p[1] = s.tos;
  put16(p, 2, total);
  put16(p, 4, s.id);
  put16(p, 6, s.df ? 0x4000 : 0);
  p[8] = s.ttl;
  p[9] = proto;
  put32(p, 12, s.src);
  put32(p, 16, s.dst);
  for (let i = 20; i < ihl; i++) p[i] = 1; // NOP options
  put16(p, 10, (~refSum(p, 0, ihl)) & 0xffff);
  put16(p, ihl, s.sport);
  put16(p, ihl + 2, s.dport);
  if (proto === IPPROTO_TCP) {
    put32(p, ihl + 4, s.seq);
    put32(p, ihl + 8, s.ack);
    p[ihl + 12] = (l4h / 4) << 4;
    p[ihl + 13] = s.flags;
    put16(p, ihl + 14, s.window);
    for (let i = 20; i < l4h; i++) p[ihl + i] = (i * 7 + s.tcpOpts) & 0xff; // arbitrary option bytes
  } else {
    put16(p, ihl + 4, l4h + s.payload.length);
  }
  p.set(s.payload, ihl + l4h);
  const at = ihl + (proto === IPPROTO_TCP ? 16 : 6);
  const pw = pseudoWords(s.src, s.dst, proto, total - ihl);
  if (csum === 'partial') put16(p, at, refSum(p, 0, 0, pw));
  else if (csum === 'full') {
    const c = (~refSum(p, ihl, total, pw)) & 0xffff;
    put16(p, at, c === 0 ? 0xffff : c);
  }
  return p;
}

function vnet(flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number): VnetHdr {
  const h = new VnetHdr();
  Object.assign(h, { flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset });
  return h;
}

/** The vnet header the kernel attaches to a TSO super-packet it hands to the TUN. */
function tsoHdr(p: Uint8Array, mss: number): VnetHdr {
  const ihl = (p[0] & 15) * 4;
  const thl = (p[ihl + 12] >>> 4) * 4;
  const ecn = (p[ihl + 13] & TCP_CWR) !== 0 ? VIRTIO_NET_HDR_GSO_ECN : 0;
  return vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 | ecn, ihl + thl, mss, ihl, 16);
}

class Batch implements SegmentBatch {
  readonly slab: Uint8Array;
  readonly offs: Uint32Array;
  readonly lens: Uint32Array;
  count = 0;
  constructor(readonly capacity: number, readonly slotSize: number, readonly headroom = 64) {
    this.slab = new Uint8Array(capacity * slotSize);
    this.offs = new Uint32Array(capacity);
    this.lens = new Uint32Array(capacity);
  }
  reset(): void { this.count = 0; }
  packet(i: number): Uint8Array { return this.slab.slice(this.offs[i], this.offs[i] + this.lens[i]); }
  push(p: Uint8Array): void {
    const at = this.count * this.slotSize + this.headroom;
    this.slab.set(p, at);
    this.offs[this.count] = at;
    this.lens[this.count] = p.length;
    this.count++;
  }
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const specArb = (maxPayload: number, minPayload = 0) =>
  fc.record({
    src: u32, dst: u32, sport: u16, dport: u16,
    id: u16, df: fc.boolean(), tos: fc.integer({ min: 0, max: 255 }), ttl: fc.integer({ min: 1, max: 255 }),
    ipOpts: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10 })),
    seq: u32, ack: u32,
    flags: fc.integer({ min: 0, max: 255 }).map((f) => (f & ~(TCP_SYN | TCP_RST | TCP_URG)) | TCP_ACK),
    window: u16,
    tcpOpts: fc.oneof(fc.constant(3), fc.integer({ min: 0, max: 10 })),
    // fast-check keeps arrays short by default: draw the length, then fill from a seed.
    payload: fc
      .tuple(fc.integer({ min: minPayload, max: maxPayload }), fc.integer({ min: 0, max: 255 }))
      .map(([n, seed]) => new Uint8Array(n).map((_, i) => (seed + i * 13 + (i >>> 8)) & 0xff)),
  });

// --- vnet header codec -------------------------------------------------------------------------

describe('virtio_net_hdr codec', () => {
  // What the kernel hands a TUN for a TSO packet with 20-byte IP and 32-byte TCP headers, MSS 1448.
  const bytes = Uint8Array.from([0x01, 0x01, 0x34, 0x00, 0xa8, 0x05, 0x14, 0x00, 0x10, 0x00]);

  it('reads and writes the little-endian fields', () => {
    expect(parseVnetHdrRepr(bytes)).toEqual({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 1448, csumStart: 20, csumOffset: 16 });
    const h = new VnetHdr();
    expect(readVnetHdr(bytes, 0, h)).toBe(true);
    const out = new Uint8Array(12);
    writeVnetHdr(out, 2, h);
    expect(Array.from(out.subarray(2))).toEqual(Array.from(bytes));
    const out2 = new Uint8Array(10);
    emitVnetHdrRepr(parseVnetHdrRepr(bytes), out2);
    expect(out2).toEqual(bytes);
  });

  it('refuses a header outside the buffer without touching the object', () => {
    const h = vnet(9, 9, 9, 9, 9, 9);
    expect(readVnetHdr(bytes, 1, h)).toBe(false);
    expect(readVnetHdr(bytes, -1, h)).toBe(false);
    expect(h.flags).toBe(9);
    expect(() => parseVnetHdrRepr(bytes, 4)).toThrow(/outside/);
  });

  it('names every reason', () => {
    expect(GSO_REASON_NAMES.length).toBe(GSO_REASON_COUNT);
    expect(GSO_REASON_NAMES[GsoReason.BadCsumStart]).toBe('bad-csum-start');
  });

  it('finishes a NEEDS_CSUM packet like skb_checksum_help', () => {
    fc.assert(
      fc.property(specArb(3000), fc.boolean(), (s, udp) => {
        const proto = udp ? IPPROTO_UDP : IPPROTO_TCP;
        const p = build(s, proto, 'partial');
        const ihl = (p[0] & 15) * 4;
        const h = vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, ihl, udp ? 6 : 16);
        expect(vnetFinishChecksum(p, 0, p.length, h)).toBe(true);
        expect(refVerify(p)).toEqual({ ip: true, l4: true });
        expect(be16(p, ihl + (udp ? 6 : 16))).not.toBe(0);
      }),
      { seed: 101, numRuns: 200 },
    );
    const p = new Uint8Array(40);
    expect(vnetFinishChecksum(p, 0, 40, vnet(1, 0, 0, 0, 30, 9))).toBe(false);
    expect(vnetFinishChecksum(p, 10, 40, vnet(1, 0, 0, 0, 20, 16))).toBe(false);
    expect(vnetFinishChecksum(p, 0, 40, vnet(0, 0, 0, 0, 20, 16))).toBe(false);
  });
});

// --- (a) partial-checksum NAT ------------------------------------------------------------------

/** Segments `p` (a NEEDS_CSUM super-packet) with segmentTcp/segmentUdp and checks every segment. */
function segmentAndVerify(p: Uint8Array, h: VnetHdr, mss: number, out: Batch, proto: number): Uint8Array[] {
  out.reset();
  const n = (proto === IPPROTO_TCP ? segmentTcp : segmentUdp)(p, 0, p.length, h, mss, out, out.slotSize, out.headroom);
  expect(n).toBeGreaterThan(0);
  const segs: Uint8Array[] = [];
  for (let k = 0; k < n; k++) segs.push(out.packet(k));
  return segs;
}

describe('partial-checksum NAT then segmentation (what the kernel does with a rewritten TSO packet)', () => {
  const out = new Batch(400, 2048); // 24000 / 64 = 375 segments at most
  const m = new PacketMeta();

  it('every segment of a DNAT/SNAT-rewritten super-packet carries correct IP and L4 checksums', () => {
    fc.assert(
      fc.property(
        specArb(24000, 1),
        fc.integer({ min: 64, max: 1460 }),
        fc.record({ dnat: fc.boolean(), snat: fc.boolean(), addr1: u32, port1: u16, addr2: u32, port2: u16 }),
        fc.boolean(),
        (s, mss, nat, udp) => {
          const proto = udp ? IPPROTO_UDP : IPPROTO_TCP;
          const p = build(s, proto, 'partial');
          const ihl = (p[0] & 15) * 4;
          const l4h = udp ? 8 : 20 + 4 * s.tcpOpts;
          const h = udp
            ? vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, ihl + 8, mss, ihl, 6)
            : tsoHdr(p, mss);
          expect(parseIpv4(p, 0, p.length, m, false)).toBe(DropReason.None);
          expect(vnetCheck(h, m)).toBe(GsoReason.None);
          let src = s.src, dst = s.dst, sport = s.sport, dport = s.dport;
          if (nat.dnat) { rewriteDstPartial(p, m, nat.addr1, nat.port1); dst = nat.addr1; dport = nat.port1; }
          if (nat.snat) { rewriteSrcPartial(p, m, nat.addr2, nat.port2); src = nat.addr2; sport = nat.port2; }
          // The rewritten field is the partial sum of the new pseudo header (mod 0xffff: 0 == 0xffff).
          const want = refSum(p, 0, 0, pseudoWords(src, dst, proto, p.length - ihl));
          expect(be16(p, ihl + (udp ? 6 : 16)) % 0xffff).toBe(want % 0xffff);
          expect(refSum(p, 0, ihl)).toBe(0xffff); // IP header checksum still complete
          const segs = segmentAndVerify(p, h, mss, out, proto);
          expect(segs.length).toBe(Math.max(1, Math.ceil(s.payload.length / mss)));
          let joined = 0;
          segs.forEach((g, k) => {
            expect(refVerify(g)).toEqual({ ip: true, l4: true });
            expect(be16(g, 2)).toBe(g.length);
            expect(be16(g, 4)).toBe((s.id + k) & 0xffff);
            expect([be32(g, 12), be32(g, 16), be16(g, ihl), be16(g, ihl + 2)]).toEqual([src, dst, sport, dport]);
            const pay = g.subarray(ihl + l4h);
            expect(pay.length).toBe(k < segs.length - 1 ? mss : s.payload.length - k * mss);
            expect(Buffer.from(pay).equals(Buffer.from(s.payload.subarray(joined, joined + pay.length)))).toBe(true);
            if (udp) expect(be16(g, ihl + 4)).toBe(8 + pay.length);
            else {
              expect(be32(g, ihl + 4)).toBe((s.seq + joined) >>> 0);
              let f = s.flags;
              if (k < segs.length - 1) f &= ~(TCP_FIN | TCP_PSH);
              if (k > 0) f &= ~TCP_CWR;
              expect(g[ihl + 13]).toBe(f);
            }
            joined += pay.length;
          });
          expect(joined).toBe(s.payload.length);
        },
      ),
      { seed: 424242, numRuns: 150 },
    );
  });

  it('the full-checksum rewrite (RFC 1624 on the field) would have broken the segments', () => {
    // The mutation the property above guards against: treating the partial sum as a checksum and
    // folding the port change into it.
    const s: Spec = {
      src: 0x0af40105, dst: 0x0a60000a, sport: 43210, dport: 80, id: 7, df: true, tos: 0, ttl: 64, ipOpts: 0,
      seq: 1000, ack: 2000, flags: TCP_ACK, window: 502, tcpOpts: 3, payload: new Uint8Array(5000).fill(0x5a),
    };
    const p = build(s, IPPROTO_TCP, 'partial');
    expect(parseIpv4(p, 0, p.length, m, false)).toBe(DropReason.None);
    rewriteDst(p, m, 0x0af40207, 8080);
    const segs = segmentAndVerify(p, tsoHdr(p, 1448), 1448, out, IPPROTO_TCP);
    expect(segs.every((g) => refVerify(g).l4)).toBe(false);
    // ... while the partial rewrite keeps them all valid.
    const q = build(s, IPPROTO_TCP, 'partial');
    expect(parseIpv4(q, 0, q.length, m, false)).toBe(DropReason.None);
    rewriteDstPartial(q, m, 0x0af40207, 8080);
    expect(segmentAndVerify(q, tsoHdr(q, 1448), 1448, out, IPPROTO_TCP).every((g) => refVerify(g).l4)).toBe(true);
  });

  it('a full-checksum (non-offloaded) packet is segmented with checksums computed from scratch', () => {
    fc.assert(
      fc.property(specArb(6000, 1), fc.integer({ min: 100, max: 1400 }), (s, mss) => {
        const p = build(s, IPPROTO_TCP, 'full');
        const segs = segmentAndVerify(p, vnet(0, 0, 0, 0, 0, 0), mss, out, IPPROTO_TCP);
        for (const g of segs) expect(refVerify(g)).toEqual({ ip: true, l4: true });
      }),
      { seed: 7, numRuns: 100 },
    );
  });

  it('UDP without checksum keeps 0 in every segment', () => {
    const s: Spec = {
      src: 1, dst: 2, sport: 3, dport: 4, id: 0xfffe, df: false, tos: 0, ttl: 9, ipOpts: 0,
      seq: 0, ack: 0, flags: 0, window: 0, tcpOpts: 0, payload: new Uint8Array(3000).fill(1),
    };
    const p = build(s, IPPROTO_UDP, 'none');
    const segs = segmentAndVerify(p, vnet(0, 0, 0, 0, 0, 0), 1000, out, IPPROTO_UDP);
    expect(segs.map((g) => be16(g, 26))).toEqual([0, 0, 0]);
    expect(segs.map((g) => be16(g, 4))).toEqual([0xfffe, 0xffff, 0]);
  });
});

// --- (b) segment then coalesce -----------------------------------------------------------------

describe('software GSO then GRO gives back the original super-packet', () => {
  const big = new Batch(140, 69632);

  it('segmentTcp -> coalesceTcp round-trips bytes and vnet header', () => {
    const t = new TcpGroTable();
    fc.assert(
      fc.property(specArb(65535 - 20 - 60, 1), fc.integer({ min: 500, max: 1460 }), (s0, mss) => {
        const s = { ...s0, ipOpts: 0, flags: s0.flags & ~TCP_FIN };
        fc.pre(s.payload.length > mss && s.payload.length + 20 + 20 + 4 * s.tcpOpts <= 65535);
        const p = build(s, IPPROTO_TCP, 'partial');
        const h = tsoHdr(p, mss);
        const orig = new Uint8Array(VNET_HDR_LEN + p.length);
        writeVnetHdr(orig, 0, h);
        orig.set(p, VNET_HDR_LEN);
        big.reset();
        const n = segmentTcp(p, 0, p.length, h, mss, big, big.slotSize, big.headroom);
        expect(n).toBe(Math.ceil(s.payload.length / mss));
        const merged = t.merged;
        expect(coalesceTcp(big.slab, big.offs, big.lens, big.count, big.slotSize, t)).toBe(n - 1);
        expect(t.merged - merged).toBe(n - 1);
        expect(big.lens[0]).toBe(orig.length);
        for (let k = 1; k < n; k++) expect(big.lens[k]).toBe(0);
        expect(Buffer.from(big.packet(0)).equals(Buffer.from(orig))).toBe(true);
      }),
      { seed: 20261202, numRuns: 60 },
    );
  });
});

describe('GRO, then partial NAT, then the kernel\'s segmentation', () => {
  it('segments of a coalesced and DNAT-rewritten flow all verify', () => {
    const big = new Batch(64, 69632);
    const back = new Batch(64, 2048);
    const m = new PacketMeta();
    const h = new VnetHdr();
    fc.assert(
      fc.property(specArb(0), fc.integer({ min: 2, max: 40 }), fc.integer({ min: 200, max: 1448 }), u32, u16, (s0, n, size, addr, port) => {
        const s = { ...s0, ipOpts: 0, flags: TCP_ACK };
        big.reset();
        for (let k = 0; k < n; k++) {
          const payload = new Uint8Array(size).map((_, j) => (k + j * 3) & 0xff);
          big.push(build({ ...s, id: (s.id + k) & 0xffff, seq: (s.seq + k * size) >>> 0, payload }, IPPROTO_TCP, 'full'));
        }
        expect(coalesceTcp(big.slab, big.offs, big.lens, big.count, big.slotSize, new TcpGroTable())).toBe(n - 1);
        const at = big.offs[0];
        expect(readVnetHdr(big.slab, at, h)).toBe(true);
        const p = big.slab.subarray(at + VNET_HDR_LEN, at + big.lens[0]);
        expect(parseIpv4(p, 0, p.length, m, false)).toBe(DropReason.None);
        expect(vnetCheck(h, m)).toBe(GsoReason.None);
        rewriteDstPartial(p, m, addr, port);
        back.reset();
        expect(segmentTcp(p, 0, p.length, h, h.gsoSize, back, 2048, 64)).toBe(n);
        for (let k = 0; k < n; k++) {
          const g = back.packet(k);
          expect(refVerify(g)).toEqual({ ip: true, l4: true });
          expect([be32(g, 16), be16(g, 22)]).toEqual([addr, port]);
        }
      }),
      { seed: 5150, numRuns: 60 },
    );
  });
});

// --- (c) coalesce refusals --------------------------------------------------------------------

/** Full-checksum segments of one flow: n segments of `size` bytes starting at seq. */
function flow(base: Partial<Spec>, n: number, size: number): { spec: Spec; pkts: Uint8Array[] } {
  const spec: Spec = {
    src: 0x0a000001, dst: 0x0a000002, sport: 5555, dport: 80, id: 100, df: true, tos: 0, ttl: 64, ipOpts: 0,
    seq: 0xfffff000, ack: 77, flags: TCP_ACK, window: 1000, tcpOpts: 3, payload: new Uint8Array(0), ...base,
  };
  const pkts: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const payload = new Uint8Array(size).map((_, j) => (k * 31 + j) & 0xff);
    pkts.push(build({ ...spec, id: (spec.id + k) & 0xffff, seq: (spec.seq + k * size) >>> 0, payload }, IPPROTO_TCP, 'full'));
  }
  return { spec, pkts };
}

interface Out { hdr: ReturnType<typeof parseVnetHdrRepr>; pkt: Uint8Array }
function gro(pkts: Uint8Array[], slotSize = 69632): { absorbed: number; out: Out[] } {
  const b = new Batch(pkts.length, slotSize);
  for (const p of pkts) b.push(p);
  const absorbed = coalesceTcp(b.slab, b.offs, b.lens, b.count, slotSize, new TcpGroTable());
  const out: Out[] = [];
  for (let i = 0; i < b.count; i++) {
    if (b.lens[i] === 0) continue;
    const all = b.packet(i);
    out.push({ hdr: parseVnetHdrRepr(all), pkt: all.subarray(VNET_HDR_LEN) });
  }
  return { absorbed, out };
}

const payloadOf = (p: Uint8Array) => { const ihl = (p[0] & 15) * 4; return p.subarray(ihl + (p[ihl + 12] >>> 4) * 4, be16(p, 2)); };
const concat = (ps: Uint8Array[]) => Buffer.concat(ps.map((p) => Buffer.from(payloadOf(p))));

describe('coalesceTcp', () => {
  it('merges a flow into one super-packet whose kernel segmentation is the input', () => {
    const { pkts } = flow({}, 5, 1000);
    const { absorbed, out } = gro(pkts);
    expect(absorbed).toBe(4);
    expect(out.length).toBe(1);
    expect(out[0].hdr).toEqual({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 52, gsoSize: 1000, csumStart: 20, csumOffset: 16 });
    const back = new Batch(10, 2048);
    const h = Object.assign(new VnetHdr(), out[0].hdr);
    expect(segmentTcp(out[0].pkt, 0, out[0].pkt.length, h, 1000, back, 2048, 64)).toBe(5);
    for (let k = 0; k < 5; k++) expect(Buffer.from(back.packet(k)).equals(Buffer.from(pkts[k]))).toBe(true);
  });

  it('refuses out-of-order segments (nothing merged, bytes unchanged)', () => {
    const { pkts } = flow({}, 4, 500);
    const order = [pkts[0], pkts[2], pkts[1], pkts[3]];
    const { absorbed, out } = gro(order);
    expect(absorbed).toBe(0);
    out.forEach((o, k) => {
      expect(o.hdr.gsoType).toBe(VIRTIO_NET_HDR_GSO_NONE);
      expect(o.hdr.flags).toBe(0);
      expect(Buffer.from(o.pkt).equals(Buffer.from(order[k]))).toBe(true);
    });
  });

  it('keeps interleaved flows apart', () => {
    const a = flow({ sport: 1 }, 3, 700).pkts;
    const b = flow({ sport: 2 }, 3, 700).pkts;
    const c = flow({ dst: 0x0a000003 }, 3, 700).pkts;
    const { absorbed, out } = gro([a[0], b[0], c[0], a[1], b[1], c[1], a[2], b[2], c[2]]);
    expect(absorbed).toBe(6);
    expect(out.length).toBe(3);
    expect(concat([out[0].pkt]).equals(concat(a))).toBe(true);
    expect(concat([out[1].pkt]).equals(concat(b))).toBe(true);
    expect(concat([out[2].pkt]).equals(concat(c))).toBe(true);
  });

  it('does not merge across SYN/FIN/RST/URG, a different ack, window, TTL, TOS, options or a bad checksum', () => {
    // [name, change of the middle segment, byte poke]. The middle segment is never merged into the
    // first; except for CWR (allowed on a head) it is not merged with the third either.
    const mutations: Array<[string, (s: Spec) => Partial<Spec>, ((p: Uint8Array) => void)?]> = [
      ['SYN', (s) => ({ flags: s.flags | TCP_SYN })],
      ['FIN', (s) => ({ flags: s.flags | TCP_FIN })],
      ['RST', (s) => ({ flags: s.flags | TCP_RST })],
      ['URG', (s) => ({ flags: s.flags | TCP_URG })],
      ['CWR on a later segment', (s) => ({ flags: s.flags | TCP_CWR })],
      ['ECE differs', (s) => ({ flags: s.flags | TCP_ECE })],
      ['ack', (s) => ({ ack: s.ack + 1 })],
      ['window', (s) => ({ window: s.window + 1 })],
      ['ttl', (s) => ({ ttl: s.ttl - 1 })],
      ['tos', () => ({ tos: 4 })],
      ['DF', () => ({ df: false })],
      ['option length', () => ({ tcpOpts: 4 })],
      ['option bytes', () => ({}), (p) => { p[20 + 21] ^= 1; put16(p, 36, 0); put16(p, 36, (~refSum(p, 20, p.length, pseudoWords(be32(p, 12), be32(p, 16), 6, p.length - 20))) & 0xffff); }],
      ['bad checksum', () => ({}), (p) => { p[p.length - 1] ^= 0xff; }],
      ['IP options', () => ({ ipOpts: 1 })],
    ];
    for (const [name, change, poke] of mutations) {
      const { spec, pkts } = flow({}, 3, 600);
      const payload = payloadOf(pkts[1]).slice();
      const mid = build({ ...spec, ...change(spec), id: spec.id + 1, seq: (spec.seq + 600) >>> 0, payload }, IPPROTO_TCP, 'full');
      poke?.(mid);
      const { out } = gro([pkts[0], mid, pkts[2]]);
      expect(out[0].hdr.gsoType, name).toBe(VIRTIO_NET_HDR_GSO_NONE);
      expect(Buffer.from(out[0].pkt).equals(Buffer.from(pkts[0])), name).toBe(true);
      expect(concat(out.map((o) => o.pkt)).equals(concat([pkts[0], mid, pkts[2]])), name).toBe(true);
      if (name.startsWith('CWR')) {
        expect(out.length, name).toBe(2);
        continue;
      }
      // The middle segment stands alone, unchanged, between the two others.
      expect(out.length, name).toBe(3);
      expect(Buffer.from(out[1].pkt).equals(Buffer.from(mid)), name).toBe(true);
      expect(out.every((o) => o.hdr.gsoType === VIRTIO_NET_HDR_GSO_NONE), name).toBe(true);
    }
  });

  it('ends a super-packet at PSH or a short segment, and keeps CWR only as the first', () => {
    const { spec, pkts } = flow({}, 6, 800);
    const psh = build({ ...spec, flags: TCP_ACK | TCP_PSH, id: spec.id + 1, seq: (spec.seq + 800) >>> 0, payload: payloadOf(pkts[1]).slice() }, IPPROTO_TCP, 'full');
    const short = build({ ...spec, id: spec.id + 4, seq: (spec.seq + 3200) >>> 0, payload: payloadOf(pkts[4]).slice(0, 100) }, IPPROTO_TCP, 'full');
    const { out } = gro([pkts[0], psh, pkts[2], pkts[3], short, pkts[5]]);
    expect(out.map((o) => o.hdr.gsoType)).toEqual([VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_NONE]);
    expect(out[0].pkt[33] & TCP_PSH).toBe(TCP_PSH);
    expect(be16(out[1].pkt, 2)).toBe(20 + 32 + 1700);
    const cwr = flow({ flags: TCP_ACK | TCP_CWR }, 1, 800).pkts[0];
    const rest = flow({}, 3, 800).pkts.slice(1);
    const r = gro([cwr, ...rest]);
    expect(r.absorbed).toBe(2);
    expect(r.out[0].hdr.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN);
  });

  it('without DF the IP ids must count up', () => {
    const { spec, pkts } = flow({ df: false }, 3, 600);
    expect(gro(pkts).absorbed).toBe(2);
    const odd = build({ ...spec, id: spec.id + 5, seq: (spec.seq + 600) >>> 0, payload: payloadOf(pkts[1]).slice() }, IPPROTO_TCP, 'full');
    expect(gro([pkts[0], odd, pkts[2]]).absorbed).toBe(0);
    // With DF the id is meaningless (RFC 6864).
    const d = flow({ df: true }, 3, 600);
    const odd2 = build({ ...d.spec, id: 9, seq: (d.spec.seq + 600) >>> 0, payload: payloadOf(d.pkts[1]).slice() }, IPPROTO_TCP, 'full');
    expect(gro([d.pkts[0], odd2, d.pkts[2]]).absorbed).toBe(2);
  });

  it('stays within 64 KiB and within the slot', () => {
    const { pkts } = flow({}, 50, 1448);
    const { out } = gro(pkts);
    expect(out.length).toBe(2);
    for (const o of out) expect(be16(o.pkt, 2)).toBeLessThanOrEqual(65535);
    expect(concat(out.map((o) => o.pkt)).equals(concat(pkts))).toBe(true);
    // 2048-byte slots (64 bytes headroom): only what fits is merged (two more 600-byte payloads).
    const small = flow({}, 4, 600).pkts;
    const r = gro(small, 2048);
    expect(r.out.length).toBe(2);
    expect(r.out.every((o) => o.pkt.length <= 2048 - 64)).toBe(true);
    expect(concat(r.out.map((o) => o.pkt)).equals(concat(small))).toBe(true);
  });

  it('passes other packets through with a zero header', () => {
    const udp = build({ ...flow({}, 1, 10).spec, payload: new Uint8Array(10) }, IPPROTO_UDP, 'full');
    const junk = Uint8Array.from([1, 2, 3]);
    const { absorbed, out } = gro([udp, junk]);
    expect(absorbed).toBe(0);
    expect(out.map((o) => o.hdr.gsoType)).toEqual([0, 0]);
    expect(Buffer.from(out[0].pkt).equals(Buffer.from(udp))).toBe(true);
    expect(Buffer.from(out[1].pkt).equals(Buffer.from(junk))).toBe(true);
  });
});

// --- (d) bounds ------------------------------------------------------------------------------

describe('malformed vnet headers and bounds', () => {
  const s: Spec = {
    src: 0x0a000001, dst: 0x0a000002, sport: 1, dport: 2, id: 1, df: true, tos: 0, ttl: 64, ipOpts: 0,
    seq: 1, ack: 1, flags: TCP_ACK, window: 1, tcpOpts: 0, payload: new Uint8Array(4000),
  };
  const tcp = build(s, IPPROTO_TCP, 'partial');
  const udp = build(s, IPPROTO_UDP, 'partial');
  const F = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  const T = VIRTIO_NET_HDR_GSO_TCPV4;
  const cases: Array<[string, Uint8Array, VnetHdr, GsoReason]> = [
    ['valid TSO', tcp, vnet(F, T, 40, 1400, 20, 16), GsoReason.None],
    ['valid plain', tcp, vnet(0, 0, 0, 0, 0, 0), GsoReason.None],
    ['valid DATA_VALID', tcp, vnet(VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0), GsoReason.None],
    ['valid USO', udp, vnet(F, VIRTIO_NET_HDR_GSO_UDP_L4, 28, 1400, 20, 6), GsoReason.None],
    ['csum_start beyond the packet', tcp, vnet(F, T, 40, 1400, 60000, 16), GsoReason.BadCsumStart],
    ['csum_start + offset at the very end', tcp, vnet(F, T, 40, 1400, tcp.length - 1, 0), GsoReason.BadCsumStart],
    ['csum_start not the TCP header', tcp, vnet(F, T, 40, 1400, 24, 12), GsoReason.BadCsumStart],
    ['csum_offset not the TCP checksum', tcp, vnet(F, T, 40, 1400, 20, 6), GsoReason.BadCsumOffset],
    ['gso_size 0 with TCPV4', tcp, vnet(F, T, 40, 0, 20, 16), GsoReason.GsoSizeZero],
    ['hdr_len longer than the packet', tcp, vnet(F, T, 0xffff, 1400, 20, 16), GsoReason.BadHdrLen],
    ['unknown flag', tcp, vnet(F | 4, T, 40, 1400, 20, 16), GsoReason.BadFlags],
    ['UFO', udp, vnet(F, VIRTIO_NET_HDR_GSO_UDP, 28, 1400, 20, 6), GsoReason.BadGsoType],
    ['TCPV6', tcp, vnet(F, VIRTIO_NET_HDR_GSO_TCPV6, 40, 1400, 20, 16), GsoReason.BadGsoType],
    ['unknown type', tcp, vnet(F, 7, 40, 1400, 20, 16), GsoReason.BadGsoType],
    ['ECN without GSO', tcp, vnet(F, VIRTIO_NET_HDR_GSO_ECN, 40, 1400, 20, 16), GsoReason.BadGsoType],
    ['ECN with USO', udp, vnet(F, VIRTIO_NET_HDR_GSO_UDP_L4 | VIRTIO_NET_HDR_GSO_ECN, 28, 1400, 20, 6), GsoReason.BadGsoType],
    ['GSO without NEEDS_CSUM', tcp, vnet(0, T, 40, 1400, 20, 16), GsoReason.GsoNoCsum],
    ['TCPV4 on UDP', udp, vnet(F, T, 28, 1400, 20, 6), GsoReason.GsoProtoMismatch],
  ];

  it.each(cases)('%s', (_name, pkt, h, want) => {
    const m = new PacketMeta();
    expect(parseIpv4(pkt, 0, pkt.length, m, false)).toBe(DropReason.None);
    expect(vnetCheck(h, m)).toBe(want);
    const out = new Batch(8, 2048);
    out.slab.fill(0xee);
    const seg = pkt[9] === IPPROTO_TCP ? segmentTcp : segmentUdp;
    const n = seg(pkt, 0, pkt.length, h, 1400, out, 2048, 64);
    if (want === GsoReason.None) expect(n).toBe(3);
    else {
      expect(n).toBe(-want);
      expect(out.count).toBe(0);
      expect(out.slab.every((b) => b === 0xee)).toBe(true);
    }
  });

  it('refuses a bad mss, a full batch, a too-small slot and an overlapping source', () => {
    const h = vnet(F, T, 40, 1400, 20, 16);
    const out = new Batch(2, 2048);
    expect(segmentTcp(tcp, 0, tcp.length, h, 0, out, 2048, 64)).toBe(-GsoReason.BadMss);
    expect(segmentTcp(tcp, 0, tcp.length, h, 1.5, out, 2048, 64)).toBe(-GsoReason.BadMss);
    expect(segmentTcp(tcp, 0, tcp.length, h, 1400, out, 2048, 64)).toBe(-GsoReason.NoRoom);
    expect(segmentTcp(tcp, 0, tcp.length, h, 2000, new Batch(8, 2048), 2048, 64)).toBe(-GsoReason.NoRoom);
    expect(segmentTcp(tcp, 0, tcp.length, h, 1400, out, 2048, -1)).toBe(-GsoReason.NoRoom);
    expect(segmentTcp(udp, 0, udp.length, h, 1400, out, 2048, 64)).toBe(-GsoReason.GsoProtoMismatch);
    expect(segmentTcp(tcp, 0, tcp.length - 1, h, 1400, out, 2048, 64)).toBe(-GsoReason.BadPacket);
    expect(segmentTcp(tcp, 0, tcp.length, h, 1400, out, 2047.5, 64)).toBe(-GsoReason.NoRoom);
    out.count = -1;
    expect(segmentTcp(tcp, 0, tcp.length, h, 1400, out, 2048, 64)).toBe(-GsoReason.NoRoom);
    out.count = 0;
    const gb = new Batch(2, 2048);
    expect(coalesceTcp(gb.slab, gb.offs, gb.lens, 3, 2048, new TcpGroTable())).toBe(-1);
    expect(coalesceTcp(gb.slab, gb.offs, gb.lens, 2, 0, new TcpGroTable())).toBe(-1);
    const shared = new Batch(8, 8192);
    shared.slab.set(tcp, 8192 * 5);
    shared.count = 4; // the segments would go to slots 4-6, over the source in slot 5
    expect(segmentTcp(shared.slab, 8192 * 5, tcp.length, h, 1400, shared, 8192, 64)).toBe(-GsoReason.Overlap);
    expect(shared.count).toBe(4);
    // With 2048-byte slots, slots 4-6 end at byte 14336, before the source.
    expect(segmentTcp(shared.slab, 8192 * 5, tcp.length, h, 1400, shared, 2048, 64)).toBe(3);
  });

  it('never throws or writes outside its slots on random bytes and headers', () => {
    const slot = 2048;
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 6, maxLength: 6 }),
        fc.integer({ min: -2, max: 3000 }),
        fc.integer({ min: -2, max: 3100 }),
        fc.integer({ min: -1, max: 3000 }),
        fc.integer({ min: 0, max: 4 }),
        (junk, realish, f, off, len, mss, start) => {
          // Half the runs start from a real packet with random corruption, so parsing gets far.
          let buf = junk;
          if (realish) {
            buf = (f[0] & 1 ? tcp : udp).slice(0, Math.min(tcp.length, 1000 + (f[1] % 2000)));
            for (let i = 0; i < junk.length && i < 8; i++) buf[junk[i] % 60] ^= junk[i];
            if (f[2] & 1) { put16(buf, 2, buf.length); put16(buf, 10, 0); put16(buf, 10, (~refSum(buf, 0, (buf[0] & 15) * 4)) & 0xffff); }
            off = 0;
            len = buf.length;
          }
          const h = vnet(f[0] & 0xff, f[1] & 0xff, f[2], f[3] % 3000, f[4] % 64, f[5] % 32);
          const before = buf.slice();
          const out = new Batch(4, slot);
          out.slab.fill(0xee);
          out.count = start;
          const n = segmentTcp(buf, off, len, h, mss, out, slot, 64);
          const n2 = segmentUdp(buf, off, len, h, mss, out, slot, 64);
          expect(Buffer.from(buf).equals(Buffer.from(before))).toBe(true);
          const written = Math.max(n, 0) + Math.max(n2, 0);
          expect(out.count).toBe(start + written);
          // Bytes outside the claimed segments are untouched.
          const mark = new Uint8Array(out.slab.length);
          for (let k = start; k < out.count; k++) {
            expect(out.offs[k]).toBe(k * slot + 64);
            expect(out.offs[k] + out.lens[k]).toBeLessThanOrEqual((k + 1) * slot);
            mark.fill(1, out.offs[k], out.offs[k] + out.lens[k]);
          }
          let stray = 0;
          for (let i = 0; i < mark.length; i++) if (!mark[i] && out.slab[i] !== 0xee) stray++;
          expect(stray).toBe(0);
          const gb = new Batch(3, slot);
          gb.push(buf.subarray(0, Math.min(buf.length, 1900)));
          gb.push(tcp.subarray(0, 1500));
          gb.offs[2] = 5; // no headroom
          gb.lens[2] = 100;
          gb.count = 3;
          coalesceTcp(gb.slab, gb.offs, gb.lens, gb.count, slot, new TcpGroTable(1));
          for (let k = 0; k < 3; k++) {
            if (gb.lens[k] === 0) continue;
            expect(gb.offs[k] + gb.lens[k]).toBeLessThanOrEqual(Math.floor(gb.offs[k] / slot) * slot + slot);
          }
        },
      ),
      { seed: 99, numRuns: 400 },
    );
  });
});
