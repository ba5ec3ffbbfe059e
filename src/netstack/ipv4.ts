/**
 * IPv4 header (RFC 791) field layout.
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * |Version|  IHL  |    DSCP/ECN   |          Total Length         |  0 VER_IHL, 1 TOS, 2 TOTAL_LEN
 * |         Identification        |Flags|     Fragment Offset     |  4 ID, 6 FLAGS_FRAG
 * |  Time to Live |    Protocol   |         Header Checksum       |  8 TTL, 9 PROTO, 10 CHECKSUM
 * |                       Source Address                          | 12 SRC
 * |                    Destination Address                        | 16 DST
 * |                    Options (IHL > 5)                          | 20
 * ```
 * Offsets are relative to the start of the IPv4 header. Addresses are host-order u32 numbers.
 */
import { write16, write32 } from './bytes';
import { checksum } from './checksum';

/** The version nibble (high four bits of byte 0) of an IPv4 header. */
export const IPV4_VERSION = 4;

export const IPV4_VER_IHL = 0;
export const IPV4_TOS = 1;
export const IPV4_TOTAL_LEN = 2;
export const IPV4_ID = 4;
export const IPV4_FLAGS_FRAG = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTO = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPV4_MIN_HEADER_LEN = 20;
export const IPV4_MAX_HEADER_LEN = 60;
export const IPV4_MAX_TOTAL_LEN = 0xffff;

/** Bits of the 16-bit flags/fragment-offset word at IPV4_FLAGS_FRAG. */
export const IPV4_FLAG_RESERVED = 0x8000;
export const IPV4_FLAG_DF = 0x4000;
export const IPV4_FLAG_MF = 0x2000;
export const IPV4_FRAG_OFFSET_MASK = 0x1fff;

/** ECN codepoints (low two bits of the TOS byte, RFC 3168). */
export const ECN_MASK = 0x03;
export const ECN_NOT_ECT = 0;
export const ECN_ECT_1 = 1;
export const ECN_ECT_0 = 2;
export const ECN_CE = 3;


// --- view accessor: (buf, off) where off is the start of a header already length-checked ---

/** Header length in bytes (IHL * 4). */
export function ipv4HeaderLen(buf: Uint8Array, off: number): number {
  return (buf[off + IPV4_VER_IHL] & 0x0f) << 2;
}

/** Recomputes and stores the header checksum over `ihlBytes` (full, not incremental). */
export function ipv4FillChecksum(buf: Uint8Array, off: number, ihlBytes: number): void {
  write16(buf, off + IPV4_CHECKSUM, 0);
  write16(buf, off + IPV4_CHECKSUM, checksum(buf, off, ihlBytes));
}

/**
 * Writes a 20-byte option-less IPv4 header with a valid checksum. Used by encapsulation and ICMP
 * error generation (not per-packet NAT, which edits in place).
 */
export function writeIpv4Header(
  buf: Uint8Array,
  off: number,
  tos: number,
  totalLen: number,
  id: number,
  flagsFrag: number,
  ttl: number,
  proto: number,
  src: number,
  dst: number,
): void {
  buf[off + IPV4_VER_IHL] = (IPV4_VERSION << 4) | (IPV4_MIN_HEADER_LEN >>> 2);
  buf[off + IPV4_TOS] = tos & 0xff;
  write16(buf, off + IPV4_TOTAL_LEN, totalLen);
  write16(buf, off + IPV4_ID, id);
  write16(buf, off + IPV4_FLAGS_FRAG, flagsFrag);
  buf[off + IPV4_TTL] = ttl & 0xff;
  buf[off + IPV4_PROTO] = proto & 0xff;
  write32(buf, off + IPV4_SRC, src);
  write32(buf, off + IPV4_DST, dst);
  ipv4FillChecksum(buf, off, IPV4_MIN_HEADER_LEN);
}
