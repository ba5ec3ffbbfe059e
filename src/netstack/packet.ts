/**
 * Hot-path packet handling: `parseIpv4` validates a packet once and fills a reusable `PacketMeta`
 * (the checked "view"); the rewrite functions then edit the bytes in place and keep every checksum
 * valid by RFC 1624 incremental update. Nothing here allocates, throws or uses try/catch.
 *
 * Field offsets live in ipv4.ts / tcp.ts / udp.ts / icmp.ts; no code here uses a literal offset.
 */
import { read16, read32, write16, write32 } from './bytes';
import { checksum, csumApply, csumDelta16, csumDelta32, fold, onesSum, onesSum20, pseudoHeaderSum } from './checksum';
import {
  ICMP_CHECKSUM,
  ICMP_CODE,
  ICMP_ERROR_QUOTE,
  ICMP_HEADER_LEN,
  ICMP_ID,
  ICMP_REDIRECT,
  ICMP_TYPE,
  icmpIsEcho,
  icmpIsError,
} from './icmp';
import {
  IPV4_CHECKSUM,
  IPV4_DST,
  IPV4_FLAG_DF,
  IPV4_FLAG_MF,
  IPV4_FLAGS_FRAG,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_ID,
  IPV4_MIN_HEADER_LEN,
  IPV4_PROTO,
  IPV4_SRC,
  IPV4_TOS,
  IPV4_TOTAL_LEN,
  IPV4_TTL,
  IPV4_VER_IHL,
  IPV4_VERSION,
} from './ipv4';
import { IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP } from './proto';
import { TCP_CHECKSUM, TCP_DATA_OFF, TCP_DST_PORT, TCP_FLAGS, TCP_MIN_HEADER_LEN, TCP_SRC_PORT } from './tcp';
import { UDP_CHECKSUM, UDP_CHECKSUM_MANGLED_0, UDP_DST_PORT, UDP_HEADER_LEN, UDP_LENGTH, UDP_SRC_PORT } from './udp';

/**
 * Why a packet is dropped. Codes index the drop counters; what leaves the process is the name
 * (DROP_REASON_NAMES, the metrics' `reason` label). Keep DROP_REASON_NAMES and DROP_REASON_COUNT in step.
 */
export const enum DropReason {
  None = 0,
  /** Fewer bytes than an IPv4 header, or (off, len) outside the buffer. */
  TooShort = 1,
  /** Version nibble is not 4. */
  NotIpv4 = 2,
  /** IHL < 5 or header longer than the packet. */
  BadIhl = 3,
  /** Total length < IHL, or longer than the bytes read (trailing bytes beyond it are fine). */
  BadTotalLength = 4,
  BadIpChecksum = 5,
  /** MF set or fragment offset != 0: kube-tun does not reassemble. */
  Fragment = 6,
  /** IP payload shorter than the fixed L4 header (TCP 20, UDP 8, ICMP 8). */
  TruncatedL4 = 7,
  /** TCP/UDP/ICMP checksum wrong (only when verification is requested). */
  BadL4Checksum = 8,
  /** Protocol other than TCP/UDP/ICMP/IPIP. The IP fields of PacketMeta are valid. */
  UnsupportedProto = 9,
  /** TCP data offset < 5 or beyond the IP payload. */
  BadTcpHeader = 10,
  /** ICMP error quoting fewer bytes than the inner IP header + 8. */
  IcmpTruncatedInner = 11,
  /** UDP length field < 8 or larger than the IP payload. */
  BadUdpLength = 12,
  /** ICMP error whose quoted header is not IPv4 or has IHL < 5. */
  IcmpBadInner = 13,
  /** decapIpip on a packet whose protocol is not 4. */
  NotIpip = 14,
  /** IPIP payload shorter than an IPv4 header or not IPv4. */
  IpipBadInner = 15,
  /** IPIP outer header marked CE over a Not-ECT inner packet (RFC 6040; Linux drops it). */
  IpipEcnError = 16,
}

/** Kebab-case names indexed by DropReason code. */
export const DROP_REASON_NAMES: readonly string[] = Object.freeze([
  'none',
  'too-short',
  'not-ipv4',
  'bad-ihl',
  'bad-total-length',
  'bad-ip-checksum',
  'fragment',
  'truncated-l4',
  'bad-l4-checksum',
  'unsupported-proto',
  'bad-tcp-header',
  'icmp-truncated-inner',
  'bad-udp-length',
  'icmp-bad-inner',
  'not-ipip',
  'ipip-bad-inner',
  'ipip-ecn-error',
]);

/** Number of DropReason codes (== DROP_REASON_NAMES.length); size counters arrays with it. */
export const DROP_REASON_COUNT = 17;

/**
 * Parsed facts about one IPv4 packet, filled by `parseIpv4`. Reuse one instance per worker; every
 * field is rewritten on each parse (fields that do not apply are 0 / false / -1), so nothing leaks
 * from the previous packet. Offsets are absolute offsets into the buffer passed to parseIpv4.
 */
export class PacketMeta {
  /** Start of the IPv4 header. */
  off = 0;
  /** Bytes available from `off` as passed to parseIpv4 (>= totalLen). */
  len = 0;
  /** IPv4 header length in bytes (IHL * 4). */
  ihl = 0;
  /** IPv4 total length field; the packet is buf[off .. off+totalLen). */
  totalLen = 0;
  proto = 0;
  src = 0;
  dst = 0;
  ttl = 0;
  tos = 0;
  ipId = 0;
  df = false;
  /** Start of the L4 header (for IPIP: start of the inner packet). */
  l4off = 0;
  /** totalLen - ihl. (For UDP the datagram may be shorter: see udpLen.) */
  l4len = 0;
  /** L4 header length in bytes: TCP data offset * 4, UDP 8, ICMP 8, otherwise 0. Payload = l4len - l4hdrLen. */
  l4hdrLen = 0;
  /** UDP: the UDP length field. */
  udpLen = 0;
  /**
   * TCP/UDP ports. ICMP echo request and reply: sport = identifier, dport = 0 (conntrack's ICMP tuple
   * (1, src, dst, id, 0) in both directions, as Linux keeps the id in src.u.icmp.id). Otherwise 0.
   */
  sport = 0;
  dport = 0;
  tcpFlags = 0;
  /** ICMP type/code, or -1 when proto is not ICMP. */
  icmpType = -1;
  icmpCode = -1;
  /** ICMP echo identifier (bytes 4-5 of the ICMP header for any ICMP type). */
  icmpId = 0;
  /** ICMP destination unreachable / source quench / time exceeded / parameter problem. */
  isIcmpError = false;
  // Quoted datagram of an ICMP error (valid only when isIcmpError):
  /** Start of the quoted IPv4 header (l4off + 8). */
  innerOff = 0;
  /** Quoted bytes available from innerOff to the end of the ICMP message. */
  innerLen = 0;
  innerIhl = 0;
  innerProto = 0;
  innerSrc = 0;
  innerDst = 0;
  /** Quoted TCP/UDP ports; quoted ICMP echo request/reply: sport = identifier, dport = 0. */
  innerSport = 0;
  innerDport = 0;
  innerL4off = 0;
  /** Type of a quoted ICMP message, else -1. */
  innerIcmpType = -1;
}

/**
 * Validates the IPv4 packet at buf[off .. off+len) and fills `m`. Returns DropReason.None (0) or why
 * the packet must be dropped. Never throws, never reads outside buf[off .. off+len).
 *
 * Always verifies the IP header checksum. `verifyL4Checksum` (default true, like Linux
 * `nf_conntrack_checksum=1`) also verifies the TCP/UDP/ICMP checksum (UDP checksum 0 = none). It does
 * not verify the checksum of the IPIP inner packet or of an ICMP error's quoted header.
 *
 * Accepts protocol 4 (IPIP): l4off/l4len then locate the inner packet (see decapIpip).
 */
export function parseIpv4(
  buf: Uint8Array,
  off: number,
  len: number,
  m: PacketMeta,
  verifyL4Checksum = true,
): DropReason {
  m.off = off;
  m.len = len;
  m.sport = 0;
  m.dport = 0;
  m.tcpFlags = 0;
  m.l4hdrLen = 0;
  m.udpLen = 0;
  m.icmpType = -1;
  m.icmpCode = -1;
  m.icmpId = 0;
  m.isIcmpError = false;
  m.innerOff = 0;
  m.innerLen = 0;
  m.innerIhl = 0;
  m.innerProto = 0;
  m.innerSrc = 0;
  m.innerDst = 0;
  m.innerSport = 0;
  m.innerDport = 0;
  m.innerL4off = 0;
  m.innerIcmpType = -1;
  m.ihl = 0;
  m.totalLen = 0;
  m.proto = 0;
  m.src = 0;
  m.dst = 0;
  m.ttl = 0;
  m.tos = 0;
  m.ipId = 0;
  m.df = false;
  m.l4off = 0;
  m.l4len = 0;

  if (!(off >= 0 && len >= IPV4_MIN_HEADER_LEN && off + len <= buf.length)) return DropReason.TooShort;
  const verIhl = buf[off + IPV4_VER_IHL];
  if (verIhl >>> 4 !== IPV4_VERSION) return DropReason.NotIpv4;
  const ihl = (verIhl & 0x0f) << 2;
  if (ihl < IPV4_MIN_HEADER_LEN || ihl > len) return DropReason.BadIhl;
  const totalLen = read16(buf, off + IPV4_TOTAL_LEN);
  if (totalLen < ihl || totalLen > len) return DropReason.BadTotalLength;
  const hsum = ihl === IPV4_MIN_HEADER_LEN ? onesSum20(buf, off) : onesSum(buf, off, ihl);
  if (fold(hsum) !== 0xffff) return DropReason.BadIpChecksum;

  const flagsFrag = read16(buf, off + IPV4_FLAGS_FRAG);
  const proto = buf[off + IPV4_PROTO];
  const src = read32(buf, off + IPV4_SRC);
  const dst = read32(buf, off + IPV4_DST);
  const l4off = off + ihl;
  const l4len = totalLen - ihl;
  m.ihl = ihl;
  m.totalLen = totalLen;
  m.proto = proto;
  m.src = src;
  m.dst = dst;
  m.ttl = buf[off + IPV4_TTL];
  m.tos = buf[off + IPV4_TOS];
  m.ipId = read16(buf, off + IPV4_ID);
  m.df = (flagsFrag & IPV4_FLAG_DF) !== 0;
  m.l4off = l4off;
  m.l4len = l4len;
  if ((flagsFrag & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) !== 0) return DropReason.Fragment;

  if (proto === IPPROTO_TCP) {
    if (l4len < TCP_MIN_HEADER_LEN) return DropReason.TruncatedL4;
    const thl = (buf[l4off + TCP_DATA_OFF] >>> 4) << 2;
    if (thl < TCP_MIN_HEADER_LEN || thl > l4len) return DropReason.BadTcpHeader;
    m.l4hdrLen = thl;
    m.sport = read16(buf, l4off + TCP_SRC_PORT);
    m.dport = read16(buf, l4off + TCP_DST_PORT);
    m.tcpFlags = buf[l4off + TCP_FLAGS];
    if (verifyL4Checksum && checksum(buf, l4off, l4len, pseudoHeaderSum(src, dst, proto, l4len)) !== 0) {
      return DropReason.BadL4Checksum;
    }
    return DropReason.None;
  }

  if (proto === IPPROTO_UDP) {
    if (l4len < UDP_HEADER_LEN) return DropReason.TruncatedL4;
    const ulen = read16(buf, l4off + UDP_LENGTH);
    // Linux udp_error/__udp4_lib_rcv: length < 8 or beyond the IP payload is invalid; shorter than
    // the IP payload is accepted (the excess is ignored).
    if (ulen < UDP_HEADER_LEN || ulen > l4len) return DropReason.BadUdpLength;
    m.udpLen = ulen;
    m.l4hdrLen = UDP_HEADER_LEN;
    m.sport = read16(buf, l4off + UDP_SRC_PORT);
    m.dport = read16(buf, l4off + UDP_DST_PORT);
    if (
      verifyL4Checksum &&
      read16(buf, l4off + UDP_CHECKSUM) !== 0 &&
      checksum(buf, l4off, ulen, pseudoHeaderSum(src, dst, proto, ulen)) !== 0
    ) {
      return DropReason.BadL4Checksum;
    }
    return DropReason.None;
  }

  if (proto === IPPROTO_ICMP) {
    if (l4len < ICMP_HEADER_LEN) return DropReason.TruncatedL4;
    const type = buf[l4off + ICMP_TYPE];
    m.icmpType = type;
    m.icmpCode = buf[l4off + ICMP_CODE];
    m.icmpId = read16(buf, l4off + ICMP_ID);
    m.l4hdrLen = ICMP_HEADER_LEN;
    if (verifyL4Checksum && checksum(buf, l4off, l4len) !== 0) return DropReason.BadL4Checksum;
    if (icmpIsEcho(type)) {
      m.sport = m.icmpId;
      return DropReason.None;
    }
    if (!icmpIsError(type)) return DropReason.None;
    return parseIcmpInner(buf, l4off + ICMP_ERROR_QUOTE, l4len - ICMP_ERROR_QUOTE, m);
  }

  if (proto === IPPROTO_IPIP) return DropReason.None;
  return DropReason.UnsupportedProto;
}

/** Parses the datagram quoted by an ICMP error (RFC 792: its IP header + at least 8 bytes). */
function parseIcmpInner(buf: Uint8Array, ioff: number, ilen: number, m: PacketMeta): DropReason {
  m.isIcmpError = true;
  m.innerOff = ioff;
  m.innerLen = ilen;
  if (ilen < IPV4_MIN_HEADER_LEN) return DropReason.IcmpTruncatedInner;
  const verIhl = buf[ioff + IPV4_VER_IHL];
  if (verIhl >>> 4 !== IPV4_VERSION) return DropReason.IcmpBadInner;
  const ihl = (verIhl & 0x0f) << 2;
  if (ihl < IPV4_MIN_HEADER_LEN) return DropReason.IcmpBadInner;
  if (ilen < ihl + 8) return DropReason.IcmpTruncatedInner;
  const proto = buf[ioff + IPV4_PROTO];
  const il4 = ioff + ihl;
  m.innerIhl = ihl;
  m.innerProto = proto;
  m.innerSrc = read32(buf, ioff + IPV4_SRC);
  m.innerDst = read32(buf, ioff + IPV4_DST);
  m.innerL4off = il4;
  // A quoted non-first fragment carries no L4 header: leave the ports 0.
  if ((read16(buf, ioff + IPV4_FLAGS_FRAG) & IPV4_FRAG_OFFSET_MASK) !== 0) return DropReason.None;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    // TCP and UDP both start with source port, destination port.
    m.innerSport = read16(buf, il4 + TCP_SRC_PORT);
    m.innerDport = read16(buf, il4 + TCP_DST_PORT);
  } else if (proto === IPPROTO_ICMP) {
    const type = buf[il4 + ICMP_TYPE];
    m.innerIcmpType = type;
    if (icmpIsEcho(type)) m.innerSport = read16(buf, il4 + ICMP_ID);
  }
  return DropReason.None;
}

// --- rewrites ---------------------------------------------------------------------------------

/**
 * Applies an accumulated checksum delta to the L4 checksum field of the packet at `l4off` with
 * protocol `proto`. `pseudoDelta` is the part that affects the TCP/UDP pseudo header (addresses; not
 * applied to ICMP), `dataDelta` the part inside the L4 bytes (ports, ICMP id).
 * UDP: checksum 0 (none) stays 0; a result of 0 is written as 0xFFFF.
 */
function applyL4Delta(
  buf: Uint8Array,
  proto: number,
  l4off: number,
  l4len: number,
  pseudoDelta: number,
  dataDelta: number,
): void {
  if (proto === IPPROTO_TCP) {
    const at = l4off + TCP_CHECKSUM;
    write16(buf, at, csumApply(read16(buf, at), pseudoDelta + dataDelta));
  } else if (proto === IPPROTO_UDP) {
    const at = l4off + UDP_CHECKSUM;
    const old = read16(buf, at);
    if (old === 0) return;
    const c = csumApply(old, pseudoDelta + dataDelta);
    write16(buf, at, c === 0 ? UDP_CHECKSUM_MANGLED_0 : c);
  } else if (proto === IPPROTO_ICMP) {
    if (dataDelta === 0) return;
    const at = l4off + ICMP_CHECKSUM;
    let c = csumApply(read16(buf, at), dataDelta);
    // RFC 1624's one exception: if every covered word is zero (echo reply, id 0, seq 0, no data) the
    // correct checksum is 0xFFFF, while eqn. 3 yields 0x0000 (and so does Linux). Only checked when
    // the result is 0, i.e. for 1 in 65536 rewrites.
    if (c === 0 && allZeroExceptChecksum(buf, l4off, l4len)) c = 0xffff;
    write16(buf, at, c);
  }
}

/** True if the ICMP message at buf[off .. off+len) is zero apart from its checksum field. */
function allZeroExceptChecksum(buf: Uint8Array, off: number, len: number): boolean {
  for (let i = 0; i < len; i++) {
    if (buf[off + i] !== 0 && i !== ICMP_CHECKSUM && i !== ICMP_CHECKSUM + 1) return false;
  }
  return true;
}

/**
 * Port field offset (relative to the L4 header) of the "port" a rewrite changes, or -1.
 * TCP/UDP: source or destination port. ICMP echo request/reply: the identifier, which is the source
 * "port" (PacketMeta.sport); an echo's destination "port" is always 0. Other ICMP: none.
 */
function portField(proto: number, icmpType: number, isSrc: boolean): number {
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) return isSrc ? TCP_SRC_PORT : TCP_DST_PORT;
  if (proto === IPPROTO_ICMP && isSrc && icmpIsEcho(icmpType)) return ICMP_ID;
  return -1;
}

/**
 * SNAT-style rewrite: source address := addr, source port := port. Updates the IP header checksum
 * and the L4 checksum incrementally (RFC 1624), and m.src / m.sport (m.icmpId).
 *
 * - TCP/UDP: `port` is the source port (UDP checksum 0 stays 0, computed 0 becomes 0xFFFF).
 * - ICMP echo request/reply: `port` is the echo identifier (= m.sport; the ICMP checksum is updated,
 *   it has no pseudo header).
 * - ICMP errors and other ICMP: `port` is ignored (only the address changes; ICMP's checksum does not
 *   cover the IP addresses). Use rewriteIcmpInner* for the quoted datagram.
 * - IPIP / other protocols: address only.
 * Requires a packet parsed OK by parseIpv4 into `m`.
 */
export function rewriteSrc(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewriteAddrPort(buf, m, addr >>> 0, port, true);
}

/**
 * DNAT-style rewrite: destination address := addr, destination port := port. Like rewriteSrc; for
 * ICMP `port` is ignored (an echo's destination "port" is 0: change its id with rewriteSrc or
 * rewriteIcmpId).
 */
export function rewriteDst(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewriteAddrPort(buf, m, addr >>> 0, port, false);
}

/** Highest ICMP type Linux knows (NR_ICMP_TYPES); unknown types are never answered with an error. */
const NR_ICMP_TYPES = 18;

function rewriteAddrPort(buf: Uint8Array, m: PacketMeta, addr: number, port: number, isSrc: boolean): void {
  const off = m.off;
  const proto = m.proto;
  const old = isSrc ? m.src : m.dst;
  let pseudoDelta = 0;
  if (old !== addr) {
    write32(buf, off + (isSrc ? IPV4_SRC : IPV4_DST), addr);
    pseudoDelta = csumDelta32(old, addr);
    const at = off + IPV4_CHECKSUM;
    write16(buf, at, csumApply(read16(buf, at), pseudoDelta));
    if (isSrc) m.src = addr;
    else m.dst = addr;
  }
  let dataDelta = 0;
  const pf = portField(proto, m.icmpType, isSrc);
  if (pf >= 0) {
    port &= 0xffff;
    const oldPort = isSrc ? m.sport : m.dport;
    if (oldPort !== port) {
      write16(buf, m.l4off + pf, port);
      dataDelta = csumDelta16(oldPort, port);
      if (isSrc) m.sport = port;
      else m.dport = port;
      if (proto === IPPROTO_ICMP) m.icmpId = port;
    }
  }
  if (pseudoDelta !== 0 || dataDelta !== 0) applyL4Delta(buf, proto, m.l4off, m.l4len, pseudoDelta, dataDelta);
}

/** Sets the identifier of an ICMP echo request/reply (no-op for anything else). */
export function rewriteIcmpId(buf: Uint8Array, m: PacketMeta, id: number): void {
  if (m.proto !== IPPROTO_ICMP || !icmpIsEcho(m.icmpType)) return;
  rewriteAddrPort(buf, m, m.src, id, true);
}

/**
 * Un-NAT of the datagram quoted in an ICMP error: sets the quoted header's source address to `addr`
 * and its source port to `port` (quoted TCP/UDP: the port; quoted echo request/reply: its identifier;
 * ignored for other quoted ICMP).
 * Incrementally fixes: the quoted IP header checksum; the quoted TCP checksum if the quote includes it
 * (>= 18 bytes of TCP), the quoted UDP checksum unless 0, the quoted ICMP echo checksum; and the outer
 * ICMP checksum, which covers all of these bytes (Linux recomputes it; the result is identical).
 * Updates m.innerSrc / m.innerSport. Requires `m.isIcmpError` from a successful parse.
 */
export function rewriteIcmpInnerSrc(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewriteInner(buf, m, addr >>> 0, port, true);
}

/** Like rewriteIcmpInnerSrc for the quoted destination address/port (port ignored for quoted ICMP). */
export function rewriteIcmpInnerDst(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewriteInner(buf, m, addr >>> 0, port, false);
}

function rewriteInner(buf: Uint8Array, m: PacketMeta, addr: number, port: number, isSrc: boolean): void {
  if (!m.isIcmpError || m.innerIhl === 0) return;
  const ioff = m.innerOff;
  const iproto = m.innerProto;
  const il4 = m.innerL4off;
  const quoteEnd = ioff + m.innerLen;
  let outerDelta = 0; // change of the words covered by the outer ICMP checksum

  const old = isSrc ? m.innerSrc : m.innerDst;
  let addrDelta = 0;
  if (old !== addr) {
    write32(buf, ioff + (isSrc ? IPV4_SRC : IPV4_DST), addr);
    addrDelta = csumDelta32(old, addr);
    const at = ioff + IPV4_CHECKSUM;
    const oldCsum = read16(buf, at);
    const newCsum = csumApply(oldCsum, addrDelta);
    write16(buf, at, newCsum);
    outerDelta += addrDelta + csumDelta16(oldCsum, newCsum);
    if (isSrc) m.innerSrc = addr;
    else m.innerDst = addr;
  }

  let portDelta = 0;
  const innerFirstFrag = (read16(buf, ioff + IPV4_FLAGS_FRAG) & IPV4_FRAG_OFFSET_MASK) === 0;
  const pf = innerFirstFrag ? portField(iproto, m.innerIcmpType, isSrc) : -1;
  if (pf >= 0) {
    port &= 0xffff;
    const oldPort = isSrc ? m.innerSport : m.innerDport;
    if (oldPort !== port) {
      write16(buf, il4 + pf, port);
      portDelta = csumDelta16(oldPort, port);
      outerDelta += portDelta;
      if (isSrc) m.innerSport = port;
      else m.innerDport = port;
    }
  }

  // The quoted L4 checksum, where it is inside the quote and applies.
  if (innerFirstFrag && (addrDelta !== 0 || portDelta !== 0)) {
    let at = -1;
    let delta = 0;
    if (iproto === IPPROTO_TCP) {
      if (il4 + TCP_CHECKSUM + 2 <= quoteEnd) {
        at = il4 + TCP_CHECKSUM;
        delta = addrDelta + portDelta;
      }
    } else if (iproto === IPPROTO_UDP) {
      at = il4 + UDP_CHECKSUM; // always inside: the parse required IHL + 8 quoted bytes
      delta = addrDelta + portDelta;
    } else if (iproto === IPPROTO_ICMP) {
      at = il4 + ICMP_CHECKSUM;
      delta = portDelta; // no pseudo header
    }
    if (at >= 0 && delta !== 0) {
      const oldCsum = read16(buf, at);
      if (!(iproto === IPPROTO_UDP && oldCsum === 0)) {
        let newCsum = csumApply(oldCsum, delta);
        if (newCsum === 0) {
          if (iproto === IPPROTO_UDP) newCsum = UDP_CHECKSUM_MANGLED_0;
          else if (iproto === IPPROTO_ICMP) {
            // The all-zero echo corner case (see applyL4Delta), when the whole message is quoted.
            const msgLen = read16(buf, ioff + IPV4_TOTAL_LEN) - m.innerIhl;
            if (msgLen >= ICMP_HEADER_LEN && il4 + msgLen <= quoteEnd && allZeroExceptChecksum(buf, il4, msgLen)) {
              newCsum = 0xffff;
            }
          }
        }
        write16(buf, at, newCsum);
        outerDelta += csumDelta16(oldCsum, newCsum);
      }
    }
  }

  if (outerDelta !== 0) {
    const at = m.l4off + ICMP_CHECKSUM;
    write16(buf, at, csumApply(read16(buf, at), outerDelta));
  }
}

/**
 * RFC 1122 3.2.2 / Linux icmp_send policy for a packet parsed into `m`: never answer an ICMP error
 * with an ICMP error, nor a packet from an unspecified/multicast/broadcast/loopback source or to a
 * multicast/limited-broadcast destination. (Rate limiting is the caller's job.)
 */
export function mayReplyWithIcmpError(m: PacketMeta): boolean {
  if (m.isIcmpError) return false;
  if (m.proto === IPPROTO_ICMP && (m.icmpType === ICMP_REDIRECT || m.icmpType > NR_ICMP_TYPES)) return false;
  const src = m.src;
  const dst = m.dst;
  if (src === 0 || src === 0xffffffff || src >>> 28 === 0xe || src >>> 24 === 127) return false;
  if (dst === 0xffffffff || dst >>> 28 === 0xe) return false;
  return true;
}

/**
 * Recomputes the L4 checksum of a parsed packet from scratch (tooling and tests; the hot path uses the
 * incremental rewrites). UDP: 0 becomes 0xFFFF. No-op for other protocols.
 */
export function fillL4Checksum(buf: Uint8Array, m: PacketMeta): void {
  const l4off = m.l4off;
  if (m.proto === IPPROTO_TCP) {
    write16(buf, l4off + TCP_CHECKSUM, 0);
    write16(buf, l4off + TCP_CHECKSUM, checksum(buf, l4off, m.l4len, pseudoHeaderSum(m.src, m.dst, m.proto, m.l4len)));
  } else if (m.proto === IPPROTO_UDP) {
    const ulen = m.udpLen;
    write16(buf, l4off + UDP_CHECKSUM, 0);
    const c = checksum(buf, l4off, ulen, pseudoHeaderSum(m.src, m.dst, m.proto, ulen));
    write16(buf, l4off + UDP_CHECKSUM, c === 0 ? UDP_CHECKSUM_MANGLED_0 : c);
  } else if (m.proto === IPPROTO_ICMP) {
    write16(buf, l4off + ICMP_CHECKSUM, 0);
    write16(buf, l4off + ICMP_CHECKSUM, checksum(buf, l4off, m.l4len));
  }
}
