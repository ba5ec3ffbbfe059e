/**
 * IPv4 address <-> dotted-quad text. Addresses are host-order unsigned 32-bit numbers
 * (10.1.139.84 = 0x0a018b54). For tooling, config and tests; the hot path never formats addresses.
 */

/** Dotted-quad text of a host-order u32 address. */
export function ipToString(n: number): string {
  n = n >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses a strict dotted quad ("10.1.139.84"; no leading zeros, no shorthand) into a host-order u32.
 * Throws on anything else.
 */
export function parseIp(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new Error(`invalid IPv4 address: ${JSON.stringify(s)}`);
  let n = 0;
  for (const p of parts) {
    if (!OCTET.test(p)) throw new Error(`invalid IPv4 address: ${JSON.stringify(s)}`);
    const v = Number(p);
    if (v > 255) throw new Error(`invalid IPv4 address: ${JSON.stringify(s)}`);
    n = n * 256 + v;
  }
  return n >>> 0;
}

/** Like parseIp, but returns -1 instead of throwing. */
export function tryParseIp(s: string): number {
  try {
    return parseIp(s);
  } catch {
    return -1;
  }
}
