/**
 * UDP header (RFC 768) field layout. Offsets are relative to the start of the UDP header.
 *
 * ```
 * 0 SRC_PORT(16)  2 DST_PORT(16)  4 LENGTH(16)  6 CHECKSUM(16)
 * ```
 * LENGTH covers header + data. The checksum covers the IPv4 pseudo header (with LENGTH) and the
 * datagram; 0 means "no checksum" and a computed 0 is transmitted as 0xFFFF.
 */
export const UDP_SRC_PORT = 0;
export const UDP_DST_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;
export const UDP_HEADER_LEN = 8;

/** Checksum field value meaning "no checksum". */
export const UDP_CHECKSUM_NONE = 0;
/** What a computed checksum of 0 is sent as (Linux CSUM_MANGLED_0). */
export const UDP_CHECKSUM_MANGLED_0 = 0xffff;
