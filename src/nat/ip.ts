// IPv4 addresses as unsigned 32-bit host-order numbers (docs/CONTRACTS.md), CIDRs, and the
// formatting helpers the renderer needs. Config-time code only: these allocate strings.
//
// One grammar, a strict dotted quad (four decimal octets, no leading zeros), in two
// implementations tested to agree (test/nat-ip.test.ts): configs and flags read it with ipaddr.js
// in its strict four-part-decimal form (parseIPv4Strict, parseCidrStrict), which refuses the
// shorthand ipaddr.js otherwise accepts ("10.1", "0x0a.0.0.1"); the importer, and the addresses
// of Service and EndpointSlice objects (thousands per manifest), read it with the codec layer's
// allocation-free scanner (parseIPv4, parseCidr).
import ipaddr from 'ipaddr.js';

/** An IPv4 prefix. `mask` is the netmask as u32 (0 for /0). */
export interface Cidr {
  readonly addr: number; // network address, already masked
  readonly len: number; // 0..32
  readonly mask: number;
}

// The codec layer owns dotted-quad parsing and formatting; nat uses them under these names.
import { tryParseIp, ipToString } from '../netstack/addr';
export { tryParseIp as parseIPv4, ipToString as formatIPv4 };
const parseIPv4 = tryParseIp;
const formatIPv4 = ipToString;

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** A strict dotted quad read by ipaddr.js (for configs and flags); null when it is not one. */
export function parseIPv4Strict(text: string): number | null {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return null;
  const o = ipaddr.IPv4.parse(text).octets;
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

/**
 * Parses "a.b.c.d/len" (or a bare address = /32 when `allowBare`). Returns null when invalid.
 * Like Go's net.ParseCIDR, host bits may be set; the network address is masked.
 */
export function parseCidr(s: string, allowBare = false): Cidr | null {
  return cidrOfText(s, allowBare, parseIPv4);
}

/** parseCidr for configs and flags: the address part read by parseIPv4Strict. */
export function parseCidrStrict(s: string): Cidr | null {
  return cidrOfText(s, false, (a) => parseIPv4Strict(a) ?? -1);
}

function cidrOfText(s: string, allowBare: boolean, parseAddr: (text: string) => number): Cidr | null {
  const slash = s.indexOf('/');
  if (slash < 0) {
    if (!allowBare) return null;
    const a = parseAddr(s);
    return a < 0 ? null : { addr: a, len: 32, mask: 0xffffffff };
  }
  const a = parseAddr(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (a < 0 || !/^\d{1,2}$/.test(lenText)) return null;
  const len = Number(lenText);
  if (len > 32) return null;
  const mask = maskOf(len);
  return { addr: (a & mask) >>> 0, len, mask };
}

export function cidrOf(addr: number, len = 32): Cidr {
  const mask = maskOf(len);
  return { addr: (addr & mask) >>> 0, len, mask };
}

export function cidrContains(c: Cidr, a: number): boolean {
  return ((a & c.mask) >>> 0) === c.addr;
}

/** "10.1.0.0/16"; with `bareHost`, a /32 prints as a bare address (kube-proxy's modern style). */
export function formatCidr(c: Cidr, bareHost = false): string {
  if (bareHost && c.len === 32) return formatIPv4(c.addr);
  return `${formatIPv4(c.addr)}/${c.len}`;
}

export function looksLikeIPv6(s: string): boolean {
  return s.includes(':');
}

/**
 * Go's fmt "%.<prec>f" / C printf "%.<prec>f" for a finite non-negative double: the exact binary
 * value rounded half-to-even at `prec` decimals. (JavaScript's toFixed rounds exact ties up,
 * which differs for e.g. 1/2048 at 10 decimals.)
 */
export function formatFixed(x: number, prec: number): string {
  if (!Number.isFinite(x) || x < 0) throw new RangeError(`formatFixed: ${x}`);
  // x = mant * 2^exp exactly.
  const buf = new DataView(new ArrayBuffer(8));
  buf.setFloat64(0, x);
  const hi = buf.getUint32(0), lo = buf.getUint32(4);
  const bexp = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exp: number;
  if (bexp === 0) exp = -1074;
  else { mant |= 1n << 52n; exp = bexp - 1075; }
  // value * 10^prec = mant * 2^exp * 10^prec; compute floor and remainder exactly.
  const scale = 10n ** BigInt(prec);
  let q: bigint, twiceRem: bigint, den: bigint;
  if (exp >= 0) {
    q = (mant << BigInt(exp)) * scale; twiceRem = 0n; den = 1n;
  } else {
    den = 1n << BigInt(-exp);
    const num = mant * scale;
    q = num / den;
    twiceRem = (num - q * den) * 2n;
  }
  if (twiceRem > den || (twiceRem === den && (q & 1n) === 1n)) q += 1n;
  let s = q.toString();
  if (prec === 0) return s;
  if (s.length <= prec) s = '0'.repeat(prec - s.length + 1) + s;
  return `${s.slice(0, s.length - prec)}.${s.slice(s.length - prec)}`;
}
