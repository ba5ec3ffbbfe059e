/**
 * Plain-object representations (smoltcp "Repr") of IPv4, TCP, UDP and ICMP headers, for tests,
 * tooling and the control plane only: these allocate and throw. The per-packet loop uses
 * parseIpv4/PacketMeta and the in-place rewrites of packet.ts.
 *
 * Every codec is `parse(buf, off, len)` / `emit(repr, buf, off, ...)` / `bufferLen(repr)` (dns-packet
 * style; the caller owns the buffer). `emit` always writes correct checksums. For a packet with valid
 * checksums, parse -> emit reproduces the bytes exactly (see parsePacket/emitPacket), except bytes after
 * the UDP length / IP total length, which are not represented.
 */
import { read16, read32, write16, write32 } from './bytes';
import { checksum, pseudoHeaderSum } from './checksum';
import {
  ICMP_CHECKSUM,
  ICMP_CODE,
  ICMP_HEADER_LEN,
  ICMP_ID,
  ICMP_SEQ,
  ICMP_TYPE,
} from './icmp';
import {
  IPV4_CHECKSUM,
  IPV4_DST,
  IPV4_FLAG_DF,
  IPV4_FLAG_MF,
  IPV4_FLAG_RESERVED,
  IPV4_FLAGS_FRAG,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_ID,
  IPV4_MAX_HEADER_LEN,
  IPV4_MAX_TOTAL_LEN,
  IPV4_MIN_HEADER_LEN,
  IPV4_PROTO,
  IPV4_SRC,
  IPV4_TOS,
  IPV4_TOTAL_LEN,
  IPV4_TTL,
  IPV4_VER_IHL,
  IPV4_VERSION,
} from './ipv4';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP } from './proto';
import {
  TCP_ACK_NUM,
  TCP_CHECKSUM,
  TCP_DATA_OFF,
  TCP_DST_PORT,
  TCP_FLAGS,
  TCP_MAX_HEADER_LEN,
  TCP_MIN_HEADER_LEN,
  TCP_SEQ,
  TCP_SRC_PORT,
  TCP_URGENT,
  TCP_WINDOW,
} from './tcp';
import { UDP_CHECKSUM, UDP_CHECKSUM_MANGLED_0, UDP_DST_PORT, UDP_HEADER_LEN, UDP_LENGTH, UDP_SRC_PORT } from './udp';

const EMPTY = new Uint8Array(0);

function fail(what: string): never {
  throw new Error(what);
}

function checkRange(buf: Uint8Array, off: number, len: number, what: string): void {
  if (!(off >= 0 && len >= 0 && off + len <= buf.length)) fail(`${what}: range ${off}+${len} outside buffer of ${buf.length}`);
}

function copyOut(buf: Uint8Array, from: number, to: number): Uint8Array {
  return Uint8Array.prototype.slice.call(buf, from, to);
}

// --- IPv4 ------------------------------------------------------------------------------------

/** An IPv4 header. Optional fields default to 0/false/empty when emitted. */
export interface Ipv4Repr {
  src: number;
  dst: number;
  proto: number;
  ttl: number;
  /** Length of everything after the header (total length - header length). */
  payloadLen: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** The reserved ("evil") flag bit. */
  reservedFlag?: boolean;
  /** Fragment offset in 8-byte units. */
  fragOffset?: number;
  /** Raw option bytes (length a multiple of 4, at most 40). */
  options?: Uint8Array;
}

export const Ipv4Repr = {
  /** Parses the header at buf[off..]; `len` bounds the packet (default: to the end of buf). */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): Ipv4Repr {
    checkRange(buf, off, len, 'ipv4');
    if (len < IPV4_MIN_HEADER_LEN) fail(`ipv4: ${len} bytes is shorter than a header`);
    const verIhl = buf[off + IPV4_VER_IHL];
    if (verIhl >>> 4 !== IPV4_VERSION) fail(`ipv4: version ${verIhl >>> 4}`);
    const ihl = (verIhl & 0x0f) << 2;
    if (ihl < IPV4_MIN_HEADER_LEN || ihl > len) fail(`ipv4: bad header length ${ihl}`);
    const total = read16(buf, off + IPV4_TOTAL_LEN);
    if (total < ihl || total > len) fail(`ipv4: bad total length ${total} (header ${ihl}, have ${len})`);
    const ff = read16(buf, off + IPV4_FLAGS_FRAG);
    return {
      src: read32(buf, off + IPV4_SRC),
      dst: read32(buf, off + IPV4_DST),
      proto: buf[off + IPV4_PROTO],
      ttl: buf[off + IPV4_TTL],
      payloadLen: total - ihl,
      tos: buf[off + IPV4_TOS],
      id: read16(buf, off + IPV4_ID),
      df: (ff & IPV4_FLAG_DF) !== 0,
      mf: (ff & IPV4_FLAG_MF) !== 0,
      reservedFlag: (ff & IPV4_FLAG_RESERVED) !== 0,
      fragOffset: ff & IPV4_FRAG_OFFSET_MASK,
      options: copyOut(buf, off + IPV4_MIN_HEADER_LEN, off + ihl),
    };
  },

  /** Header length in bytes. */
  bufferLen(repr: Ipv4Repr): number {
    const opt = repr.options ?? EMPTY;
    if (opt.length % 4 !== 0 || IPV4_MIN_HEADER_LEN + opt.length > IPV4_MAX_HEADER_LEN) {
      fail(`ipv4: options length ${opt.length} must be a multiple of 4 up to 40`);
    }
    return IPV4_MIN_HEADER_LEN + opt.length;
  },

  /** Writes the header (with checksum) at buf[off..]; returns the header length. */
  emit(repr: Ipv4Repr, buf: Uint8Array, off = 0): number {
    const ihl = Ipv4Repr.bufferLen(repr);
    const total = ihl + repr.payloadLen;
    if (total > IPV4_MAX_TOTAL_LEN) fail(`ipv4: total length ${total} > 65535`);
    checkRange(buf, off, ihl, 'ipv4 emit');
    buf[off + IPV4_VER_IHL] = (IPV4_VERSION << 4) | (ihl >>> 2);
    buf[off + IPV4_TOS] = (repr.tos ?? 0) & 0xff;
    write16(buf, off + IPV4_TOTAL_LEN, total);
    write16(buf, off + IPV4_ID, repr.id ?? 0);
    write16(
      buf,
      off + IPV4_FLAGS_FRAG,
      (repr.reservedFlag ? IPV4_FLAG_RESERVED : 0) |
        (repr.df ? IPV4_FLAG_DF : 0) |
        (repr.mf ? IPV4_FLAG_MF : 0) |
        ((repr.fragOffset ?? 0) & IPV4_FRAG_OFFSET_MASK),
    );
    buf[off + IPV4_TTL] = repr.ttl & 0xff;
    buf[off + IPV4_PROTO] = repr.proto & 0xff;
    write16(buf, off + IPV4_CHECKSUM, 0);
    write32(buf, off + IPV4_SRC, repr.src >>> 0);
    write32(buf, off + IPV4_DST, repr.dst >>> 0);
    if (repr.options) buf.set(repr.options, off + IPV4_MIN_HEADER_LEN);
    write16(buf, off + IPV4_CHECKSUM, checksum(buf, off, ihl));
    return ihl;
  },
};

// --- TCP -------------------------------------------------------------------------------------

export interface TcpRepr {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  /**
   * TCP_SYN | TCP_ACK | ... in the low 8 bits; bits 8-11 carry the low nibble of byte 12
   * (reserved bits and AE/NS), so a parse -> emit round trip is exact.
   */
  flags: number;
  window: number;
  urgent?: number;
  /** Raw option bytes (length a multiple of 4, at most 40). */
  options?: Uint8Array;
  payload?: Uint8Array;
}

export const TcpRepr = {
  /** Parses the segment buf[off .. off+len) (len = IP payload length). */
  parse(buf: Uint8Array, off: number, len: number): TcpRepr {
    checkRange(buf, off, len, 'tcp');
    if (len < TCP_MIN_HEADER_LEN) fail(`tcp: ${len} bytes is shorter than a header`);
    const hl = (buf[off + TCP_DATA_OFF] >>> 4) << 2;
    if (hl < TCP_MIN_HEADER_LEN || hl > len) fail(`tcp: bad data offset ${hl}`);
    return {
      sport: read16(buf, off + TCP_SRC_PORT),
      dport: read16(buf, off + TCP_DST_PORT),
      seq: read32(buf, off + TCP_SEQ),
      ack: read32(buf, off + TCP_ACK_NUM),
      flags: ((buf[off + TCP_DATA_OFF] & 0x0f) << 8) | buf[off + TCP_FLAGS],
      window: read16(buf, off + TCP_WINDOW),
      urgent: read16(buf, off + TCP_URGENT),
      options: copyOut(buf, off + TCP_MIN_HEADER_LEN, off + hl),
      payload: copyOut(buf, off + hl, off + len),
    };
  },

  /** Header + options + payload length. */
  bufferLen(repr: TcpRepr): number {
    const opt = repr.options ?? EMPTY;
    if (opt.length % 4 !== 0 || TCP_MIN_HEADER_LEN + opt.length > TCP_MAX_HEADER_LEN) {
      fail(`tcp: options length ${opt.length} must be a multiple of 4 up to 40`);
    }
    return TCP_MIN_HEADER_LEN + opt.length + (repr.payload ?? EMPTY).length;
  },

  /** Writes the segment with its checksum for the pseudo header (src, dst); returns its length. */
  emit(repr: TcpRepr, buf: Uint8Array, off: number, src: number, dst: number): number {
    const len = TcpRepr.bufferLen(repr);
    checkRange(buf, off, len, 'tcp emit');
    const opt = repr.options ?? EMPTY;
    const hl = TCP_MIN_HEADER_LEN + opt.length;
    write16(buf, off + TCP_SRC_PORT, repr.sport);
    write16(buf, off + TCP_DST_PORT, repr.dport);
    write32(buf, off + TCP_SEQ, repr.seq >>> 0);
    write32(buf, off + TCP_ACK_NUM, repr.ack >>> 0);
    buf[off + TCP_DATA_OFF] = ((hl >>> 2) << 4) | ((repr.flags >>> 8) & 0x0f);
    buf[off + TCP_FLAGS] = repr.flags & 0xff;
    write16(buf, off + TCP_WINDOW, repr.window);
    write16(buf, off + TCP_CHECKSUM, 0);
    write16(buf, off + TCP_URGENT, repr.urgent ?? 0);
    buf.set(opt, off + TCP_MIN_HEADER_LEN);
    buf.set(repr.payload ?? EMPTY, off + hl);
    write16(buf, off + TCP_CHECKSUM, checksum(buf, off, len, pseudoHeaderSum(src, dst, IPPROTO_TCP, len)));
    return len;
  },
};

// --- UDP -------------------------------------------------------------------------------------

export interface UdpRepr {
  sport: number;
  dport: number;
  payload?: Uint8Array;
  /** Emit checksum 0 ("none"). Set by parse when the field is 0. */
  noChecksum?: boolean;
}

export const UdpRepr = {
  /** Parses the datagram at buf[off..]; `len` is the IP payload length (the UDP length must fit). */
  parse(buf: Uint8Array, off: number, len: number): UdpRepr {
    checkRange(buf, off, len, 'udp');
    if (len < UDP_HEADER_LEN) fail(`udp: ${len} bytes is shorter than a header`);
    const ulen = read16(buf, off + UDP_LENGTH);
    if (ulen < UDP_HEADER_LEN || ulen > len) fail(`udp: bad length ${ulen} (have ${len})`);
    return {
      sport: read16(buf, off + UDP_SRC_PORT),
      dport: read16(buf, off + UDP_DST_PORT),
      payload: copyOut(buf, off + UDP_HEADER_LEN, off + ulen),
      noChecksum: read16(buf, off + UDP_CHECKSUM) === 0,
    };
  },

  bufferLen(repr: UdpRepr): number {
    return UDP_HEADER_LEN + (repr.payload ?? EMPTY).length;
  },

  /** Writes the datagram with its checksum for the pseudo header (src, dst); returns its length. */
  emit(repr: UdpRepr, buf: Uint8Array, off: number, src: number, dst: number): number {
    const len = UdpRepr.bufferLen(repr);
    if (len > 0xffff) fail(`udp: length ${len} > 65535`);
    checkRange(buf, off, len, 'udp emit');
    write16(buf, off + UDP_SRC_PORT, repr.sport);
    write16(buf, off + UDP_DST_PORT, repr.dport);
    write16(buf, off + UDP_LENGTH, len);
    write16(buf, off + UDP_CHECKSUM, 0);
    buf.set(repr.payload ?? EMPTY, off + UDP_HEADER_LEN);
    if (!repr.noChecksum) {
      const c = checksum(buf, off, len, pseudoHeaderSum(src, dst, IPPROTO_UDP, len));
      write16(buf, off + UDP_CHECKSUM, c === 0 ? UDP_CHECKSUM_MANGLED_0 : c);
    }
    return len;
  },
};

// --- ICMP ------------------------------------------------------------------------------------

/**
 * An ICMP message. Bytes 4-7 are `id` and `seq` whatever the type: for echo they are identifier and
 * sequence number; for destination unreachable `id` is unused (0) and `seq` the next-hop MTU (code 4);
 * for errors `payload` is the quoted datagram.
 */
export interface IcmpRepr {
  type: number;
  code: number;
  id?: number;
  seq?: number;
  payload?: Uint8Array;
}

export const IcmpRepr = {
  parse(buf: Uint8Array, off: number, len: number): IcmpRepr {
    checkRange(buf, off, len, 'icmp');
    if (len < ICMP_HEADER_LEN) fail(`icmp: ${len} bytes is shorter than a header`);
    return {
      type: buf[off + ICMP_TYPE],
      code: buf[off + ICMP_CODE],
      id: read16(buf, off + ICMP_ID),
      seq: read16(buf, off + ICMP_SEQ),
      payload: copyOut(buf, off + ICMP_HEADER_LEN, off + len),
    };
  },

  bufferLen(repr: IcmpRepr): number {
    return ICMP_HEADER_LEN + (repr.payload ?? EMPTY).length;
  },

  /** Writes the message with its checksum; returns its length. */
  emit(repr: IcmpRepr, buf: Uint8Array, off: number): number {
    const len = IcmpRepr.bufferLen(repr);
    checkRange(buf, off, len, 'icmp emit');
    buf[off + ICMP_TYPE] = repr.type & 0xff;
    buf[off + ICMP_CODE] = repr.code & 0xff;
    write16(buf, off + ICMP_CHECKSUM, 0);
    write16(buf, off + ICMP_ID, repr.id ?? 0);
    write16(buf, off + ICMP_SEQ, repr.seq ?? 0);
    buf.set(repr.payload ?? EMPTY, off + ICMP_HEADER_LEN);
    write16(buf, off + ICMP_CHECKSUM, checksum(buf, off, len));
    return len;
  },
};

// --- whole packets ---------------------------------------------------------------------------

/** A whole IPv4 packet. Exactly one of tcp/udp/icmp is set for those protocols; otherwise `payload`. */
export interface PacketRepr {
  ip: Ipv4Repr;
  tcp?: TcpRepr;
  udp?: UdpRepr;
  icmp?: IcmpRepr;
  /** Raw L4 bytes for other protocols (e.g. the inner packet of IPIP) or for fragments. */
  payload?: Uint8Array;
}

function isFragment(ip: Ipv4Repr): boolean {
  return !!ip.mf || (ip.fragOffset ?? 0) !== 0;
}

/**
 * Parses a whole IPv4 packet into plain objects. Throws on malformed structure (checksums are not
 * verified; use parseIpv4 for validation). Fragments are kept as raw `payload`.
 */
export function parsePacket(buf: Uint8Array, off = 0, len = buf.length - off): PacketRepr {
  const ip = Ipv4Repr.parse(buf, off, len);
  const l4off = off + Ipv4Repr.bufferLen(ip);
  const l4len = ip.payloadLen;
  if (!isFragment(ip)) {
    if (ip.proto === IPPROTO_TCP) return { ip, tcp: TcpRepr.parse(buf, l4off, l4len) };
    if (ip.proto === IPPROTO_UDP) return { ip, udp: UdpRepr.parse(buf, l4off, l4len) };
    if (ip.proto === IPPROTO_ICMP) return { ip, icmp: IcmpRepr.parse(buf, l4off, l4len) };
  }
  return { ip, payload: copyOut(buf, l4off, l4off + l4len) };
}

/** Length of the L4 part of a PacketRepr. */
function l4Len(p: PacketRepr): number {
  if (p.tcp) return TcpRepr.bufferLen(p.tcp);
  if (p.udp) return UdpRepr.bufferLen(p.udp);
  if (p.icmp) return IcmpRepr.bufferLen(p.icmp);
  return (p.payload ?? EMPTY).length;
}

/** Total length of the packet `emitPacket` writes. */
export function packetLen(p: PacketRepr): number {
  return Ipv4Repr.bufferLen(p.ip) + l4Len(p);
}

/**
 * Writes a whole packet at buf[off..] with correct IP and L4 checksums; the IP payload length and
 * protocol are taken from the L4 part (ip.payloadLen / ip.proto are overridden). Returns its length.
 */
export function emitPacket(p: PacketRepr, buf: Uint8Array, off = 0): number {
  const l4len = l4Len(p);
  let proto = p.ip.proto;
  if (p.tcp) proto = IPPROTO_TCP;
  else if (p.udp) proto = IPPROTO_UDP;
  else if (p.icmp) proto = IPPROTO_ICMP;
  const ip: Ipv4Repr = { ...p.ip, proto, payloadLen: l4len };
  const hl = Ipv4Repr.bufferLen(ip);
  checkRange(buf, off, hl + l4len, 'packet emit');
  Ipv4Repr.emit(ip, buf, off);
  const l4off = off + hl;
  if (p.tcp) TcpRepr.emit(p.tcp, buf, l4off, ip.src, ip.dst);
  else if (p.udp) UdpRepr.emit(p.udp, buf, l4off, ip.src, ip.dst);
  else if (p.icmp) IcmpRepr.emit(p.icmp, buf, l4off);
  else buf.set(p.payload ?? EMPTY, l4off);
  return hl + l4len;
}

/** Input of buildPacket: addresses as numbers or dotted-quad strings are not accepted (use parseIp). */
export interface PacketSpec {
  src: number;
  dst: number;
  /** Needed only when none of tcp/udp/icmp is given (then `payload` is the L4 bytes). */
  proto?: number;
  ttl?: number;
  id?: number;
  df?: boolean;
  tos?: number;
  ipOptions?: Uint8Array;
  tcp?: {
    sport: number;
    dport: number;
    seq?: number;
    ack?: number;
    flags?: number;
    window?: number;
    urgent?: number;
    options?: Uint8Array;
    payload?: Uint8Array;
  };
  udp?: { sport: number; dport: number; payload?: Uint8Array; noChecksum?: boolean };
  icmp?: {
    type: number;
    code?: number;
    id?: number;
    seq?: number;
    /** Destination unreachable / fragmentation needed: next-hop MTU (stored in bytes 6-7). */
    mtu?: number;
    payload?: Uint8Array;
    /** For errors: the quoted datagram (same bytes position as payload). */
    quoted?: Uint8Array;
  };
  payload?: Uint8Array;
}

/** Builds a complete IPv4 packet with correct checksums (TTL defaults to 64). */
export function buildPacket(spec: PacketSpec): Buffer {
  const p: PacketRepr = {
    ip: {
      src: spec.src >>> 0,
      dst: spec.dst >>> 0,
      proto: spec.proto ?? 0,
      ttl: spec.ttl ?? 64,
      payloadLen: 0,
      tos: spec.tos ?? 0,
      id: spec.id ?? 0,
      df: spec.df ?? false,
      options: spec.ipOptions,
    },
  };
  if (spec.tcp) {
    const t = spec.tcp;
    p.tcp = {
      sport: t.sport,
      dport: t.dport,
      seq: t.seq ?? 0,
      ack: t.ack ?? 0,
      flags: t.flags ?? 0,
      window: t.window ?? 65535,
      urgent: t.urgent ?? 0,
      options: t.options,
      payload: t.payload,
    };
  } else if (spec.udp) {
    p.udp = { ...spec.udp };
  } else if (spec.icmp) {
    const i = spec.icmp;
    p.icmp = { type: i.type, code: i.code ?? 0, id: i.id ?? 0, seq: i.mtu ?? i.seq ?? 0, payload: i.quoted ?? i.payload };
  } else {
    if (spec.proto === undefined) fail('buildPacket: give tcp, udp, icmp, or proto + payload');
    p.payload = spec.payload;
  }
  const out = Buffer.alloc(packetLen(p));
  emitPacket(p, out, 0);
  return out;
}
