import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  DROP_REASON_COUNT,
  DROP_REASON_NAMES,
  DropReason,
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_FRAG_NEEDED,
  ICMP_PORT_UNREACH,
  ICMP_TIME_EXCEEDED,
  IPIP_HEADER_LEN,
  IPPROTO_ICMP,
  IPPROTO_IPIP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IcmpRepr,
  Ipv4Repr,
  PacketMeta,
  PacketSpec,
  TCP_SYN,
  TcpRepr,
  UdpRepr,
  buildPacket,
  checksum,
  decapIpip,
  emitPacket,
  encapIpip,
  ipToString,
  mayReplyWithIcmpError,
  packetLen,
  parseIp,
  parseIpv4,
  parsePacket,
  rewriteDst,
  rewriteIcmpId,
  rewriteIcmpInnerDst,
  rewriteIcmpInnerSrc,
  rewriteSrc,
  tryParseIp,
  writeIcmpFragNeeded,
  writeIcmpTimeExceeded,
  writeIcmpUnreachable,
} from '../src/netstack';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ip = parseIp;

// Fixtures generated with an independent Python implementation (struct + RFC 1071 checksum).
// Linux-style SYN 10.244.1.5:43210 -> 10.96.0.10:80, options MSS 1460, SACK-perm, TS, NOP, WS 7.
const SYN = hex(
  '4500003c4d2e40004006d72b0af401050a60000aa8ca00509c2d1f3a00000000a002faf09bd20000020405b40402080a0a1b2c3d0000000001030307',
);
// The same SYN after DNAT to 10.244.2.7:8080.
const SYN_DNAT = hex(
  '4500003c4d2e40004006d49a0af401050af40207a8ca1f909c2d1f3a00000000a002faf07a010000020405b40402080a0a1b2c3d0000000001030307',
);
// DNS query (A kubernetes.default.svc.cluster.local, EDNS0) 10.244.1.5:53000 -> 10.96.0.10:53, no DF.
const DNS = hex(
  '4500005d12340000401151fa0af401050a60000acf080035004944a51a2b010000010000000000010a6b756265726e657465730764656661756c740373766307636c7573746572056c6f63616c000001000100002904d0000000000000',
);
const DNS_QUERY = DNS.subarray(28);
// ping: echo request id 0x1c2b seq 1 with 56 data bytes 0x10..0x47.
const ECHO = hex(
  '45000054beef4000400165570af401050a60000a080022ff1c2b0001101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f4041424344454647',
);
// Port unreachable from endpoint 10.244.2.7 quoting the DNATed DNS query (dst 10.244.2.7), whole datagram.
const UNREACH = hex(
  '45c00079777700004001e9590af402070af401050303164b000000004500005d1234000040114f690af401050af40207cf080035004942141a2b010000010000000000010a6b756265726e657465730764656661756c740373766307636c7573746572056c6f63616c000001000100002904d0000000000000',
);
// ... after un-DNAT: outer src and quoted dst back to the ClusterIP 10.96.0.10:53.
const UNREACH_UNNAT = hex(
  '45c00079777700004001ebea0a60000a0af40105030313ba000000004500005d12340000401151fa0af401050a60000acf080035004944a51a2b010000010000000000010a6b756265726e657465730764656661756c740373766307636c7573746572056c6f63616c000001000100002904d0000000000000',
);

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const bytes = (max: number) => fc.uint8Array({ maxLength: max });
const words = (maxWords: number) =>
  fc.integer({ min: 0, max: maxWords }).chain((n) => fc.uint8Array({ minLength: n * 4, maxLength: n * 4 }));

const tcpArb = fc.record({
  sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u16, urgent: u16, options: words(10), payload: bytes(80),
});
const udpArb = fc.record({ sport: u16, dport: u16, payload: bytes(80), noChecksum: fc.boolean() });
// Non-error ICMP: echo request/reply (id = "port"), timestamp (13: no port).
const icmpArb = fc.record({
  type: fc.constantFrom(ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, 13),
  code: fc.constantFrom(0, 0, 0, 5),
  id: u16,
  seq: u16,
  payload: bytes(64),
});
const ipArb = fc.record({
  src: u32, dst: u32, ttl: fc.integer({ min: 1, max: 255 }), id: u16, df: fc.boolean(), tos: u8, ipOptions: words(10),
});
const specArb: fc.Arbitrary<PacketSpec> = fc.oneof(
  fc.tuple(ipArb, tcpArb).map(([i, tcp]) => ({ ...i, tcp })),
  fc.tuple(ipArb, udpArb).map(([i, udp]) => ({ ...i, udp })),
  fc.tuple(ipArb, icmpArb).map(([i, icmp]) => ({ ...i, icmp })),
);

/** The spec with its source or destination (address, "port") replaced, as a full rebuild oracle. */
function withEndpoint(s: PacketSpec, isSrc: boolean, addr: number, port: number): PacketSpec {
  const o: PacketSpec = { ...s, [isSrc ? 'src' : 'dst']: addr };
  if (s.tcp) o.tcp = { ...s.tcp, [isSrc ? 'sport' : 'dport']: port };
  if (s.udp) o.udp = { ...s.udp, [isSrc ? 'sport' : 'dport']: port };
  if (s.icmp) {
    const echo = s.icmp.type === ICMP_ECHO_REQUEST || s.icmp.type === ICMP_ECHO_REPLY;
    o.icmp = echo && isSrc ? { ...s.icmp, id: port } : { ...s.icmp };
  }
  return o;
}

function parseOk(b: Uint8Array, m = new PacketMeta(), off = 0, len = b.length - off): PacketMeta {
  const r = parseIpv4(b, off, len, m);
  expect(DROP_REASON_NAMES[r]).toBe('none');
  return m;
}

describe('drop reasons', () => {
  it('names are kebab-case, unique and indexed by code', () => {
    expect(DROP_REASON_NAMES.length).toBe(DROP_REASON_COUNT);
    expect(new Set(DROP_REASON_NAMES).size).toBe(DROP_REASON_NAMES.length);
    for (const n of DROP_REASON_NAMES) expect(n).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
    expect(DROP_REASON_NAMES[DropReason.None]).toBe('none');
    expect(DROP_REASON_NAMES[DropReason.TooShort]).toBe('too-short');
    expect(DROP_REASON_NAMES[DropReason.BadIpChecksum]).toBe('bad-ip-checksum');
    expect(DROP_REASON_NAMES[DropReason.Fragment]).toBe('fragment');
    expect(DROP_REASON_NAMES[DropReason.IcmpTruncatedInner]).toBe('icmp-truncated-inner');
    expect(DROP_REASON_NAMES[DropReason.IpipEcnError]).toBe('ipip-ecn-error');
  });
});

describe('fixtures parse', () => {
  it('TCP SYN', () => {
    const m = parseOk(SYN);
    expect(m).toMatchObject({
      off: 0, ihl: 20, totalLen: 60, proto: IPPROTO_TCP, ttl: 64, df: true, ipId: 0x4d2e, l4off: 20, l4len: 40,
      l4hdrLen: 40, sport: 43210, dport: 80, tcpFlags: TCP_SYN, isIcmpError: false, icmpType: -1,
    });
    expect(m.src).toBe(0x0af40105);
    expect(ipToString(m.dst)).toBe('10.96.0.10');
  });

  it('UDP DNS query', () => {
    const m = parseOk(DNS);
    expect(m).toMatchObject({ proto: IPPROTO_UDP, sport: 53000, dport: 53, udpLen: 73, l4len: 73, l4hdrLen: 8, df: false });
    expect(m.dst).toBe(ip('10.96.0.10'));
  });

  it('ICMP echo request: sport = id, dport = 0', () => {
    const m = parseOk(ECHO);
    expect(m).toMatchObject({ proto: IPPROTO_ICMP, icmpType: 8, icmpCode: 0, icmpId: 0x1c2b, sport: 0x1c2b, dport: 0 });
  });

  it('ICMP echo reply: also sport = id, dport = 0 (conntrack ICMP tuple (1, src, dst, id, 0))', () => {
    const reply = buildPacket({ src: ip('10.96.0.10'), dst: ip('10.244.1.5'), icmp: { type: 0, id: 0x1c2b, seq: 1 } });
    const m = parseOk(reply);
    expect(m).toMatchObject({ icmpType: 0, icmpId: 0x1c2b, sport: 0x1c2b, dport: 0 });
  });

  it('ICMP port unreachable quoting a UDP datagram', () => {
    const m = parseOk(UNREACH);
    expect(m).toMatchObject({
      proto: IPPROTO_ICMP, icmpType: 3, icmpCode: 3, isIcmpError: true, innerOff: 28, innerLen: 93, innerIhl: 20,
      innerProto: IPPROTO_UDP, innerSport: 53000, innerDport: 53, innerL4off: 48, sport: 0, dport: 0,
    });
    expect(ipToString(m.src)).toBe('10.244.2.7');
    expect(ipToString(m.innerSrc)).toBe('10.244.1.5');
    expect(ipToString(m.innerDst)).toBe('10.244.2.7');
  });

  it('buildPacket reproduces the independently generated fixtures', () => {
    const syn = parsePacket(SYN);
    expect(
      buildPacket({
        src: ip('10.244.1.5'), dst: ip('10.96.0.10'), id: 0x4d2e, df: true,
        tcp: { sport: 43210, dport: 80, seq: 0x9c2d1f3a, flags: TCP_SYN, window: 64240, options: syn.tcp!.options },
      }).equals(SYN),
    ).toBe(true);
    expect(
      buildPacket({ src: ip('10.244.1.5'), dst: ip('10.96.0.10'), id: 0x1234, udp: { sport: 53000, dport: 53, payload: DNS_QUERY } }).equals(DNS),
    ).toBe(true);
    expect(
      buildPacket({
        src: ip('10.244.1.5'), dst: ip('10.96.0.10'), id: 0xbeef, df: true,
        icmp: { type: 8, id: 0x1c2b, seq: 1, payload: ECHO.subarray(28) },
      }).equals(ECHO),
    ).toBe(true);
    expect(
      buildPacket({
        src: ip('10.244.2.7'), dst: ip('10.244.1.5'), id: 0x7777, tos: 0xc0,
        icmp: { type: 3, code: 3, quoted: UNREACH.subarray(28) },
      }).equals(UNREACH),
    ).toBe(true);
  });

  it('Repr parse -> emit round-trips the fixtures byte-exactly', () => {
    for (const f of [SYN, SYN_DNAT, DNS, ECHO, UNREACH, UNREACH_UNNAT]) {
      const p = parsePacket(f);
      const out = Buffer.alloc(packetLen(p));
      expect(emitPacket(p, out)).toBe(f.length);
      expect(out.toString('hex')).toBe(f.toString('hex'));
    }
    const s = parsePacket(SYN);
    expect(s.ip).toMatchObject({ src: ip('10.244.1.5'), proto: 6, ttl: 64, df: true, mf: false, payloadLen: 40 });
    expect(s.tcp).toMatchObject({ sport: 43210, dport: 80, seq: 0x9c2d1f3a, ack: 0, flags: TCP_SYN, window: 64240 });
    expect(Buffer.from(s.tcp!.options!).toString('hex')).toBe('020405b40402080a0a1b2c3d0000000001030307');
  });

  it('header Reprs round-trip individually', () => {
    const i = Ipv4Repr.parse(SYN);
    const hb = Buffer.alloc(Ipv4Repr.bufferLen(i));
    Ipv4Repr.emit(i, hb, 0);
    expect(hb.equals(SYN.subarray(0, 20))).toBe(true);
    const t = TcpRepr.parse(SYN, 20, 40);
    const tb = Buffer.alloc(TcpRepr.bufferLen(t));
    TcpRepr.emit(t, tb, 0, i.src, i.dst);
    expect(tb.equals(SYN.subarray(20))).toBe(true);
    const u = UdpRepr.parse(DNS, 20, 73);
    const ub = Buffer.alloc(UdpRepr.bufferLen(u));
    UdpRepr.emit(u, ub, 0, ip('10.244.1.5'), ip('10.96.0.10'));
    expect(ub.equals(DNS.subarray(20))).toBe(true);
    const c = IcmpRepr.parse(ECHO, 20, 64);
    expect(c).toMatchObject({ type: 8, code: 0, id: 0x1c2b, seq: 1 });
    const cb = Buffer.alloc(IcmpRepr.bufferLen(c));
    IcmpRepr.emit(c, cb, 0);
    expect(cb.equals(ECHO.subarray(20))).toBe(true);
    expect(() => Ipv4Repr.parse(SYN.subarray(0, 19))).toThrow();
    expect(() => TcpRepr.parse(SYN, 20, 19)).toThrow();
  });

  it('Repr parse -> emit round-trips random packets (with IP and TCP options)', () => {
    fc.assert(
      fc.property(specArb, (s) => {
        const b = buildPacket(s);
        parseOk(b);
        const p = parsePacket(b);
        const out = Buffer.alloc(packetLen(p));
        emitPacket(p, out);
        expect(out.equals(b)).toBe(true);
      }),
    );
  });
});

describe('fixture rewrites', () => {
  it('DNAT of the SYN gives the independently computed bytes', () => {
    const b = Buffer.from(SYN);
    const m = parseOk(b);
    rewriteDst(b, m, ip('10.244.2.7'), 8080);
    expect(b.toString('hex')).toBe(SYN_DNAT.toString('hex'));
    expect(m).toMatchObject({ dst: ip('10.244.2.7'), dport: 8080, ttl: 64 });
    parseOk(b);
  });

  it('un-DNAT of a port unreachable (outer src, quoted dst + port, quoted UDP checksum)', () => {
    const b = Buffer.from(UNREACH);
    const m = parseOk(b);
    rewriteIcmpInnerDst(b, m, ip('10.96.0.10'), 53);
    rewriteSrc(b, m, ip('10.96.0.10'), 0);
    expect(b.toString('hex')).toBe(UNREACH_UNNAT.toString('hex'));
    expect(m).toMatchObject({ src: ip('10.96.0.10'), innerDst: ip('10.96.0.10'), innerDport: 53 });
    // and the quoted datagram is again exactly the original query
    expect(b.subarray(28).equals(DNS)).toBe(true);
  });

  it('rewrites work at a non-zero offset inside a larger slab', () => {
    const slab = Buffer.alloc(2048, 0xaa);
    SYN.copy(slab, 64 + 20);
    const m = parseOk(slab, new PacketMeta(), 84, SYN.length);
    rewriteDst(slab, m, ip('10.244.2.7'), 8080);
    expect(slab.subarray(84, 84 + 60).equals(SYN_DNAT)).toBe(true);
    expect(slab[83]).toBe(0xaa);
    expect(slab[144]).toBe(0xaa);
  });
});

describe('parseIpv4 rejects malformed packets', () => {
  const m = new PacketMeta();
  const mut = (b: Buffer, f: (x: Buffer) => void, fixIp = true) => {
    const x = Buffer.from(b);
    f(x);
    if (fixIp) {
      const ihl = (x[0] & 15) * 4;
      x.writeUInt16BE(0, 10);
      if (ihl >= 20 && ihl <= x.length) x.writeUInt16BE(checksum(x, 0, ihl), 10);
    }
    return x;
  };
  const reason = (b: Uint8Array, off = 0, len = b.length - off, verify = true) =>
    DROP_REASON_NAMES[parseIpv4(b, off, len, m, verify)];

  it('IP layer', () => {
    expect(reason(SYN.subarray(0, 19))).toBe('too-short');
    expect(reason(SYN, 50, 20)).toBe('too-short'); // off+len beyond buffer
    expect(reason(SYN, -1, 20)).toBe('too-short');
    expect(reason(mut(SYN, (x) => (x[0] = 0x65)))).toBe('not-ipv4');
    expect(reason(mut(SYN, (x) => (x[0] = 0x44), false))).toBe('bad-ihl');
    expect(reason(SYN.subarray(0, 22), 0, 22)).toBe('bad-total-length');
    expect(reason(mut(SYN, (x) => (x[0] = 0x4f)))).toBe('truncated-l4'); // a 60-byte header leaves no TCP
    expect(reason(mut(SYN, (x) => x.writeUInt16BE(19, 2)))).toBe('bad-total-length');
    expect(reason(mut(SYN, (x) => x.writeUInt16BE(61, 2)))).toBe('bad-total-length');
    expect(reason(mut(SYN, (x) => (x[10] ^= 1), false))).toBe('bad-ip-checksum');
    expect(reason(mut(SYN, (x) => (x[6] |= 0x20)))).toBe('fragment');
    expect(reason(mut(SYN, (x) => x.writeUInt16BE(0x4001, 6)))).toBe('fragment');
    expect(reason(mut(SYN, (x) => (x[9] = 47)))).toBe('unsupported-proto');
    expect(m.proto).toBe(47);
    expect(m.src).toBe(ip('10.244.1.5'));
  });

  it('a too-long IHL is bad-ihl', () => {
    // IHL 15 = 60 bytes but only 24 bytes present
    const x = Buffer.alloc(24);
    x[0] = 0x4f;
    expect(reason(x)).toBe('bad-ihl');
  });

  it('trailing bytes beyond the total length are ignored', () => {
    const x = Buffer.concat([SYN, Buffer.alloc(6, 0xee)]);
    expect(reason(x)).toBe('none');
    expect(m.totalLen).toBe(60);
    expect(m.len).toBe(66);
  });

  it('TCP', () => {
    const short = buildPacket({ src: 1, dst: 2, proto: 6, payload: new Uint8Array(19) });
    expect(reason(short)).toBe('truncated-l4');
    expect(reason(mut(SYN, (x) => (x[32] = 0x40)))).toBe('bad-tcp-header');
    expect(reason(mut(SYN, (x) => (x[32] = 0xb0)))).toBe('bad-tcp-header'); // 44 > 40
    expect(reason(mut(SYN, (x) => (x[50] ^= 0x80)))).toBe('bad-l4-checksum');
    expect(reason(mut(SYN, (x) => (x[50] ^= 0x80)), 0, 60, false)).toBe('none');
  });

  it('UDP', () => {
    expect(reason(buildPacket({ src: 1, dst: 2, proto: 17, payload: new Uint8Array(7) }))).toBe('truncated-l4');
    expect(reason(mut(DNS, (x) => x.writeUInt16BE(7, 24)))).toBe('bad-udp-length');
    expect(reason(mut(DNS, (x) => x.writeUInt16BE(74, 24)))).toBe('bad-udp-length');
    expect(reason(mut(DNS, (x) => (x[40] ^= 1)))).toBe('bad-l4-checksum');
    // checksum 0 = none: accepted even though the data changed
    expect(reason(mut(DNS, (x) => { x.writeUInt16BE(0, 26); x[40] ^= 1; }))).toBe('none');
    // UDP length shorter than the IP payload: accepted (as Linux), checksum over the UDP length
    const d = Buffer.alloc(11);
    UdpRepr.emit({ sport: 1, dport: 2, payload: Buffer.from('abc') }, d, 0, 1, 2);
    const pad = buildPacket({ src: 1, dst: 2, proto: 17, payload: Buffer.concat([d, Buffer.alloc(4)]) });
    expect(reason(pad)).toBe('none');
    expect(m.udpLen).toBe(8 + 3);
    expect(m.l4len).toBe(8 + 3 + 4);
  });

  it('ICMP', () => {
    expect(reason(buildPacket({ src: 1, dst: 2, proto: 1, payload: new Uint8Array(7) }))).toBe('truncated-l4');
    expect(reason(mut(ECHO, (x) => (x[40] ^= 1)))).toBe('bad-l4-checksum');
    const err = (quoted: Uint8Array) => buildPacket({ src: 1, dst: 2, icmp: { type: 3, code: 3, quoted } });
    expect(reason(err(DNS.subarray(0, 19)))).toBe('icmp-truncated-inner');
    expect(reason(err(DNS.subarray(0, 27)))).toBe('icmp-truncated-inner');
    expect(reason(err(DNS.subarray(0, 28)))).toBe('none');
    const withOpts = buildPacket({ src: 1, dst: 2, ipOptions: new Uint8Array(8), udp: { sport: 1, dport: 2 } });
    expect(reason(err(withOpts.subarray(0, 35)))).toBe('icmp-truncated-inner');
    expect(reason(err(withOpts.subarray(0, 36)))).toBe('none');
    expect(m.innerIhl).toBe(28);
    expect(m.innerL4off).toBe(28 + 28);
    expect(reason(err(mut(DNS, (x) => (x[0] = 0x65)).subarray(0, 28)))).toBe('icmp-bad-inner');
    expect(reason(err(mut(DNS, (x) => (x[0] = 0x44), false).subarray(0, 28)))).toBe('icmp-bad-inner');
  });

  it('never leaks fields from the previous packet', () => {
    const mm = new PacketMeta();
    parseOk(UNREACH, mm);
    parseOk(SYN, mm);
    expect(mm).toMatchObject({ isIcmpError: false, innerProto: 0, innerSrc: 0, innerSport: 0, icmpType: -1, udpLen: 0 });
    parseOk(DNS, mm);
    expect(mm).toMatchObject({ tcpFlags: 0, l4hdrLen: 8 });
    expect(parseIpv4(Buffer.alloc(10), 0, 10, mm)).toBe(DropReason.TooShort);
    expect(mm).toMatchObject({ proto: 0, src: 0, sport: 0, totalLen: 0 });
  });
});

/** Independent check of the IP header checksum. */
function ipHeaderOk(b: Uint8Array, off = 0): boolean {
  const ihl = (b[off] & 15) * 4;
  let s = 0;
  for (let i = 0; i < ihl; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

describe('parseIpv4 fuzz', () => {
  it('random bytes: never throws, returns a known code, ok implies a valid IP checksum', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), fc.boolean(), (b, v) => {
        // bias towards IPv4-looking input
        const x = Buffer.from(b);
        if (x.length > 0 && (x[0] & 1) === 0) x[0] = 0x45;
        const r = parseIpv4(x, 0, x.length, new PacketMeta(), v);
        expect(r).toBeGreaterThanOrEqual(0);
        expect(r).toBeLessThan(DROP_REASON_COUNT);
        if (r === DropReason.None) expect(ipHeaderOk(x)).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  it('random IPv4 headers with a valid checksum over random payloads: never throws', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 20, maxLength: 120 }),
        fc.constantFrom(1, 4, 6, 17, 47),
        fc.boolean(),
        (b, proto, v) => {
          const x = Buffer.from(b);
          x[0] = 0x45;
          x[9] = proto;
          x.writeUInt16BE(x.length - (x[1] & 3), 2);
          x[6] &= 0x40;
          x[7] = 0;
          x.writeUInt16BE(0, 10);
          x.writeUInt16BE(checksum(x, 0, 20), 10);
          const m = new PacketMeta();
          const r = parseIpv4(x, 0, x.length, m, v);
          expect(DROP_REASON_NAMES[r]).toBeDefined();
          if (r === DropReason.None && m.isIcmpError) expect(m.innerOff + m.innerLen).toBeLessThanOrEqual(x.length);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('valid packets truncated anywhere are rejected; a flipped header bit is rejected', () => {
    fc.assert(
      fc.property(specArb, fc.nat(), fc.nat(), (s, cut, bit) => {
        const b = buildPacket(s);
        const m = new PacketMeta();
        const len = cut % b.length;
        expect(parseIpv4(b, 0, len, m)).not.toBe(DropReason.None);
        const ihl = (b[0] & 15) * 4;
        const flipped = Buffer.from(b);
        const k = bit % (ihl * 8);
        flipped[k >> 3] ^= 0x80 >> (k & 7);
        expect(parseIpv4(flipped, 0, flipped.length, m)).not.toBe(DropReason.None);
      }),
      { numRuns: 2000 },
    );
  });

  it('a flipped L4 bit is rejected when L4 checksums are verified', () => {
    fc.assert(
      fc.property(specArb, fc.nat(), (s, bit) => {
        const b = buildPacket(s);
        const m = parseOk(b);
        if (m.l4len === 0) return;
        const k = bit % (m.l4len * 8);
        const x = Buffer.from(b);
        x[m.l4off + (k >> 3)] ^= 0x80 >> (k & 7);
        const r = parseIpv4(x, 0, x.length, new PacketMeta());
        const byte = k >> 3;
        const udpEscape =
          m.proto === IPPROTO_UDP && (s.udp!.noChecksum || ((byte === 6 || byte === 7) && x.readUInt16BE(m.l4off + 6) === 0) || byte === 4 || byte === 5);
        if (!udpEscape) expect(r).not.toBe(DropReason.None);
      }),
      { numRuns: 2000 },
    );
  });

  it('a wrong IP checksum value is never accepted', () => {
    fc.assert(
      fc.property(specArb, u16, (s, c) => {
        const b = buildPacket(s);
        const good = b.readUInt16BE(10);
        if ((c % 0xffff) === (good % 0xffff)) return; // +0 / -0 are the same one's-complement value
        b.writeUInt16BE(c, 10);
        expect(parseIpv4(b, 0, b.length, new PacketMeta())).toBe(DropReason.BadIpChecksum);
      }),
    );
  });
});

describe('incremental rewrites equal full recomputation', () => {
  it('rewriteSrc / rewriteDst of random packets with random addresses and ports', () => {
    fc.assert(
      fc.property(specArb, fc.boolean(), u32, u16, (s, isSrc, addr, port) => {
        const b = buildPacket(s);
        const m = parseOk(b);
        if (isSrc) rewriteSrc(b, m, addr, port);
        else rewriteDst(b, m, addr, port);
        const expected = buildPacket(withEndpoint(s, isSrc, addr, port));
        expect(b.toString('hex')).toBe(expected.toString('hex'));
        // meta follows the bytes
        const fresh = parseOk(b);
        for (const k of ['src', 'dst', 'sport', 'dport', 'icmpId'] as const) expect(m[k]).toBe(fresh[k]);
      }),
      { numRuns: 3000 },
    );
  });

  it('both rewrites in sequence (the NAT hot path)', () => {
    fc.assert(
      fc.property(specArb, u32, u16, u32, u16, (s, da, dp, sa, sp) => {
        const b = buildPacket(s);
        const m = parseOk(b);
        rewriteDst(b, m, da, dp);
        rewriteSrc(b, m, sa, sp);
        const want = withEndpoint(withEndpoint(s, false, da, dp), true, sa, sp);
        expect(b.toString('hex')).toBe(buildPacket(want).toString('hex'));
      }),
      { numRuns: 3000 },
    );
  });

  it('UDP: checksum 0 stays 0; a computed 0 becomes 0xFFFF', () => {
    fc.assert(
      fc.property(fc.tuple(ipArb, udpArb), u32, u16, ([i, u], addr, port) => {
        const b = buildPacket({ ...i, udp: u });
        const m = parseOk(b);
        rewriteSrc(b, m, addr, port);
        const c = b.readUInt16BE(m.l4off + 6);
        if (u.noChecksum) expect(c).toBe(0);
        else expect(c).not.toBe(0);
      }),
    );
    // Construct a rewrite whose checksum computes to exactly 0.
    const b = buildPacket({ src: ip('10.0.0.1'), dst: ip('10.0.0.2'), udp: { sport: 1000, dport: 53, payload: Buffer.from('hello') } });
    const c = b.readUInt16BE(26);
    // Adding c to the sum (via the low source word) makes the folded sum 0xFFFF, i.e. checksum 0.
    let low = 0x0001 + c;
    low = (low & 0xffff) + (low >>> 16);
    const newSrc = ((ip('10.0.0.1') & 0xffff0000) | low) >>> 0;
    const m = parseOk(b);
    rewriteSrc(b, m, newSrc, 1000);
    expect(b.readUInt16BE(26)).toBe(0xffff);
    expect(buildPacket({ src: newSrc, dst: ip('10.0.0.2'), udp: { sport: 1000, dport: 53, payload: Buffer.from('hello') } }).equals(b)).toBe(true);
    parseOk(b);
  });

  it('ICMP echo: id rewrites, including the all-zero echo reply corner case', () => {
    const s: PacketSpec = { src: 1, dst: 2, icmp: { type: ICMP_ECHO_REPLY, id: 5, seq: 0 } };
    const b = buildPacket(s);
    const m = parseOk(b);
    rewriteSrc(b, m, 1, 0); // id 5 -> 0: every ICMP word is now zero
    expect(b.readUInt16BE(22)).toBe(0xffff);
    expect(b.equals(buildPacket({ ...s, icmp: { type: 0, id: 0 } }))).toBe(true);
    parseOk(b);
    const e = Buffer.from(ECHO);
    const me = parseOk(e);
    rewriteIcmpId(e, me, 0x4242);
    expect(me).toMatchObject({ sport: 0x4242, icmpId: 0x4242 });
    parseOk(e);
    rewriteDst(e, me, 3, 999); // request: dport ignored
    expect(me.icmpId).toBe(0x4242);
  });
});

describe('ICMP error inner rewrites', () => {
  // Inner datagrams: TCP, UDP (with or without checksum), ICMP echo request/reply.
  const innerArb: fc.Arbitrary<PacketSpec> = fc.oneof(
    fc.tuple(ipArb, tcpArb).map(([i, tcp]) => ({ ...i, tcp })),
    fc.tuple(ipArb, udpArb).map(([i, udp]) => ({ ...i, udp })),
    fc.tuple(ipArb, icmpArb.filter((c) => c.type !== 13)).map(([i, icmp]) => ({ ...i, icmp })),
  );

  it('quoted address/port rewrites equal rebuilding the error around the rewritten datagram', () => {
    fc.assert(
      fc.property(
        innerArb,
        fc.nat(),
        fc.constantFrom(ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, 4, 12),
        fc.boolean(),
        u32,
        u16,
        fc.tuple(u32, u32),
        (inner, q, type, isSrc, addr, port, [os, od]) => {
          const ib = buildPacket(inner);
          const ihl = (ib[0] & 15) * 4;
          // quote lengths: IHL+8 .. whole datagram, with the TCP-checksum boundary cases likely
          const choices = [ihl + 8, ihl + 16, ihl + 17, ihl + 18, ihl + 20, ib.length];
          const qlen = Math.min(ib.length, q % 2 === 0 ? choices[(q >> 1) % choices.length] : ihl + 8 + (q % (ib.length - ihl - 7)));
          const err = (quoted: Uint8Array) => buildPacket({ src: os, dst: od, icmp: { type, code: 1, quoted } });
          const b = err(ib.subarray(0, qlen));
          const m = parseOk(b);
          expect(m.isIcmpError).toBe(true);
          if (isSrc) rewriteIcmpInnerSrc(b, m, addr, port);
          else rewriteIcmpInnerDst(b, m, addr, port);

          const eb = Buffer.from(buildPacket(withEndpoint(inner, isSrc, addr, port)).subarray(0, qlen));
          // A TCP checksum only partly inside the quote cannot be updated: it keeps the original byte.
          if (inner.tcp && qlen < ihl + 18) ib.copy(eb, ihl + 16, ihl + 16, qlen);
          expect(b.toString('hex')).toBe(err(eb).toString('hex'));
          const fresh = parseOk(b);
          for (const k of ['innerSrc', 'innerDst', 'innerSport', 'innerDport'] as const) expect(m[k]).toBe(fresh[k]);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('the outer rewrite of an ICMP error ignores the port', () => {
    const b = Buffer.from(UNREACH);
    const m = parseOk(b);
    rewriteDst(b, m, ip('10.244.1.9'), 1234);
    rewriteSrc(b, m, ip('10.96.0.10'), 4321);
    const want = buildPacket({ src: ip('10.96.0.10'), dst: ip('10.244.1.9'), id: 0x7777, tos: 0xc0, icmp: { type: 3, code: 3, quoted: UNREACH.subarray(28) } });
    expect(b.equals(want)).toBe(true);
  });
});

describe('IPIP', () => {
  it('encap then decap returns the identical inner packet; outer fields follow Linux tunl0', () => {
    fc.assert(
      fc.property(specArb, u32, u32, u16, fc.boolean(), fc.nat(64), (s, os, od, id, inherit, pad) => {
        const inner = buildPacket(s);
        const slab = Buffer.alloc(20 + pad + inner.length + 7, 0x5a);
        const innerOff = 20 + pad;
        inner.copy(slab, innerOff);
        const start = encapIpip(slab, innerOff, inner.length, os, od, id, inherit);
        expect(start).toBe(innerOff - IPIP_HEADER_LEN);
        const total = inner.length + 20;
        const m = new PacketMeta();
        expect(DROP_REASON_NAMES[decapIpip(slab, start, total + 7, m)]).toBe('none');
        expect(slab.subarray(m.l4off, m.l4off + m.l4len).equals(inner)).toBe(true);
        expect(ipHeaderOk(slab, start)).toBe(true);
        expect(m).toMatchObject({ proto: IPPROTO_IPIP, src: os >>> 0, dst: od >>> 0, ipId: id, totalLen: total, ttl: s.ttl });
        expect(m.df).toBe(!!s.df);
        const innerTos = s.tos ?? 0;
        const ecn = innerTos & 3;
        expect(m.tos).toBe(((inherit ? innerTos : 0) & ~3) | (ecn === 3 ? 2 : ecn));
        if (pad > 0) expect(slab[start - 1]).toBe(0x5a);
        // the inner packet still parses
        parseOk(slab, new PacketMeta(), m.l4off, m.l4len);
      }),
      { numRuns: 1000 },
    );
  });

  it('encap refuses missing headroom and oversize packets', () => {
    const b = Buffer.from(SYN);
    expect(encapIpip(b, 0, b.length, 1, 2, 3)).toBe(-1);
    expect(encapIpip(Buffer.alloc(70000), 20, 65516, 1, 2, 3)).toBe(-1);
  });

  it('decap rejects non-IPIP, short or non-IPv4 inner packets; propagates CE', () => {
    const m = new PacketMeta();
    expect(decapIpip(SYN, 0, SYN.length, m)).toBe(DropReason.NotIpip);
    const short = buildPacket({ src: 1, dst: 2, proto: 4, payload: new Uint8Array(19) });
    expect(decapIpip(short, 0, short.length, m)).toBe(DropReason.IpipBadInner);
    const v6 = buildPacket({ src: 1, dst: 2, proto: 4, payload: Buffer.alloc(40, 0x60) });
    expect(decapIpip(v6, 0, v6.length, m)).toBe(DropReason.IpipBadInner);
    const bad = buildPacket({ src: 1, dst: 2, proto: 4, payload: SYN });
    bad[10] ^= 1;
    expect(decapIpip(bad, 0, bad.length, m)).toBe(DropReason.BadIpChecksum);

    // outer CE over an ECT(0) inner packet: inner becomes CE with a valid checksum
    const ect = buildPacket({ src: 5, dst: 6, tos: 0x02, udp: { sport: 1, dport: 2 } });
    const ce = buildPacket({ src: 1, dst: 2, tos: 0x03, proto: 4, payload: ect });
    expect(decapIpip(ce, 0, ce.length, m)).toBe(DropReason.None);
    expect(ce[m.l4off + 1]).toBe(0x03);
    expect(ce.subarray(m.l4off).equals(buildPacket({ src: 5, dst: 6, tos: 0x03, udp: { sport: 1, dport: 2 } }))).toBe(true);
    // outer CE over a Not-ECT inner packet: dropped
    const notEct = buildPacket({ src: 1, dst: 2, tos: 0x03, proto: 4, payload: DNS });
    expect(decapIpip(notEct, 0, notEct.length, m)).toBe(DropReason.IpipEcnError);
  });
});

describe('ICMP error generation', () => {
  const me = ip('10.244.1.1');

  it('fragmentation needed quotes the original and carries the MTU', () => {
    const big = buildPacket({ src: ip('10.244.1.5'), dst: ip('10.244.2.7'), df: true, icmp: { type: 8, id: 7, seq: 1, payload: new Uint8Array(1472).fill(0x61) } });
    expect(big.length).toBe(1500);
    const out = Buffer.alloc(2048);
    const n = writeIcmpFragNeeded(out, 64, big, 0, big.length, me, 1480);
    expect(n).toBe(576);
    const m = parseOk(out, new PacketMeta(), 64, n);
    expect(m).toMatchObject({ src: me, dst: ip('10.244.1.5'), ttl: 64, proto: 1, icmpType: 3, icmpCode: ICMP_FRAG_NEEDED, isIcmpError: true, df: false, tos: 0xc0 });
    expect(out.readUInt16BE(64 + 26)).toBe(1480);
    expect(out.subarray(64 + 28, 64 + n).equals(big.subarray(0, 548))).toBe(true);
    expect(m).toMatchObject({ innerSrc: ip('10.244.1.5'), innerDst: ip('10.244.2.7'), innerProto: 1, innerSport: 7 });
    // RFC 792 minimum quote when asked for
    const n2 = writeIcmpFragNeeded(out, 0, big, 0, big.length, me, 1480, 9, 20 + 8 + 28);
    expect(n2).toBe(56);
    const m2 = parseOk(out, new PacketMeta(), 0, n2);
    expect(m2).toMatchObject({ ipId: 9, innerLen: 28 });
  });

  it('port unreachable for a rejected SYN, time exceeded, and the same-buffer case', () => {
    const out = Buffer.alloc(600);
    const n = writeIcmpUnreachable(out, 0, SYN, 0, SYN.length, ip('10.96.0.10'), ICMP_PORT_UNREACH);
    expect(n).toBe(28 + 60);
    const m = parseOk(out, new PacketMeta(), 0, n);
    expect(m).toMatchObject({ icmpType: 3, icmpCode: 3, src: ip('10.96.0.10'), dst: ip('10.244.1.5'), innerSport: 43210, innerDport: 80 });
    expect(out.subarray(28, n).equals(SYN)).toBe(true);

    const t = writeIcmpTimeExceeded(out, 0, DNS, 0, DNS.length, me);
    expect(parseOk(out, new PacketMeta(), 0, t)).toMatchObject({ icmpType: 11, icmpCode: 0, innerDport: 53 });

    // in place: the original sits at slot offset 64, the error is written over it at 10 (overlapping)
    const slab = Buffer.alloc(2048);
    DNS.copy(slab, 64);
    const k = writeIcmpUnreachable(slab, 10, slab, 64, DNS.length, me, ICMP_PORT_UNREACH);
    expect(slab.subarray(10 + 28, 10 + k).equals(DNS)).toBe(true);
    parseOk(slab, new PacketMeta(), 10, k);

    expect(writeIcmpUnreachable(Buffer.alloc(27), 0, SYN, 0, SYN.length, me, 3)).toBe(0);
    expect(writeIcmpUnreachable(out, 0, SYN, 0, 19, me, 3)).toBe(0);
    // clipped to the room in `out`, but never below the RFC 792 minimum (IP header + 8)
    expect(writeIcmpUnreachable(Buffer.alloc(55), 0, SYN, 0, SYN.length, me, 3)).toBe(0);
    const small = Buffer.alloc(60);
    expect(writeIcmpUnreachable(small, 0, SYN, 0, SYN.length, me, 3)).toBe(60);
    expect(parseIpv4(small, 0, 60, new PacketMeta())).toBe(DropReason.None);
    // an original shorter than header + 8 is quoted whole
    const tiny = buildPacket({ src: 1, dst: 2, proto: 99, payload: new Uint8Array(3) });
    expect(writeIcmpUnreachable(out, 0, tiny, 0, tiny.length, me, 2)).toBe(28 + 23);
  });

  it('never answers an ICMP error or a broadcast/multicast/unspecified source', () => {
    expect(mayReplyWithIcmpError(parseOk(SYN))).toBe(true);
    expect(mayReplyWithIcmpError(parseOk(ECHO))).toBe(true);
    expect(mayReplyWithIcmpError(parseOk(UNREACH))).toBe(false);
    expect(mayReplyWithIcmpError(parseOk(buildPacket({ src: 0, dst: 2, udp: { sport: 1, dport: 2 } })))).toBe(false);
    expect(mayReplyWithIcmpError(parseOk(buildPacket({ src: 1, dst: ip('224.0.0.5'), udp: { sport: 1, dport: 2 } })))).toBe(false);
    expect(mayReplyWithIcmpError(parseOk(buildPacket({ src: 1, dst: 0xffffffff, udp: { sport: 1, dport: 2 } })))).toBe(false);
  });
});

describe('addresses', () => {
  it('parseIp / ipToString', () => {
    expect(parseIp('10.1.139.84')).toBe(0x0a018b54);
    expect(ipToString(0x0a018b54)).toBe('10.1.139.84');
    expect(parseIp('255.255.255.255')).toBe(0xffffffff);
    expect(ipToString(-1)).toBe('255.255.255.255');
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.-4', ' 1.2.3.4', '1.2.3.4 ', 'a.b.c.d', '1..3.4']) {
      expect(() => parseIp(bad)).toThrow();
      expect(tryParseIp(bad)).toBe(-1);
    }
    fc.assert(fc.property(u32, (n) => { expect(parseIp(ipToString(n))).toBe(n); }));
  });
});
