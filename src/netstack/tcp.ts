/**
 * TCP header (RFC 9293) field layout. Offsets are relative to the start of the TCP header.
 *
 * ```
 *  0 SRC_PORT(16)  2 DST_PORT(16)
 *  4 SEQ(32)
 *  8 ACK(32)
 * 12 DATA_OFF(4 bits)+reserved(3)+NS(1)   13 FLAGS(8)   14 WINDOW(16)
 * 16 CHECKSUM(16)  18 URGENT(16)
 * 20 options (DATA_OFF > 5)
 * ```
 * The checksum covers the IPv4 pseudo header (src, dst, 0, 6, TCP length) and the whole segment.
 */
import { read16, read32 } from './bytes';

export const TCP_SRC_PORT = 0;
export const TCP_DST_PORT = 2;
export const TCP_SEQ = 4;
export const TCP_ACK_NUM = 8;
export const TCP_DATA_OFF = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_URGENT = 18;
export const TCP_MIN_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;


export function tcpSrcPort(buf: Uint8Array, off: number): number {
  return read16(buf, off + TCP_SRC_PORT);
}
export function tcpDstPort(buf: Uint8Array, off: number): number {
  return read16(buf, off + TCP_DST_PORT);
}
export function tcpSeq(buf: Uint8Array, off: number): number {
  return read32(buf, off + TCP_SEQ);
}
export function tcpAck(buf: Uint8Array, off: number): number {
  return read32(buf, off + TCP_ACK_NUM);
}
/** Header length in bytes (data offset * 4). */
export function tcpHeaderLen(buf: Uint8Array, off: number): number {
  return (buf[off + TCP_DATA_OFF] >>> 4) << 2;
}
export function tcpFlags(buf: Uint8Array, off: number): number {
  return buf[off + TCP_FLAGS];
}
export function tcpWindow(buf: Uint8Array, off: number): number {
  return read16(buf, off + TCP_WINDOW);
}
export function tcpChecksum(buf: Uint8Array, off: number): number {
  return read16(buf, off + TCP_CHECKSUM);
}
