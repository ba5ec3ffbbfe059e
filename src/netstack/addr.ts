/**
 * IPv4 address <-> dotted-quad text. Addresses are host-order unsigned 32-bit numbers
 * (10.1.139.84 = 0x0a018b54). For tooling, config and tests; the hot path never formats addresses.
 */

/** Dotted-quad text of a host-order u32 address. */
export function ipToString(n: number): string {
  n = n >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** Parses a strict dotted quad (no leading-zero octets, no shorthand, like Go's net.ParseIP); -1 when invalid. Allocates nothing. */
export function tryParseIp(s: string): number {
  return tryParseIpRange(s, 0, s.length);
}

/** tryParseIp on text[from, to), for parsers that read a larger text in place. */
export function tryParseIpRange(text: string, from: number, to: number): number {
  const n = to - from;
  if (n < 7 || n > 15) return -1;
  let v = 0, octet = 0, digits = 0, dots = 0, lead0 = false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) { // '.'
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + octet;
      dots++; octet = 0; digits = 0; lead0 = false;
      continue;
    }
    if (c < 48 || c > 57) return -1;
    if (digits === 0) lead0 = c === 48;
    else if (lead0) return -1;
    octet = octet * 10 + (c - 48);
    if (++digits > 3 || octet > 255) return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return (v * 256 + octet) >>> 0;
}

/** Like tryParseIp, but throws on anything that is not a strict dotted quad. */
export function parseIp(s: string): number {
  const a = tryParseIp(s);
  if (a < 0) throw new Error(`invalid IPv4 address: ${JSON.stringify(s)}`);
  return a;
}
