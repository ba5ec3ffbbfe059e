/**
 * ICMPv4 (RFC 792) field layout and error-message construction.
 *
 * ```
 * 0 TYPE(8)  1 CODE(8)  2 CHECKSUM(16)
 * 4 rest of header (32): echo: ID(16) at 4, SEQ(16) at 6; dest-unreachable/frag-needed: unused(16) at 4,
 *   NEXT_HOP_MTU(16) at 6 (RFC 1191); param-problem: POINTER(8) at 4
 * 8 data: echo payload, or for errors the quoted original IP header + leading bytes of its payload
 * ```
 * The checksum covers the whole ICMP message and has no pseudo header.
 */
import { read16, read32, write16, write32 } from './bytes';
import { checksum } from './checksum';
import {
  IPV4_MIN_HEADER_LEN,
  IPV4_SRC,
  IPV4_TOS,
  IPV4_TOTAL_LEN,
  ipv4HeaderLen,
  writeIpv4Header,
} from './ipv4';
import { IPPROTO_ICMP } from './proto';

export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CHECKSUM = 2;
export const ICMP_ID = 4;
export const ICMP_SEQ = 6;
export const ICMP_REST = 4;
export const ICMP_NEXT_HOP_MTU = 6;
export const ICMP_PARAM_POINTER = 4;
export const ICMP_HEADER_LEN = 8;
/** Offset of the quoted original datagram in an ICMP error message. */
export const ICMP_ERROR_QUOTE = 8;

/** ICMP types. */
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAM_PROBLEM = 12;

/** Codes of ICMP_DEST_UNREACH. */
export const ICMP_NET_UNREACH = 0;
export const ICMP_HOST_UNREACH = 1;
export const ICMP_PROTO_UNREACH = 2;
export const ICMP_PORT_UNREACH = 3;
export const ICMP_FRAG_NEEDED = 4;
export const ICMP_NET_PROHIBITED = 9;
export const ICMP_HOST_PROHIBITED = 10;
export const ICMP_ADMIN_PROHIBITED = 13;

/** Codes of ICMP_TIME_EXCEEDED. */
export const ICMP_EXC_TTL = 0;
export const ICMP_EXC_FRAGTIME = 1;

/**
 * Maximum size of a generated ICMP error datagram. RFC 1812 4.3.2.3 / Linux `icmp_send`: quote as
 * much of the original as fits in 576 bytes (RFC 792's minimum is the IP header + 8 bytes).
 */
export const ICMP_ERROR_MAX_TOTAL = 576;

/** Linux `icmp_send`: errors carry precedence "internet control" plus the original TOS bits. */
const IPTOS_PREC_INTERNETCONTROL = 0xc0;
const IPTOS_TOS_MASK = 0x1e;
const ICMP_ERROR_TTL = 64;
/** Size of IPv4 header + ICMP header in front of the quote. */
const ICMP_ERROR_OVERHEAD = IPV4_MIN_HEADER_LEN + ICMP_HEADER_LEN;

/**
 * True for the ICMP types that quote an offending datagram and that conntrack relates to an existing
 * flow (Linux `icmp_is_err`: destination unreachable, source quench, time exceeded, parameter problem).
 */
export function icmpIsError(type: number): boolean {
  return (
    type === ICMP_DEST_UNREACH ||
    type === ICMP_SOURCE_QUENCH ||
    type === ICMP_TIME_EXCEEDED ||
    type === ICMP_PARAM_PROBLEM
  );
}

/** True for echo request/reply, whose identifier acts as the flow's "port". */
export function icmpIsEcho(type: number): boolean {
  return type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY;
}

/**
 * Writes a complete IPv4 + ICMP error datagram at `out[outOff]` about the original packet at
 * `origBuf[origOff .. origOff+origLen)` and returns its length; 0 (nothing sent) if the original is
 * shorter than an IPv4 header or if `out` / `maxTotal` leave no room for the RFC 792 minimum quote
 * (original IP header + 8 bytes).
 *
 * - IP: src = `srcAddr`, dst = the original's source, TTL 64, TOS = 0xc0 | (orig TOS & 0x1e), no DF,
 *   ID = `ipId`, valid checksum.
 * - ICMP: `type`, `code`, 32-bit `rest` at offset 4, then the quote: the original datagram from its IP
 *   header on, as much as fits in `maxTotal` bytes (default 576, as Linux) and in `out`; never beyond the
 *   original's total length. Valid checksum.
 *
 * The caller applies policy (rate limit, `mayReplyWithIcmpError`). `out` and the original may be the
 * same buffer; the regions may overlap (the quote is moved with copyWithin).
 * No allocation.
 */
export function writeIcmpError(
  out: Uint8Array,
  outOff: number,
  origBuf: Uint8Array,
  origOff: number,
  origLen: number,
  srcAddr: number,
  type: number,
  code: number,
  rest: number,
  ipId = 0,
  maxTotal = ICMP_ERROR_MAX_TOTAL,
): number {
  if (origLen < IPV4_MIN_HEADER_LEN || origOff < 0 || origOff + origLen > origBuf.length) return 0;
  const room = out.length - outOff;
  if (outOff < 0 || room < ICMP_ERROR_OVERHEAD || maxTotal < ICMP_ERROR_OVERHEAD) return 0;
  let quoteLen = origLen;
  const origIhl = ipv4HeaderLen(origBuf, origOff);
  const origTotal = read16(origBuf, origOff + IPV4_TOTAL_LEN);
  if (origTotal >= origIhl && origTotal < quoteLen) quoteLen = origTotal;
  // RFC 792: the quote must hold at least the IP header + 64 bits of data (or all there is).
  const minQuote = quoteLen < origIhl + 8 ? quoteLen : origIhl + 8;
  if (quoteLen > maxTotal - ICMP_ERROR_OVERHEAD) quoteLen = maxTotal - ICMP_ERROR_OVERHEAD;
  if (quoteLen > room - ICMP_ERROR_OVERHEAD) quoteLen = room - ICMP_ERROR_OVERHEAD;
  if (quoteLen < minQuote) return 0;

  // Read what we need from the original before the quote move can overwrite it (same buffer case).
  const origSrc = read32(origBuf, origOff + IPV4_SRC);
  const tos = IPTOS_PREC_INTERNETCONTROL | (origBuf[origOff + IPV4_TOS] & IPTOS_TOS_MASK);

  const icmpOff = outOff + IPV4_MIN_HEADER_LEN;
  const quoteOff = icmpOff + ICMP_ERROR_QUOTE;
  if (out === origBuf) {
    out.copyWithin(quoteOff, origOff, origOff + quoteLen);
  } else {
    for (let i = 0; i < quoteLen; i++) out[quoteOff + i] = origBuf[origOff + i];
  }
  const icmpLen = ICMP_HEADER_LEN + quoteLen;
  out[icmpOff + ICMP_TYPE] = type;
  out[icmpOff + ICMP_CODE] = code;
  write16(out, icmpOff + ICMP_CHECKSUM, 0);
  write32(out, icmpOff + ICMP_REST, rest);
  write16(out, icmpOff + ICMP_CHECKSUM, checksum(out, icmpOff, icmpLen));

  const total = IPV4_MIN_HEADER_LEN + icmpLen;
  writeIpv4Header(out, outOff, tos, total, ipId, 0, ICMP_ERROR_TTL, IPPROTO_ICMP, srcAddr, origSrc);
  return total;
}

/**
 * ICMP destination unreachable / fragmentation needed (type 3 code 4) with the next-hop MTU
 * (RFC 1191) — what Linux's `tnl_update_pmtu` sends when a DF packet does not fit the IPIP tunnel.
 * See `writeIcmpError` for the layout and the quote size.
 */
export function writeIcmpFragNeeded(
  out: Uint8Array,
  outOff: number,
  origBuf: Uint8Array,
  origOff: number,
  origLen: number,
  srcAddr: number,
  mtu: number,
  ipId = 0,
  maxTotal = ICMP_ERROR_MAX_TOTAL,
): number {
  return writeIcmpError(
    out, outOff, origBuf, origOff, origLen, srcAddr,
    ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu & 0xffff, ipId, maxTotal,
  );
}

/**
 * ICMP destination unreachable (type 3) with the given code, e.g. ICMP_PORT_UNREACH for the REJECT
 * of a service without endpoints (iptables `--reject-with icmp-port-unreachable`).
 */
export function writeIcmpUnreachable(
  out: Uint8Array,
  outOff: number,
  origBuf: Uint8Array,
  origOff: number,
  origLen: number,
  srcAddr: number,
  code: number,
  ipId = 0,
  maxTotal = ICMP_ERROR_MAX_TOTAL,
): number {
  return writeIcmpError(out, outOff, origBuf, origOff, origLen, srcAddr, ICMP_DEST_UNREACH, code, 0, ipId, maxTotal);
}

/** ICMP time exceeded in transit (type 11 code 0), for a forwarded packet whose TTL ran out. */
export function writeIcmpTimeExceeded(
  out: Uint8Array,
  outOff: number,
  origBuf: Uint8Array,
  origOff: number,
  origLen: number,
  srcAddr: number,
  ipId = 0,
  maxTotal = ICMP_ERROR_MAX_TOTAL,
): number {
  return writeIcmpError(out, outOff, origBuf, origOff, origLen, srcAddr, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0, ipId, maxTotal);
}
