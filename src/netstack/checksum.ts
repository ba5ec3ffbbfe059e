/**
 * Internet checksum (RFC 1071) and incremental update (RFC 1624).
 *
 * Sums are kept as plain non-negative numbers. `onesSum` returns an unfolded 32-bit accumulator
 * (always < 2^32) that can be fed back as `initial` or to `fold`. A checksum *field* holds the
 * complement of the folded sum of all other covered words.
 *
 * Incremental update uses RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). Unlike RFC 1141's eqn. 2 it never
 * produces 0xFFFF where a full recomputation gives 0x0000 (the corner case of the RFC's example).
 * One exception (shared with Linux `csum_replace*`): if every covered word is zero (possible only for a
 * degenerate ICMP message: echo reply, id 0, seq 0, no payload) full recomputation gives 0xFFFF and an
 * incremental update gives 0x0000. packet.ts corrects that case for ICMP; IP/TCP/UDP can never hit it
 * (the version byte or the pseudo-header protocol is non-zero).
 */

/** Largest value `fold` handles with 32-bit operators. */
const U32_MAX = 0xffffffff;

/**
 * One's-complement accumulation of `len` bytes from `buf[off]` as big-endian 16-bit words (an odd
 * trailing byte is padded with zero), added to `initial`. Returns an unfolded sum < 2^32.
 */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + (len & ~1);
  let i = off;
  for (; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if ((len & 1) !== 0) sum += buf[end] << 8;
  // A double holds the exact sum up to 2^53; bring it back under 2^32 for `fold`'s 32-bit operators.
  while (sum > U32_MAX) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * onesSum of exactly 20 bytes (an option-less IPv4 header), unrolled: the per-packet header check.
 */
export function onesSum20(buf: Uint8Array, o: number): number {
  return (
    ((buf[o] << 8) | buf[o + 1]) +
    ((buf[o + 2] << 8) | buf[o + 3]) +
    ((buf[o + 4] << 8) | buf[o + 5]) +
    ((buf[o + 6] << 8) | buf[o + 7]) +
    ((buf[o + 8] << 8) | buf[o + 9]) +
    ((buf[o + 10] << 8) | buf[o + 11]) +
    ((buf[o + 12] << 8) | buf[o + 13]) +
    ((buf[o + 14] << 8) | buf[o + 15]) +
    ((buf[o + 16] << 8) | buf[o + 17]) +
    ((buf[o + 18] << 8) | buf[o + 19])
  );
}

/** Folds a 32-bit one's-complement accumulator into 16 bits (end-around carry). Not complemented. */
export function fold(sum: number): number {
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The Internet checksum of `len` bytes at `off`: `~fold(onesSum(...)) & 0xffff`. */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~fold(onesSum(buf, off, len, initial)) & 0xffff;
}

/**
 * RFC 1624 eqn. 3 for one 16-bit word: returns the new checksum field value when a covered word
 * changes from `oldWord` to `newWord`.
 */
export function csumUpdate16(csum: number, oldWord: number, newWord: number): number {
  return ~fold((~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** RFC 1624 eqn. 3 for a 32-bit value (two adjacent 16-bit words, e.g. an IPv4 address). */
export function csumUpdate32(csum: number, oldVal: number, newVal: number): number {
  return csumApply(csum, csumDelta32(oldVal, newVal));
}

/**
 * The one's-complement difference `~old + new` of a 32-bit value, as an unfolded sum. Deltas can be
 * added together and applied once with `csumApply` (one fold for address + port).
 */
export function csumDelta32(oldVal: number, newVal: number): number {
  return (~oldVal >>> 16) + (~oldVal & 0xffff) + (newVal >>> 16) + (newVal & 0xffff);
}

/** The one's-complement difference `~old + new` of a 16-bit word, as an unfolded sum. */
export function csumDelta16(oldWord: number, newWord: number): number {
  return (~oldWord & 0xffff) + (newWord & 0xffff);
}

/** Applies an accumulated delta (sum of `csumDelta*`) to a checksum field: `~(~HC + delta)`. */
export function csumApply(csum: number, delta: number): number {
  return ~fold((~csum & 0xffff) + delta) & 0xffff;
}

/**
 * The unfolded sum of the TCP/UDP IPv4 pseudo header (RFC 793/768): source, destination, zero+protocol,
 * L4 length. Pass it as `initial` to `onesSum`/`checksum` over the L4 segment.
 */
export function pseudoHeaderSum(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + (proto & 0xff) + (l4len & 0xffff);
}
