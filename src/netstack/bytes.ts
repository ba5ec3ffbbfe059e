/**
 * Big-endian field accessors over a Uint8Array (a Node Buffer is one).
 *
 * These are the only place in src/netstack that combines bytes into words. They do no bounds
 * checks: callers reach them only after a length check (parseIpv4 or the Repr parsers) proved
 * the field lies inside the buffer, smoltcp-style ("one length check gates a view").
 */

/** Reads an unsigned 16-bit big-endian value at `at`. */
export function read16(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

/** Reads an unsigned 32-bit big-endian value at `at` (result is `>>> 0`, host-order number). */
export function read32(buf: Uint8Array, at: number): number {
  return ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
}

/** Writes the low 16 bits of `v` big-endian at `at`. */
export function write16(buf: Uint8Array, at: number, v: number): void {
  buf[at] = (v >>> 8) & 0xff;
  buf[at + 1] = v & 0xff;
}

/** Writes `v` as an unsigned 32-bit big-endian value at `at`. */
export function write32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = (v >>> 24) & 0xff;
  buf[at + 1] = (v >>> 16) & 0xff;
  buf[at + 2] = (v >>> 8) & 0xff;
  buf[at + 3] = v & 0xff;
}
