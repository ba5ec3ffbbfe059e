/**
 * Software GSO (segmentTcp / segmentUdp) and TCP GRO (coalesceTcp) over batches of packet slots.
 *
 * Why: the kernel cannot segment an IPIP-wrapped TSO super-packet written to a TUN, so a super-packet
 * read from the TUN that leaves through the IPIP raw socket is cut here into MTU-sized segments (each a
 * complete packet with its own IP id, length and checksums) and then encapsulated one by one. On the
 * receiving node, in-order segments of one flow from the raw socket are merged back into one
 * super-packet with a GSO vnet header before the TUN write, so the kernel handles one skb instead of
 * ~44 (what Linux GRO and wireguard-go's tcp_offload do).
 *
 * Batches are the udx-native slab model of src/io (PacketBatch matches `SegmentBatch` structurally):
 * packet i is slab[offs[i] .. offs[i]+lens[i]), inside slot floor(offs[i] / slotSize); slots start at
 * multiples of slotSize. Nothing here allocates, throws or uses try/catch; every failure is a GsoReason.
 */
import { read16, read32, write16, write32 } from './bytes';
import { csumDelta16, fold, onesSum, pseudoHeaderSum } from './checksum';
import {
  IPV4_FLAG_DF,
  IPV4_FLAGS_FRAG,
  IPV4_ID,
  IPV4_MAX_TOTAL_LEN,
  IPV4_MIN_HEADER_LEN,
  IPV4_TOS,
  IPV4_TOTAL_LEN,
  IPV4_TTL,
  ipv4FillChecksum,
} from './ipv4';
import { DropReason, PacketMeta, parseIpv4 } from './packet';
import { partialApply } from './partial';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_CWR, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG } from './proto';
import { TCP_ACK_NUM, TCP_CHECKSUM, TCP_DATA_OFF, TCP_FLAGS, TCP_MIN_HEADER_LEN, TCP_SEQ, TCP_WINDOW } from './tcp';
import { UDP_CHECKSUM, UDP_CHECKSUM_MANGLED_0, UDP_LENGTH } from './udp';
import {
  GsoReason,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VNET_HDR_LEN,
  VnetHdr,
  vnetCheck,
  writeVnetHdrFields,
  writeVnetHdrNone,
} from './vnet';

/** Where segments go: PacketBatch (src/io/tun.ts) has this shape. */
export interface SegmentBatch {
  readonly slab: Uint8Array;
  readonly offs: Uint32Array;
  readonly lens: Uint32Array;
  count: number;
  readonly capacity: number;
}

/** The signature of segmentTcp / segmentUdp: see segmentTcp. */
export type SegmentFn = (
  buf: Uint8Array,
  off: number,
  len: number,
  h: VnetHdr,
  mss: number,
  out: SegmentBatch,
  slotSize: number,
  headroom: number,
) => number;

/** Scratch for the parses done here (one worker = one thread, so one instance is enough). */
const gsoMeta = new PacketMeta();

// DataViews over the last VIEW_CACHE buffers seen: a 32-bit big-endian load is one instruction in
// optimized code and works at any alignment, which makes the payload loops ~3x faster than byte loops.
// Slabs are long-lived (TUN read slab, segment batch, IPIP read slab, ...), so a view is allocated only
// when a new buffer shows up, never per packet in the datapath.
const VIEW_CACHE = 4;
const viewBufs: (Uint8Array | null)[] = [null, null, null, null];
const views: DataView<ArrayBufferLike>[] = [];
for (let i = 0; i < VIEW_CACHE; i++) views.push(new DataView(new ArrayBuffer(0)));
let viewNext = 0;

function viewOf(b: Uint8Array): DataView<ArrayBufferLike> {
  for (let i = 0; i < VIEW_CACHE; i++) if (viewBufs[i] === b) return views[i];
  const i = viewNext;
  viewNext = i + 1 === VIEW_CACHE ? 0 : i + 1;
  viewBufs[i] = b;
  views[i] = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return views[i];
}

/** Brings a sum of 32-bit words (< 2^53) under 2^32 without changing it mod 0xffff (for `fold`). */
function reduce32(sum: number): number {
  while (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Copies n bytes src[s..] -> dst[d..] (distinct buffers) and returns their one's-complement sum as
 * big-endian 16-bit words starting at s (odd tail padded), unfolded but < 2^32: one pass over the
 * payload instead of copy + sum. Summing 32-bit words is the same sum mod 0xffff (2^16 = 1 mod 0xffff).
 */
function copySum(src: Uint8Array, s: number, dst: Uint8Array, d: number, n: number): number {
  const sv = viewOf(src);
  const dv = viewOf(dst);
  let sum = 0;
  // Two words per step (measured ~20-30% faster than one): fewer loop checks, independent adds.
  const end8 = s + (n & ~7);
  while (s < end8) {
    const a = sv.getUint32(s);
    const b = sv.getUint32(s + 4);
    dv.setUint32(d, a);
    dv.setUint32(d + 4, b);
    sum += a + b;
    s += 8;
    d += 8;
  }
  if ((n & 4) !== 0) {
    const w = sv.getUint32(s);
    dv.setUint32(d, w);
    sum += w;
    s += 4;
    d += 4;
  }
  if ((n & 2) !== 0) {
    const w = sv.getUint16(s);
    dv.setUint16(d, w);
    sum += w;
    s += 2;
    d += 2;
  }
  if ((n & 1) !== 0) {
    const hi = src[s];
    dst[d] = hi;
    sum += hi << 8;
  }
  return reduce32(sum);
}

/** The one's-complement sum of n bytes at b[off] like checksum.ts onesSum, 4 bytes per step. */
function sumFast(b: Uint8Array, off: number, n: number, initial: number): number {
  const v = viewOf(b);
  let sum = initial;
  const end8 = off + (n & ~7);
  let i = off;
  for (; i < end8; i += 8) sum += v.getUint32(i) + v.getUint32(i + 4);
  if ((n & 4) !== 0) {
    sum += v.getUint32(i);
    i += 4;
  }
  if ((n & 2) !== 0) {
    sum += v.getUint16(i);
    i += 2;
  }
  if ((n & 1) !== 0) sum += b[i] << 8;
  return reduce32(sum);
}

function copyBytes(src: Uint8Array, s: number, dst: Uint8Array, d: number, n: number): void {
  for (let i = 0; i < n; i++) dst[d + i] = src[s + i];
}

/**
 * Splits the TCPv4 packet buf[off .. off+len) described by vnet header `h` into segments of at most
 * `mss` payload bytes, appended to `out` at slots out.count, out.count+1, ... (each at
 * slot * slotSize + headroom, so IPIP can prepend its header in place). As Linux tcp_gso_segment +
 * inet_gso_segment do:
 * - every segment gets the IP header (options included) with its own total length, IP id (first id + k,
 *   mod 2^16) and a complete header checksum; the TCP header with seq advanced by k * mss;
 * - FIN and PSH stay only on the last segment, CWR only on the first;
 * - the TCP checksum is finished the way the kernel finishes a CHECKSUM_PARTIAL segment: the partial
 *   pseudo-header sum P of the super-packet (the field's value when NEEDS_CSUM is set, else computed from
 *   the addresses) gets its length replaced (P + ~superL4Len + segL4Len, as tcp_gso_segment's delta),
 *   is stored in the field, and the field becomes ~fold(sum from csum_start to the segment's end), 0
 *   written as 0xFFFF like skb_checksum_help. A wrong partial sum (a bad NAT rewrite) therefore gives
 *   wrong checksums in the segments, which is what the tests check.
 * `mss` is normally h.gsoSize, smaller for a path with a smaller MTU (IPIP: 20 bytes less); it alone
 * decides the split (a payload <= mss, or none, gives one segment), so a NEEDS_CSUM packet without a GSO
 * type can be finished in software this way too. The source is not modified and must not overlap the
 * output slots. Returns the number of segments (>= 1) or -GsoReason, writing nothing then.
 */
export const segmentTcp: SegmentFn = (buf, off, len, h, mss, out, slotSize, headroom) =>
  segmentL4(buf, off, len, h, mss, out, slotSize, headroom, IPPROTO_TCP);

/**
 * USO (gso_type UDP_L4): like segmentTcp for a UDP super-datagram: each segment is a UDP datagram of at
 * most `mss` payload bytes with its own UDP length and checksum (a packet without NEEDS_CSUM whose
 * checksum is 0 keeps 0 = none). The UDP length must equal the IP payload length (GsoReason.BadPacket).
 */
export const segmentUdp: SegmentFn = (buf, off, len, h, mss, out, slotSize, headroom) =>
  segmentL4(buf, off, len, h, mss, out, slotSize, headroom, IPPROTO_UDP);

function segmentL4(
  buf: Uint8Array, off: number, len: number, h: VnetHdr, mss: number,
  out: SegmentBatch, slotSize: number, headroom: number, proto: number,
): number {
  if (!(mss >= 1 && mss <= IPV4_MAX_TOTAL_LEN && (mss | 0) === mss)) return -GsoReason.BadMss;
  const m = gsoMeta;
  if (parseIpv4(buf, off, len, m, false) !== DropReason.None) return -GsoReason.BadPacket;
  if (m.proto !== proto) return -GsoReason.GsoProtoMismatch;
  const reason = vnetCheck(h, m);
  if (reason !== GsoReason.None) return -reason;
  const tcp = proto === IPPROTO_TCP;
  const l4len = m.l4len;
  if (!tcp && m.udpLen !== l4len) return -GsoReason.BadPacket;

  const ihl = m.ihl;
  const l4hdr = m.l4hdrLen;
  const hdrs = ihl + l4hdr;
  const payload = m.totalLen - hdrs;
  const nseg = payload === 0 ? 1 : ((payload + mss - 1) / mss) | 0;
  const first = out.count;
  const slab = out.slab;
  const maxChunk = payload < mss ? payload : mss;
  if (
    !(first >= 0 && (first | 0) === first && (slotSize | 0) === slotSize && (headroom | 0) === headroom) ||
    !(slotSize > 0 && headroom >= 0 && hdrs + maxChunk <= slotSize - headroom) ||
    first + nseg > out.capacity ||
    (first + nseg) * slotSize > slab.length
  ) {
    return -GsoReason.NoRoom;
  }
  if (buf.buffer === slab.buffer) {
    const a0 = buf.byteOffset + off;
    const b0 = slab.byteOffset + first * slotSize;
    if (a0 < b0 + nseg * slotSize && b0 < a0 + m.totalLen) return -GsoReason.Overlap;
  }

  const l4off = m.l4off;
  const csumField = tcp ? TCP_CHECKSUM : UDP_CHECKSUM;
  const needsCsum = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  const oldField = read16(buf, l4off + csumField);
  const noChecksum = !tcp && !needsCsum && oldField === 0;
  const partial = needsCsum ? oldField : fold(pseudoHeaderSum(m.src, m.dst, proto, l4len));
  const id0 = m.ipId;
  const seq0 = tcp ? read32(buf, l4off + TCP_SEQ) : 0;
  const flags0 = tcp ? buf[l4off + TCP_FLAGS] : 0;
  const last = nseg - 1;
  const offs = out.offs;
  const lens = out.lens;
  let src = off + hdrs;
  for (let k = 0; k < nseg; k++) {
    const slot = first + k;
    const so = slot * slotSize + headroom;
    const chunk = k === last ? payload - k * mss : mss;
    const segLen = hdrs + chunk;
    const segL4 = l4hdr + chunk;
    copyBytes(buf, off, slab, so, hdrs);
    write16(slab, so + IPV4_TOTAL_LEN, segLen);
    write16(slab, so + IPV4_ID, (id0 + k) & 0xffff);
    ipv4FillChecksum(slab, so, ihl);
    const sl4 = so + ihl;
    if (tcp) {
      write32(slab, sl4 + TCP_SEQ, (seq0 + k * mss) >>> 0);
      let f = flags0;
      if (k !== last) f &= ~(TCP_FIN | TCP_PSH);
      if (k !== 0) f &= ~TCP_CWR;
      slab[sl4 + TCP_FLAGS] = f;
    } else {
      write16(slab, sl4 + UDP_LENGTH, segL4);
    }
    const paySum = copySum(buf, src, slab, sl4 + l4hdr, chunk);
    src += chunk;
    const at = sl4 + csumField;
    if (noChecksum) {
      write16(slab, at, 0);
    } else {
      write16(slab, at, partialApply(partial, csumDelta16(l4len, segL4)));
      const c = ~fold(onesSum(slab, sl4, l4hdr, paySum)) & 0xffff;
      write16(slab, at, c === 0 ? UDP_CHECKSUM_MANGLED_0 : c);
    }
    offs[slot] = so;
    lens[slot] = segLen;
  }
  out.count = first + nseg;
  return nseg;
}

// --- GRO -----------------------------------------------------------------------------------------

/** Default number of flows coalesced at once per batch (a linear scan: keep it small). */
export const GRO_MAX_FLOWS = 8;

/** TCP flags that make a segment stand alone (Linux tcp_gro_receive flushes on them). */
const GRO_REFUSE_FLAGS = TCP_SYN | TCP_FIN | TCP_RST | TCP_URG;

/**
 * Open super-packets ("heads") of coalesceTcp, in typed arrays: reuse one per worker. Counters
 * accumulate across calls (for metrics).
 */
export class TcpGroTable {
  readonly maxFlows: number;
  /** Batch index of the head packet, -1 = free. */
  readonly head: Int32Array;
  readonly saddr: Uint32Array;
  readonly daddr: Uint32Array;
  /** sport << 16 | dport. */
  readonly ports: Uint32Array;
  /** Current IP total length of the head (grows as payloads are appended). */
  readonly ipLen: Uint32Array;
  readonly nextSeq: Uint32Array;
  /** Payload length of the head's first segment: every merged segment but the last has exactly this. */
  readonly gsoSize: Uint32Array;
  readonly segs: Uint32Array;
  private victim = 0;
  /** Segments appended to a head (their slots set to length 0). */
  merged = 0;
  /** Heads written with a GSO vnet header (2 or more segments). */
  superPackets = 0;
  /** Packets dropped because their slot had no room for the vnet header in front (never with HEADROOM). */
  noHeadroom = 0;

  constructor(maxFlows = GRO_MAX_FLOWS) {
    if (!Number.isInteger(maxFlows) || maxFlows < 1) throw new RangeError('TcpGroTable maxFlows must be >= 1');
    this.maxFlows = maxFlows;
    this.head = new Int32Array(maxFlows).fill(-1);
    this.saddr = new Uint32Array(maxFlows);
    this.daddr = new Uint32Array(maxFlows);
    this.ports = new Uint32Array(maxFlows);
    this.ipLen = new Uint32Array(maxFlows);
    this.nextSeq = new Uint32Array(maxFlows);
    this.gsoSize = new Uint32Array(maxFlows);
    this.segs = new Uint32Array(maxFlows);
  }

  /** Round-robin victim when every entry is in use. */
  nextVictim(): number {
    const v = this.victim;
    this.victim = v + 1 === this.maxFlows ? 0 : v + 1;
    return v;
  }
}

/**
 * GRO over a batch, in place: packets 0..count-1 are IPv4 packets (lens 0 = dropped, skipped) in slots
 * of `slotSize` bytes. In-order TCP segments of one flow are merged into the slot of the flow's first
 * segment (its "head"), the merged ones get length 0. Afterwards EVERY remaining packet is prefixed
 * with a virtio_net_hdr (offs -= 10, lens += 10), ready for a TUN with IFF_VNET_HDR:
 * - a head with 2+ segments: NEEDS_CSUM, gso_type TCPV4 (| ECN when it carries CWR), gso_size = the
 *   first segment's payload length, hdr_len = IP + TCP header, csum_start = 20, csum_offset = 16, the IP
 *   length and checksum updated, and the TCP checksum field set to the partial pseudo-header sum with
 *   the super-packet's L4 length (what tcp_gso_segment expects, see partial.ts);
 * - anything else: an all-zero header (the packet is unchanged and keeps its own checksum).
 *
 * A segment is merged into its flow's head (same addresses and ports) only if it continues it exactly,
 * as Linux inet_gro_receive / tcp_gro_receive require: both have a 20-byte IP header (no options), the
 * same TOS, TTL and DF; without DF the IP id is the head's + segments so far; the same TCP header
 * length and option bytes, ack, window, and flags except PSH (CWR only on the head); no SYN/FIN/RST/URG;
 * seq equal to the head's next seq; payload > 0 and <= gso_size; a verified checksum
 * (`verifyChecksums`, default true: false only if the caller already verified them, since the kernel
 * trusts a NEEDS_CSUM packet and would otherwise launder a corrupt segment); and the result stays
 * <= 65535 bytes and inside the head's slot. A segment with PSH or shorter than gso_size is the last of
 * its super-packet. A packet of the flow that cannot be merged closes the head (so a flow's packets
 * keep their order) and, if it is a data segment itself, opens the next one. Up to t.maxFlows heads are
 * open at once (the oldest is closed to make room).
 *
 * Returns the number of packets merged away, or -1 (nothing touched) if slotSize is not a positive
 * integer or count exceeds offs/lens. Packets without 10 bytes of headroom in their slot are dropped
 * (lens 0, counted in t.noHeadroom).
 */
export function coalesceTcp(
  slab: Uint8Array,
  offs: Uint32Array,
  lens: Uint32Array,
  count: number,
  slotSize: number,
  t: TcpGroTable,
  verifyChecksums = true,
): number {
  if (!(slotSize > 0 && (slotSize | 0) === slotSize && count >= 0 && count <= offs.length && count <= lens.length)) {
    return -1;
  }
  const m = gsoMeta;
  const maxFlows = t.maxFlows;
  let absorbed = 0;
  for (let i = 0; i < count; i++) {
    const len = lens[i];
    if (len === 0) continue;
    const off = offs[i];
    if (off % slotSize < VNET_HDR_LEN) {
      lens[i] = 0;
      t.noHeadroom++;
      continue;
    }
    let r = parseIpv4(slab, off, len, m, false);
    if (r === DropReason.None && m.proto === IPPROTO_TCP) {
      if (verifyChecksums && fold(sumFast(slab, m.l4off, m.l4len, pseudoHeaderSum(m.src, m.dst, IPPROTO_TCP, m.l4len))) !== 0xffff) {
        r = DropReason.BadL4Checksum;
      }
      const ports = ((m.sport << 16) | m.dport) >>> 0;
      let fi = -1;
      for (let f = 0; f < maxFlows; f++) {
        if (t.head[f] >= 0 && t.ports[f] === ports && t.saddr[f] === m.src && t.daddr[f] === m.dst) {
          fi = f;
          break;
        }
      }
      const flags = m.tcpFlags;
      const candidate =
        r === DropReason.None &&
        m.ihl === IPV4_MIN_HEADER_LEN &&
        m.l4len > m.l4hdrLen &&
        (flags & GRO_REFUSE_FLAGS) === 0;
      if (fi >= 0) {
        if (candidate && tryMerge(slab, offs, lens, i, slotSize, t, fi, m)) {
          absorbed++;
          continue;
        }
        closeHead(slab, offs, lens, t, fi);
      }
      if (candidate && (flags & TCP_PSH) === 0) {
        openHead(slab, offs, lens, i, t, m, ports);
        continue;
      }
    }
    writeVnetHdrNone(slab, off - VNET_HDR_LEN);
    offs[i] = off - VNET_HDR_LEN;
    lens[i] = len + VNET_HDR_LEN;
  }
  for (let f = 0; f < maxFlows; f++) if (t.head[f] >= 0) closeHead(slab, offs, lens, t, f);
  t.merged += absorbed;
  return absorbed;
}

function openHead(
  slab: Uint8Array,
  offs: Uint32Array,
  lens: Uint32Array,
  i: number,
  t: TcpGroTable,
  m: PacketMeta,
  ports: number,
): void {
  let f = 0;
  while (f < t.maxFlows && t.head[f] >= 0) f++;
  if (f === t.maxFlows) {
    f = t.nextVictim();
    closeHead(slab, offs, lens, t, f);
  }
  const payload = m.l4len - m.l4hdrLen;
  t.head[f] = i;
  t.saddr[f] = m.src;
  t.daddr[f] = m.dst;
  t.ports[f] = ports;
  t.ipLen[f] = m.totalLen;
  t.nextSeq[f] = (read32(slab, m.l4off + TCP_SEQ) + payload) >>> 0;
  t.gsoSize[f] = payload;
  t.segs[f] = 1;
}

/** Appends the payload of packet i (parsed into m) to head f if it continues it; see coalesceTcp. */
function tryMerge(
  slab: Uint8Array,
  offs: Uint32Array,
  lens: Uint32Array,
  i: number,
  slotSize: number,
  t: TcpGroTable,
  f: number,
  m: PacketMeta,
): boolean {
  const ho = offs[t.head[f]];
  const hl4 = ho + IPV4_MIN_HEADER_LEN;
  const off = m.off;
  const l4 = m.l4off;
  const fragWord = read16(slab, ho + IPV4_FLAGS_FRAG);
  if (slab[ho + IPV4_TOS] !== m.tos || slab[ho + IPV4_TTL] !== m.ttl) return false;
  if (read16(slab, off + IPV4_FLAGS_FRAG) !== fragWord) return false;
  // RFC 6864: the id of an atomic (DF) datagram means nothing; otherwise it must count up, so that the
  // kernel's re-segmentation (id + k) restores it.
  if ((fragWord & IPV4_FLAG_DF) === 0 && ((read16(slab, ho + IPV4_ID) + t.segs[f]) & 0xffff) !== m.ipId) return false;
  const thl = m.l4hdrLen;
  if ((slab[hl4 + TCP_DATA_OFF] >>> 4) << 2 !== thl) return false;
  if (read32(slab, l4 + TCP_SEQ) !== t.nextSeq[f]) return false;
  if (read32(slab, hl4 + TCP_ACK_NUM) !== read32(slab, l4 + TCP_ACK_NUM)) return false;
  if (read16(slab, hl4 + TCP_WINDOW) !== read16(slab, l4 + TCP_WINDOW)) return false;
  const hf = slab[hl4 + TCP_FLAGS];
  const cf = m.tcpFlags;
  if ((cf & ~TCP_PSH) !== (hf & ~(TCP_PSH | TCP_CWR))) return false;
  for (let k = TCP_MIN_HEADER_LEN; k < thl; k++) if (slab[hl4 + k] !== slab[l4 + k]) return false;
  const payload = m.l4len - thl;
  const gsoSize = t.gsoSize[f];
  if (payload > gsoSize) return false;
  const ipLen = t.ipLen[f];
  const newLen = ipLen + payload;
  if (newLen > IPV4_MAX_TOTAL_LEN || ho + newLen > ho - (ho % slotSize) + slotSize || ho + newLen > slab.length) {
    return false;
  }
  const from = l4 + thl;
  slab.copyWithin(ho + ipLen, from, from + payload);
  t.ipLen[f] = newLen;
  t.segs[f]++;
  t.nextSeq[f] = (t.nextSeq[f] + payload) >>> 0;
  lens[i] = 0;
  if ((cf & TCP_PSH) !== 0) {
    slab[hl4 + TCP_FLAGS] = hf | TCP_PSH;
    closeHead(slab, offs, lens, t, f);
  } else if (payload < gsoSize) {
    closeHead(slab, offs, lens, t, f);
  }
  return true;
}

/** Finishes head f (see coalesceTcp) and frees its entry. */
function closeHead(slab: Uint8Array, offs: Uint32Array, lens: Uint32Array, t: TcpGroTable, f: number): void {
  const hi = t.head[f];
  const ho = offs[hi];
  const at = ho - VNET_HDR_LEN;
  if (t.segs[f] > 1) {
    const ipLen = t.ipLen[f];
    const hl4 = ho + IPV4_MIN_HEADER_LEN;
    write16(slab, ho + IPV4_TOTAL_LEN, ipLen);
    ipv4FillChecksum(slab, ho, IPV4_MIN_HEADER_LEN);
    const l4len = ipLen - IPV4_MIN_HEADER_LEN;
    write16(slab, hl4 + TCP_CHECKSUM, fold(pseudoHeaderSum(t.saddr[f], t.daddr[f], IPPROTO_TCP, l4len)));
    const thl = (slab[hl4 + TCP_DATA_OFF] >>> 4) << 2;
    const ecn = (slab[hl4 + TCP_FLAGS] & TCP_CWR) !== 0 ? VIRTIO_NET_HDR_GSO_ECN : 0;
    writeVnetHdrFields(
      slab, at, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 | ecn, IPV4_MIN_HEADER_LEN + thl,
      t.gsoSize[f], IPV4_MIN_HEADER_LEN, TCP_CHECKSUM,
    );
    lens[hi] = ipLen + VNET_HDR_LEN;
    t.superPackets++;
  } else {
    writeVnetHdrNone(slab, at);
    lens[hi] += VNET_HDR_LEN;
  }
  offs[hi] = at;
  t.head[f] = -1;
}
