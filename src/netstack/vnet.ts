/**
 * struct virtio_net_hdr (include/uapi/linux/virtio_net.h): the 10-byte header a TUN opened with
 * IFF_VNET_HDR (and TUNSETVNETHDRSZ 10) puts in front of every packet it reads, and expects in front of
 * every packet written to it. All fields are LITTLE-endian (virtio 1.0 / a little-endian host; TUN is
 * native-endian and kube-tun runs on x86-64 and arm64 only, both little-endian).
 *
 * ```
 * 0 FLAGS(8)  1 GSO_TYPE(8)  2 HDR_LEN(16 LE)  4 GSO_SIZE(16 LE)  6 CSUM_START(16 LE)  8 CSUM_OFFSET(16 LE)
 * ```
 * - flags NEEDS_CSUM: the packet is CHECKSUM_PARTIAL. The L4 checksum field at csum_start+csum_offset
 *   holds only the folded, NON-complemented pseudo-header sum; whoever sends it on must sum the bytes
 *   from csum_start to the end and store the complement there (see vnetFinishChecksum).
 * - flags DATA_VALID: (written to the TUN) the checksum was verified: the kernel may skip it.
 * - gso_type != NONE: a super-packet of up to 64 KiB that the kernel (or we, in gso.ts) cut into
 *   gso_size-byte payload segments. ECN (0x80) is or-ed in when the first segment carries CWR.
 * - hdr_len: length of the IP + L4 headers. A hint only: Linux sets it to the whole linear part of a
 *   forwarded skb (wireguard-go's note in tcp_offload_linux.go), so nothing here relies on it beyond a
 *   bounds check; the real header lengths come from the packet.
 * - csum_start / csum_offset are relative to the start of the IP packet (IFF_TUN: no Ethernet header).
 *
 * Two levels, as for every netstack codec: `VnetHdr` is a reusable object that `readVnetHdr` fills and
 * `writeVnetHdr` emits (allocation-free, the hot path); `VnetHdrRepr` with parse/emit is for tests and
 * tooling. `vnetCheck` validates a header against the packet it describes and returns a GsoReason.
 */
import { read16, write16 } from './bytes';
import { fold, onesSum } from './checksum';
import { PacketMeta } from './packet';
import { IPPROTO_TCP, IPPROTO_UDP } from './proto';
import { TCP_CHECKSUM } from './tcp';
import { UDP_CHECKSUM, UDP_CHECKSUM_MANGLED_0 } from './udp';

export const VNET_HDR_LEN = 10;

/** Field offsets inside the header. */
export const VNET_FLAGS = 0;
export const VNET_GSO_TYPE = 1;
export const VNET_HDR_LEN_FIELD = 2;
export const VNET_GSO_SIZE = 4;
export const VNET_CSUM_START = 6;
export const VNET_CSUM_OFFSET = 8;

/** flags bits. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** Every flag bit this codec knows; a header with any other bit is refused (GsoReason.BadFlags). */
export const VIRTIO_NET_HDR_F_KNOWN = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;

/** gso_type values (low 7 bits) and the ECN bit. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** UFO (IP fragmentation of a big UDP datagram): deprecated, never enabled by kube-tun, refused. */
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** USO: UDP segmentation into gso_size-byte datagrams (Linux 6.2+, TUN_F_USO4). */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/**
 * Why a vnet header / super-packet is refused by vnetCheck, the partial-checksum rewrites, segmentTcp
 * or segmentUdp. Append only; keep GSO_REASON_NAMES in step. Functions that return a count return
 * `-reason` on failure.
 */
export const enum GsoReason {
  None = 0,
  /** (off, len) outside the buffer, or fewer bytes than a vnet header. */
  TooShort = 1,
  /** A flags bit other than NEEDS_CSUM / DATA_VALID. */
  BadFlags = 2,
  /** Unknown gso_type, UFO, TCPv6 (kube-tun is IPv4), or the ECN bit on a non-TCP type. */
  BadGsoType = 3,
  /** gso_type TCPV4 on a non-TCP packet, UDP_L4 on a non-UDP packet (or the wrong segment function). */
  GsoProtoMismatch = 4,
  /** gso_type set with gso_size 0. */
  GsoSizeZero = 5,
  /** gso_type set without NEEDS_CSUM (the kernel never does that; we could not finish the checksum). */
  GsoNoCsum = 6,
  /** NEEDS_CSUM with csum_start + csum_offset + 2 beyond the packet, or (TCP/UDP) not the L4 header. */
  BadCsumStart = 7,
  /** NEEDS_CSUM on TCP/UDP with csum_offset other than the protocol's checksum field. */
  BadCsumOffset = 8,
  /** hdr_len longer than the packet. */
  BadHdrLen = 9,
  /** The IPv4 packet itself is invalid (parseIpv4 refused it) or, for USO, UDP length != IP payload. */
  BadPacket = 10,
  /** The output batch has too few free slots, or a segment does not fit a slot. */
  NoRoom = 11,
  /** Segment size < 1, or headers + one segment longer than an IPv4 packet can be. */
  BadMss = 12,
  /** The source packet overlaps the output slots. */
  Overlap = 13,
}

/** Kebab-case names indexed by GsoReason code (metrics labels). */
export const GSO_REASON_NAMES: readonly string[] = Object.freeze([
  'none',
  'too-short',
  'bad-flags',
  'bad-gso-type',
  'gso-proto-mismatch',
  'gso-size-zero',
  'gso-no-csum',
  'bad-csum-start',
  'bad-csum-offset',
  'bad-hdr-len',
  'bad-packet',
  'no-room',
  'bad-mss',
  'overlap',
]);

/** Number of GsoReason codes (== GSO_REASON_NAMES.length). */
export const GSO_REASON_COUNT = 14;

/** A decoded virtio_net_hdr. Reuse one instance per worker; readVnetHdr overwrites every field. */
export class VnetHdr {
  flags = 0;
  gsoType = 0;
  hdrLen = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;
}

function read16le(buf: Uint8Array, at: number): number {
  return buf[at] | (buf[at + 1] << 8);
}

function write16le(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v & 0xff;
  buf[at + 1] = (v >>> 8) & 0xff;
}

/** Fills `h` from the 10 bytes at buf[off]. Returns false (h untouched) if they are not all inside buf. */
export function readVnetHdr(buf: Uint8Array, off: number, h: VnetHdr): boolean {
  if (!(off >= 0 && off + VNET_HDR_LEN <= buf.length)) return false;
  h.flags = buf[off + VNET_FLAGS];
  h.gsoType = buf[off + VNET_GSO_TYPE];
  h.hdrLen = read16le(buf, off + VNET_HDR_LEN_FIELD);
  h.gsoSize = read16le(buf, off + VNET_GSO_SIZE);
  h.csumStart = read16le(buf, off + VNET_CSUM_START);
  h.csumOffset = read16le(buf, off + VNET_CSUM_OFFSET);
  return true;
}

/** Writes the 10 header bytes at buf[off] (the caller proved they fit: e.g. the packet's headroom). */
export function writeVnetHdrFields(
  buf: Uint8Array,
  off: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  buf[off + VNET_FLAGS] = flags & 0xff;
  buf[off + VNET_GSO_TYPE] = gsoType & 0xff;
  write16le(buf, off + VNET_HDR_LEN_FIELD, hdrLen);
  write16le(buf, off + VNET_GSO_SIZE, gsoSize);
  write16le(buf, off + VNET_CSUM_START, csumStart);
  write16le(buf, off + VNET_CSUM_OFFSET, csumOffset);
}

/** Writes `h` at buf[off] (see writeVnetHdrFields). */
export function writeVnetHdr(buf: Uint8Array, off: number, h: VnetHdr): void {
  writeVnetHdrFields(buf, off, h.flags, h.gsoType, h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset);
}

/** Writes an all-zero header (no offload: a plain packet with a complete checksum). */
export function writeVnetHdrNone(buf: Uint8Array, off: number): void {
  writeVnetHdrFields(buf, off, 0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0);
}

/** Offset of the L4 checksum field relative to the L4 header, or -1 for protocols without one we know. */
export function l4ChecksumField(proto: number): number {
  if (proto === IPPROTO_TCP) return TCP_CHECKSUM;
  if (proto === IPPROTO_UDP) return UDP_CHECKSUM;
  return -1;
}

/**
 * Validates `h` against the IPv4 packet described by `m` (parsed OK by parseIpv4, with
 * verifyL4Checksum false when NEEDS_CSUM is set: the field then holds a partial sum). Never throws.
 *
 * - flags: only NEEDS_CSUM / DATA_VALID.
 * - NEEDS_CSUM: csum_start + csum_offset + 2 <= total length; for TCP/UDP csum_start must be the L4
 *   header and csum_offset the protocol's checksum field (the partial-checksum NAT relies on it).
 * - hdr_len <= total length (otherwise a hint, see the file comment).
 * - gso_type: NONE (no ECN bit), TCPV4 on TCP, UDP_L4 on UDP; with NEEDS_CSUM and gso_size > 0.
 */
export function vnetCheck(h: VnetHdr, m: PacketMeta): GsoReason {
  const flags = h.flags;
  if ((flags & ~VIRTIO_NET_HDR_F_KNOWN) !== 0) return GsoReason.BadFlags;
  const total = m.totalLen;
  const needsCsum = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  if (needsCsum) {
    if (h.csumStart + h.csumOffset + 2 > total) return GsoReason.BadCsumStart;
    const field = l4ChecksumField(m.proto);
    if (field >= 0) {
      if (h.csumStart !== m.ihl) return GsoReason.BadCsumStart;
      if (h.csumOffset !== field) return GsoReason.BadCsumOffset;
    }
  }
  if (h.hdrLen > total) return GsoReason.BadHdrLen;
  const type = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  const ecn = (h.gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0;
  if (type === VIRTIO_NET_HDR_GSO_NONE) return ecn ? GsoReason.BadGsoType : GsoReason.None;
  if (type === VIRTIO_NET_HDR_GSO_TCPV4) {
    if (m.proto !== IPPROTO_TCP) return GsoReason.GsoProtoMismatch;
  } else if (type === VIRTIO_NET_HDR_GSO_UDP_L4) {
    if (ecn) return GsoReason.BadGsoType;
    if (m.proto !== IPPROTO_UDP) return GsoReason.GsoProtoMismatch;
  } else {
    return GsoReason.BadGsoType;
  }
  if (!needsCsum) return GsoReason.GsoNoCsum;
  if (h.gsoSize === 0) return GsoReason.GsoSizeZero;
  return GsoReason.None;
}

/**
 * Finishes a NEEDS_CSUM packet in software, as Linux skb_checksum_help does: sums the bytes from
 * csum_start to the end of the packet (the checksum field included: it holds the pseudo-header sum) and
 * stores the complement in the field; a result of 0 is stored as 0xFFFF (CSUM_MANGLED_0: for UDP 0
 * would mean "no checksum"; for TCP both verify). Use it for a non-GSO packet that leaves through a path
 * without checksum offload (the IPIP raw socket). The packet is buf[off .. off+totalLen). Returns false,
 * writing nothing, if the flag is not set or the field is not inside the packet. Never throws.
 */
export function vnetFinishChecksum(buf: Uint8Array, off: number, totalLen: number, h: VnetHdr): boolean {
  if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return false;
  const start = h.csumStart;
  if (!(off >= 0 && off + totalLen <= buf.length && start + h.csumOffset + 2 <= totalLen)) return false;
  const c = ~fold(onesSum(buf, off + start, totalLen - start)) & 0xffff;
  write16(buf, off + start + h.csumOffset, c === 0 ? UDP_CHECKSUM_MANGLED_0 : c);
  return true;
}

/** The 16-bit value in the checksum field a NEEDS_CSUM header points at (caller validated it). */
export function vnetPartialField(buf: Uint8Array, off: number, h: VnetHdr): number {
  return read16(buf, off + h.csumStart + h.csumOffset);
}

// --- Repr (tests and tooling: allocates, throws) -------------------------------------------------

export interface VnetHdrRepr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function parseVnetHdrRepr(buf: Uint8Array, off = 0): VnetHdrRepr {
  const h = new VnetHdr();
  if (!readVnetHdr(buf, off, h)) throw new Error(`vnet header: ${VNET_HDR_LEN} bytes at ${off} outside buffer of ${buf.length}`);
  return { flags: h.flags, gsoType: h.gsoType, hdrLen: h.hdrLen, gsoSize: h.gsoSize, csumStart: h.csumStart, csumOffset: h.csumOffset };
}

export function emitVnetHdrRepr(r: VnetHdrRepr, buf: Uint8Array, off = 0): void {
  if (!(off >= 0 && off + VNET_HDR_LEN <= buf.length)) throw new Error(`vnet header: no room at ${off} in buffer of ${buf.length}`);
  writeVnetHdrFields(buf, off, r.flags, r.gsoType, r.hdrLen, r.gsoSize, r.csumStart, r.csumOffset);
}
