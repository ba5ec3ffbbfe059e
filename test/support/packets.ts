// IPv4/UDP packet builders and checks for the TUN tests (test-only, allocation does not matter).

export function checksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export function ipv4(src: number, dst: number, proto: number, payload: Uint8Array, id = 0x4b54): Buffer {
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(0x4000, 6); // DF
  b[8] = 64;
  b[9] = proto;
  b.writeUInt32BE(src >>> 0, 12);
  b.writeUInt32BE(dst >>> 0, 16);
  b.writeUInt16BE(checksum(b, 0, 20), 10);
  b.set(payload, 20);
  return b;
}

export function udp4(src: number, dst: number, sport: number, dport: number, data: Uint8Array): Buffer {
  const u = Buffer.alloc(8 + data.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length, 4);
  u.set(data, 8);
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(src >>> 0, 0);
  pseudo.writeUInt32BE(dst >>> 0, 4);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(u.length, 10);
  const c = checksum(u, 0, u.length, 0xffff & ~checksum(pseudo));
  u.writeUInt16BE(c === 0 ? 0xffff : c, 6);
  return ipv4(src, dst, 17, u);
}

export function udpValid(p: Buffer): boolean {
  const ihl = (p[0] & 0x0f) * 4;
  const pseudo = Buffer.alloc(12);
  pseudo.set(p.subarray(12, 20), 0);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(p.length - ihl, 10);
  return checksum(p, ihl, p.length, 0xffff & ~checksum(pseudo)) === 0;
}
