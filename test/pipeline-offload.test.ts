// The pipeline in offload mode at unit level (hand-built packets in a PacketBatch, no TUN): a TSO
// super-packet is NATed with the partial-checksum rewrites and handed back with its vnet header; one
// for another node is cut in software into IPIP packets whose inner checksums verify; segments from
// another node are coalesced into one GSO super-packet (GRO); a bad vnet header is a counted drop.
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { PacketBatch, OFFLOAD_SLOT_SIZE, VNET } from '../src/io';
import {
  buildPacket, encapIpip, fold, pseudoHeaderSum, parseIpv4, segmentTcp, read16, read32, write16, PacketMeta, VnetHdr,
  IPPROTO_TCP, IPPROTO_IPIP, TCP_ACK, TCP_PSH, TCP_SYN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_NONE,
} from '../src/netstack';
import { ConntrackTable, DIR_ORIGINAL, DIR_REPLY, Tuple } from '../src/conntrack';
import { buildRules, compileMatcher, loadConfig, makeNodeSettings, parseIPv4 } from '../src/nat';
import { Pipeline, ALL_DROP_REASONS, C_TX_IPIP } from '../src/datapath/pipeline';
import { HEADROOM, SLOT_SIZE } from '../src/io/batch';

const ROOT = path.resolve(__dirname, '..');
const ip = parseIPv4;
const CLIENT = ip('10.1.139.84'), VIP = ip('10.99.64.233');
const LOCAL_BACKEND = ip('10.1.139.93'), REMOTE_BACKEND = ip('10.1.236.141');
const NODE_IP = ip('192.168.2.2'), REMOTE_NODE = ip('192.168.2.3');
const MSS = 1448; // what the kernel puts in gso_size for a 1500-byte path with timestamps
const TUNNEL_MSS = 1428; // ... and after frag-needed 1480 for a path through the tunnel
const TCP_OPTS = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps: a 32-byte TCP header
const TCP_CSUM = 16;

function pipeline(): Pipeline {
  const state = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
  const node = makeNodeSettings(state, { hostnameOverride: 'worker-1' });
  return new Pipeline({
    nodeIP: NODE_IP, tunnelAddress: 0, serviceNet: ip('10.96.0.0'), serviceMask: ip('255.240.0.0'),
    remoteNodes: [{ name: 'worker-2', nodeIP: REMOTE_NODE, podNet: ip('10.1.236.128'), podMask: ip('255.255.255.192') }],
    tunnelMtu: 1480, fullyRandom: true, avoidReuseMs: 0,
  }, compileMatcher(buildRules(state, node), node), new ConntrackTable({ max: 64, seed: 1 }), true);
}

/** CLIENT:40000 -> VIP:9999 DNAT'ed to backend:8080, handshake done (ESTABLISHED). */
function established(p: Pipeline, backend: number): void {
  const slot = p.ct.create(new Tuple(IPPROTO_TCP, CLIENT, VIP, 40000, 9999), new Tuple(IPPROTO_TCP, backend, CLIENT, 8080, 40000), 0);
  expect(p.ct.update(slot, DIR_ORIGINAL, TCP_SYN, 0, 60, 0)).toBe(true);
  expect(p.ct.update(slot, DIR_REPLY, TCP_SYN | TCP_ACK, 0, 60, 1)).toBe(true);
  expect(p.ct.update(slot, DIR_ORIGINAL, TCP_ACK, 0, 52, 2)).toBe(true);
}

/** Deterministic payload (no randomness to seed). */
function payload(n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 131 + 7) & 0xff;
  return p;
}

/** The client's TSO super-packet as the TUN hands it over: partial checksum, TCPV4 vnet header. */
function tsoBatch(data: Uint8Array, gso = true, mss = MSS): PacketBatch {
  const pkt = buildPacket({ src: CLIENT, dst: VIP, id: 100, df: true, tcp: { sport: 40000, dport: 9999, seq: 1000, ack: 5, flags: TCP_ACK | TCP_PSH, options: TCP_OPTS, payload: data } });
  const l4len = pkt.length - 20;
  write16(pkt, 20 + TCP_CSUM, fold(pseudoHeaderSum(CLIENT, VIP, IPPROTO_TCP, l4len)));
  const b = new PacketBatch(4, OFFLOAD_SLOT_SIZE);
  b.push(pkt);
  b.vnet.set([VIRTIO_NET_HDR_F_NEEDS_CSUM, gso ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_NONE, 52, gso ? mss : 0, 20, TCP_CSUM], 0);
  return b;
}

/** True if the TCP/IPv4 packet at buf[off..off+len) has valid IP and TCP checksums. */
function checksumsOk(buf: Uint8Array, off: number, len: number): boolean {
  return parseIpv4(buf, off, len, new PacketMeta(), true) === 0;
}

function hdrOf(b: PacketBatch, i: number): VnetHdr {
  const v = b.vnet, k = i * VNET.FIELDS, h = new VnetHdr();
  Object.assign(h, { flags: v[k], gsoType: v[k + 1], hdrLen: v[k + 2], gsoSize: v[k + 3], csumStart: v[k + 4], csumOffset: v[k + 5] });
  return h;
}

describe('pipeline, offload mode', () => {
  it('NATs a TSO super-packet with the partial rewrites and hands it back with its vnet header', () => {
    const p = pipeline();
    established(p, LOCAL_BACKEND);
    const data = payload(20_000);
    const b = tsoBatch(data);
    const before = Array.from(b.vnet.subarray(0, VNET.FIELDS));
    p.processTunBatch(b, 10);
    expect(b.lens[0]).toBe(20 + 32 + data.length);
    expect(Array.from(b.vnet.subarray(0, VNET.FIELDS))).toEqual(before); // GSO fields unchanged
    const off = b.offs[0], slab = b.slab;
    expect(read32(slab, off + 16)).toBe(LOCAL_BACKEND);
    expect(read16(slab, off + 22)).toBe(8080);
    // The field holds the partial sum of the NEW pseudo header (not an RFC 1624-updated checksum) ...
    expect(read16(slab, off + 20 + TCP_CSUM)).toBe(fold(pseudoHeaderSum(CLIENT, LOCAL_BACKEND, IPPROTO_TCP, 32 + data.length)));
    // ... so the segments the kernel cuts from it (segmentTcp does what tcp_gso_segment does) all verify.
    const segs = new PacketBatch(32, SLOT_SIZE);
    const n = segmentTcp(slab, off, b.lens[0], hdrOf(b, 0), MSS, segs, SLOT_SIZE, HEADROOM);
    expect(n).toBe(Math.ceil(data.length / MSS));
    for (let k = 0; k < n; k++) expect(checksumsOk(segs.slab, segs.offs[k], segs.lens[k])).toBe(true);
  });

  it('cuts a super-packet for another node into IPIP packets of at most 1480 bytes with correct checksums', () => {
    const p = pipeline();
    established(p, REMOTE_BACKEND);
    const data = payload(30_001);
    const b = tsoBatch(data, true, TUNNEL_MSS);
    p.processTunBatch(b, 10);
    expect(b.lens[0]).toBe(0); // moved to the IPIP output batch
    expect(Object.fromEntries(ALL_DROP_REASONS.map((r, i) => [r, p.drops[i]]).filter(([, v]) => v))).toEqual({});
    const out = p.offload!.out;
    const n = Math.ceil(data.length / TUNNEL_MSS);
    expect(out.count).toBe(n);
    expect(p.counters[C_TX_IPIP]).toBe(n);
    const got: number[] = [];
    for (let k = 0; k < n; k++) {
      const o = out.offs[k], len = out.lens[k], s = out.slab;
      expect(out.vnet[k * VNET.FIELDS + VNET.GSO_TYPE]).toBe(VIRTIO_NET_HDR_GSO_NONE);
      expect(s[o + 9]).toBe(IPPROTO_IPIP);
      expect(read32(s, o + 12)).toBe(NODE_IP);
      expect(read32(s, o + 16)).toBe(REMOTE_NODE);
      const inner = o + 20, innerLen = len - 20;
      expect(innerLen).toBeLessThanOrEqual(1480);
      expect(checksumsOk(s, o, len)).toBe(true); // the outer header (its payload is IPIP: no L4 checksum)
      expect(checksumsOk(s, inner, innerLen)).toBe(true);
      expect(read32(s, inner + 16)).toBe(REMOTE_BACKEND);
      expect(read32(s, inner + 20 + 4)).toBe((1000 + k * TUNNEL_MSS) >>> 0);
      for (let j = inner + 52; j < inner + innerLen; j++) got.push(s[j]);
    }
    expect(Buffer.from(got).equals(Buffer.from(data))).toBe(true);
  });

  it('finishes the checksum of a NEEDS_CSUM packet without GSO before it enters the tunnel', () => {
    const p = pipeline();
    established(p, REMOTE_BACKEND);
    const b = tsoBatch(payload(1000), false);
    p.processTunBatch(b, 10);
    const out = p.offload!.out;
    expect(out.count).toBe(1);
    expect(checksumsOk(out.slab, out.offs[0] + 20, out.lens[0] - 20)).toBe(true);
  });

  it('answers a super-packet whose segments would not fit the tunnel with frag-needed 1480', () => {
    const p = pipeline();
    established(p, REMOTE_BACKEND);
    const b = tsoBatch(payload(10_000)); // 20 + 32 + 1448 = 1500 > 1480
    p.processTunBatch(b, 10);
    expect(b.lens[0]).toBe(0);
    expect(p.offload!.out.count).toBe(0);
    expect(p.drops[ALL_DROP_REASONS.indexOf('frag-needed-sent')]).toBe(1);
    expect(p.generated.count).toBe(1);
  });

  it('counts a refused vnet header as a drop reason instead of throwing', () => {
    const p = pipeline();
    established(p, LOCAL_BACKEND);
    const b = tsoBatch(payload(5000));
    b.vnet[VNET.FLAGS] = 0x40; // unknown flag bit
    p.processTunBatch(b, 10);
    expect(b.lens[0]).toBe(0);
    expect(p.drops[ALL_DROP_REASONS.indexOf('vnet-bad-flags')]).toBe(1);
  });

  it('coalesces in-order segments from another node into one GSO super-packet after un-NAT (GRO)', () => {
    const p = pipeline();
    established(p, REMOTE_BACKEND);
    const data = payload(10 * MSS);
    const b = new PacketBatch(16, OFFLOAD_SLOT_SIZE);
    for (let k = 0; k < 10; k++) {
      const inner = buildPacket({ src: REMOTE_BACKEND, dst: CLIENT, id: 7 + k, df: true, tcp: { sport: 8080, dport: 40000, seq: 9000 + k * MSS, ack: 1000, flags: TCP_ACK, options: TCP_OPTS, payload: data.subarray(k * MSS, (k + 1) * MSS) } });
      const i = b.count;
      b.offs[i] = b.slotOffset(i) + 20;
      b.slab.set(inner, b.offs[i]);
      const start = encapIpip(b.slab, b.offs[i], inner.length, REMOTE_NODE, NODE_IP, k, true);
      b.offs[i] = start;
      b.lens[i] = inner.length + 20;
      b.count = i + 1;
    }
    p.processIpipBatch(b, 10);
    const live = [...Array(b.count).keys()].filter((i) => b.lens[i] > 0);
    expect(live).toEqual([0]);
    const h = hdrOf(b, 0);
    expect(h.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
    expect(h.gsoSize).toBe(MSS);
    expect(h.flags).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    const off = b.offs[0];
    expect(b.lens[0]).toBe(20 + 32 + data.length);
    expect(read32(b.slab, off + 12)).toBe(VIP); // un-DNATed reply
    expect(read16(b.slab, off + 20)).toBe(9999);
    expect(Buffer.from(b.slab.subarray(off + 52, off + b.lens[0])).equals(Buffer.from(data))).toBe(true);
    const segs = new PacketBatch(16, SLOT_SIZE);
    expect(segmentTcp(b.slab, off, b.lens[0], h, MSS, segs, SLOT_SIZE, HEADROOM)).toBe(10);
    for (let k = 0; k < 10; k++) expect(checksumsOk(segs.slab, segs.offs[k], segs.lens[k])).toBe(true);
    expect(p.offload!.gro.superPackets).toBe(1);
  });
});
