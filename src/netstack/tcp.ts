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
