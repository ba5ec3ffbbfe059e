// The batch loop's per-packet work: parse, conntrack, rules on a miss, rewrite, route (IPIP or
// local), in place in the batch slab. Nothing here allocates per packet; counters are typed
// arrays read by the control side.
//
// Offload mode (the TUN has the vnet header, see datapath/offload.ts): each packet's virtio_net_hdr
// (batch.vnet) is checked first; a NEEDS_CSUM packet (its L4 checksum field holds the partial
// pseudo-header sum) is NATed with the partial rewrites and goes back to the TUN with its header,
// so the kernel segments it and finishes the checksum. Packets for another node leave through
// `ipipOut` instead (see OffloadEgress); packets from another node are coalesced (GRO) at the end
// of their batch.
import { PacketBatch, HEADROOM, SLOT_SIZE } from '../io/batch';
import {
  PacketMeta, parseIpv4, DROP_REASON_NAMES, rewriteSrc, rewriteDst, rewriteIcmpInnerSrc, rewriteIcmpInnerDst,
  encapIpip, decapIpip, IPIP_HEADER_LEN, mayReplyWithIcmpError, writeIcmpFragNeeded, writeIcmpUnreachable,
  IPPROTO_ICMP, IPPROTO_TCP, TCP_SYN, ICMP_PORT_UNREACH, GSO_REASON_NAMES, rewriteSrcPartial, rewriteDstPartial,
} from '../netstack';
import { OffloadEgress, IpipPeer } from './offload';
import { ConntrackTable, DIR_ORIGINAL, chooseMasqPort, CT_CREATE_CLASH, CT_CREATE_FULL, MasqPortOptions, Tuple } from '../conntrack';
import { RandomPool } from '../lib/random';
import { BATCH, BATCH_SIZE_BUCKETS, batchSizeBucket } from './batch-size';
import { Matcher, NatDecision, NAT_DNAT, NAT_DROP, NAT_REJECT } from '../nat';
import { RemoteIndex } from './remote-index';

export interface RemoteNode { name: string; nodeIP: number; podNet: number; podMask: number }
export interface DataPathSettings {
  nodeIP: number;             // this node's underlay address: IPIP outer source, masquerade for local endpoints
  tunnelAddress: number;      // masquerade source towards other nodes (0: use nodeIP)
  serviceNet: number; serviceMask: number;
  remoteNodes: RemoteNode[];
  tunnelMtu: number;          // 1480 on a 1500-byte underlay
  fullyRandom: boolean;       // MASQUERADE --random-fully (kube-proxy sets it)
  avoidReuseMs: number;       // keep a (masq addr, port, backend) out of use this long after release
}

// Pipeline drop reasons follow the parser's.
const PARSE_REASONS = DROP_REASON_NAMES.length;
export const DROP_NO_SERVICE = PARSE_REASONS + 0;
export const DROP_RULE = PARSE_REASONS + 1;
export const DROP_REJECT = PARSE_REASONS + 2;
export const DROP_CT_FULL = PARSE_REASONS + 3;
export const DROP_NAT_EXHAUSTED = PARSE_REASONS + 4;
export const DROP_CT_INVALID = PARSE_REASONS + 5;
export const DROP_NEEDS_FRAG = PARSE_REASONS + 6;
export const DROP_FRAG_NEEDED_SENT = PARSE_REASONS + 7;
export const DROP_IPIP_UNKNOWN_PEER = PARSE_REASONS + 8;
export const DROP_IPIP_BAD_INNER = PARSE_REASONS + 9;
export const DROP_ICMP_NO_CONN = PARSE_REASONS + 10;
/** Offload mode: DROP_VNET + GsoReason, a vnet header refused by vnetCheck or a failed software GSO. */
export const DROP_VNET = PARSE_REASONS + 11;
export const ALL_DROP_REASONS: readonly string[] = [...DROP_REASON_NAMES, 'no-service', 'rule-drop', 'rule-reject',
  'conntrack-full', 'nat-ports-exhausted', 'conntrack-invalid', 'needs-fragmentation', 'frag-needed-sent',
  'ipip-unknown-peer', 'ipip-bad-inner', 'icmp-error-without-connection',
  ...GSO_REASON_NAMES.map((n) => `vnet-${n}`)];

// Packet/byte counters, index = direction*2 (+1 for bytes).
export const C_RX_TUN = 0, C_RX_IPIP = 2, C_TX_LOCAL = 4, C_TX_IPIP = 6, C_TX_GENERATED = 8,
  C_NEW_CONN = 10, C_DNAT = 11, C_SNAT = 12, C_NAT_CLASH = 13, C_BATCHES = 14, C_COUNTERS = 16;

export class Pipeline {
  matcher: Matcher;
  /** Offload mode (TUN with vnet header), or undefined for the plain path. */
  readonly offload: OffloadEgress | undefined;
  readonly ct: ConntrackTable;
  readonly counters = new Float64Array(C_COUNTERS);
  readonly drops = new Float64Array(ALL_DROP_REASONS.length);
  /** Batches by size: bucket i counts sizes in (2^(i-1), 2^i] (the metrics' kubetun_batch_size). */
  readonly batchSizes = new Uint32Array(BATCH_SIZE_BUCKETS);
  /** Packets kube-tun itself originates (ICMP errors), flushed after each batch. */
  readonly generated = new PacketBatch(BATCH);
  private readonly m = new PacketMeta();
  private readonly dec = new NatDecision();
  /** Tuples reused for every packet: the packet's own, and a new connection's reply. */
  private readonly tuple = new Tuple();
  private readonly reply = new Tuple();
  private readonly masq: MasqPortOptions;
  private ipId = 1;
  private readonly remotes: RemoteIndex; private readonly remoteIP: Uint32Array;

  /**
   * `offload`: the TUN reads and writes virtio_net_hdrs (TunDevice.vnetHdr), so batches carry GSO
   * super-packets and partial checksums; false is the plain path, unchanged.
   */
  constructor(private readonly s: DataPathSettings, matcher: Matcher, ct: ConntrackTable, offload = false) {
    this.matcher = matcher;
    this.ct = ct;
    if (offload) this.offload = new OffloadEgress(this as IpipPeer, s.nodeIP, s.tunnelMtu);
    this.masq = { rng: new RandomPool(), fullyRandom: s.fullyRandom, avoidReuseMs: s.avoidReuseMs, rangeMin: 0, rangeMax: 0, evictClosing: false };
    this.remotes = new RemoteIndex(s.remoteNodes);
    this.remoteIP = this.remotes.nodeIP;
  }

  /** Packets the kernel routed into the TUN. */
  processTunBatch(b: PacketBatch, nowMs: number): void {
    this.countBatch(b.count);
    for (let i = 0; i < b.count; i++) {
      this.counters[C_RX_TUN]++; this.counters[C_RX_TUN + 1] += b.lens[i];
      this.processPacket(b, i, nowMs);
    }
  }

  /** Whole IPIP packets from the raw socket: check the peer, strip the outer header, process the inner. */
  processIpipBatch(b: PacketBatch, nowMs: number): void {
    this.countBatch(b.count);
    const m = this.m, buf = b.slab;
    for (let i = 0; i < b.count; i++) {
      this.counters[C_RX_IPIP]++; this.counters[C_RX_IPIP + 1] += b.lens[i];
      const reason = decapIpip(buf, b.offs[i], b.lens[i], m);
      if (reason !== 0) { this.drop(b, i, reason); continue; }
      if (this.remoteIndexOfNode(m.src) < 0) { this.drop(b, i, DROP_IPIP_UNKNOWN_PEER); continue; }
      b.offs[i] = m.l4off; b.lens[i] = m.l4len;
      this.processPacket(b, i, nowMs);
    }
    if (this.offload !== undefined) this.offload.coalesce(b);
  }

  private countBatch(n: number): void {
    this.counters[C_BATCHES]++;
    this.batchSizes[batchSizeBucket(n)]++;
  }

  private drop(b: PacketBatch, i: number, reason: number): void {
    this.drops[reason]++;
    b.lens[i] = 0;
  }

  private processPacket(b: PacketBatch, i: number, nowMs: number): void {
    const buf = b.slab, m = this.m, ct = this.ct;
    const off = b.offs[i], len = b.lens[i];
    const reason = parseIpv4(buf, off, len, m, false);
    if (reason !== 0) { this.drop(b, i, reason); return; }
    const o = this.offload;
    let partial = false;
    if (o !== undefined) {
      const r = o.load(b, i, m);
      if (r < 0) { this.drop(b, i, DROP_VNET - r); return; }
      partial = r === 1;
    }
    if (m.isIcmpError) { this.processIcmpError(b, i, nowMs); return; }

    // With the TCP flags, a SYN that reopens a TIME_WAIT connection replaces the old entry (new NAT choice).
    const t = this.tuple.set(m.proto, m.src, m.dst, m.sport, m.dport);
    let h = ct.lookup(t, nowMs, m.proto === IPPROTO_TCP ? m.tcpFlags : -1);
    if (h < 0) {
      h = this.newConnection(b, i, nowMs);
      if (h < 0) return;
    }
    const slot = h >> 1, dir = h & 1;
    if (!ct.update(slot, dir, m.tcpFlags, m.l4len - m.l4hdrLen, m.totalLen, nowMs)) { this.drop(b, i, DROP_CT_INVALID); return; }

    // netfilter style: the packet is rewritten to the inverse of the opposite direction's tuple.
    // ICMP echo tuples are (id, 0) in both directions: the id is the "source port" either way.
    let nSrc: number, nDst: number, nSport: number, nDport: number;
    const icmp = m.proto === IPPROTO_ICMP;
    if (dir === DIR_ORIGINAL) {
      nSrc = ct.replyDst(slot); nDst = ct.replySrc(slot);
      nSport = icmp ? ct.replySport(slot) : ct.replyDport(slot); nDport = icmp ? 0 : ct.replySport(slot);
    } else {
      nSrc = ct.origDst(slot); nDst = ct.origSrc(slot);
      nSport = icmp ? ct.origSport(slot) : ct.origDport(slot); nDport = icmp ? 0 : ct.origSport(slot);
    }
    // Route first: a packet too big for the tunnel is answered with frag-needed quoting it as the
    // sender sent it, so the sender's PMTU discovery sees its own addresses.
    // A super-packet leaves as segments of its gso_size (see OffloadEgress.wireLen).
    const remote = this.remoteIndexOf(nDst);
    if (remote >= 0 && (o === undefined ? m.totalLen : o.wireLen(m)) > this.s.tunnelMtu) {
      if (m.df && mayReplyWithIcmpError(m)) this.sendFragNeeded(buf, off, m.totalLen, m.src);
      this.drop(b, i, m.df ? DROP_FRAG_NEEDED_SENT : DROP_NEEDS_FRAG);
      return;
    }
    if (partial) {
      if (nDst !== m.dst || nDport !== m.dport) rewriteDstPartial(buf, m, nDst, nDport);
      if (nSrc !== m.src || nSport !== m.sport) rewriteSrcPartial(buf, m, nSrc, nSport);
    } else {
      if (nDst !== m.dst || nDport !== m.dport) rewriteDst(buf, m, nDst, nDport);
      if (nSrc !== m.src || nSport !== m.sport) rewriteSrc(buf, m, nSrc, nSport);
    }
    this.emit(b, i, remote, m.totalLen);
  }

  /** A conntrack miss: consult the rules, pick the NAT binding, create the entry. Returns the handle or -1. */
  private newConnection(b: PacketBatch, i: number, nowMs: number): number {
    const m = this.m, dec = this.dec, s = this.s;
    this.matcher.match(m.proto, m.src, m.dst, m.sport, m.dport, nowMs, dec);
    if (dec.action === NAT_DROP) { this.drop(b, i, DROP_RULE); return -1; }
    if (dec.action === NAT_REJECT) {
      if (mayReplyWithIcmpError(m)) this.sendUnreachable(b.slab, b.offs[i], m.totalLen, m.src, ICMP_PORT_UNREACH);
      this.drop(b, i, DROP_REJECT);
      return -1;
    }
    const icmp = m.proto === IPPROTO_ICMP;
    // The tuple (this.tuple) is the packet's; the reply starts as its inverse, then takes the NAT.
    const orig = this.tuple, r = this.reply.invertOf(orig);
    if (dec.action === NAT_DNAT) {
      r.src = dec.addr;
      if (!icmp) r.sport = dec.port;
      this.counters[C_DNAT]++;
    } else if (((m.dst & s.serviceMask) >>> 0) === s.serviceNet) {
      // A service address nobody serves: the kernel would send it to the default route; there is
      // none behind a ClusterIP, so it ends here.
      this.drop(b, i, DROP_NO_SERVICE);
      return -1;
    }
    if (dec.masquerade) {
      // MASQUERADE uses the source address of the route towards the (translated) destination.
      r.dst = this.remoteIndexOf(r.src) >= 0 && s.tunnelAddress !== 0 ? s.tunnelAddress : s.nodeIP;
      const port = this.masqPort(r, nowMs);
      if (port < 0) { this.counters[C_NAT_CLASH]++; this.drop(b, i, DROP_NAT_EXHAUSTED); return -1; }
      if (icmp) r.sport = port; else r.dport = port;
      this.counters[C_SNAT]++;
    }
    let slot = this.ct.create(orig, r, nowMs, m.icmpType, m.icmpCode);
    if (slot === CT_CREATE_CLASH && !dec.masquerade) {
      // The translated reply tuple is taken (the client also talks to the endpoint directly from
      // the same port): like the kernel, keep the address and remap the source port.
      this.counters[C_NAT_CLASH]++;
      const port = this.masqPort(r, nowMs);
      if (port >= 0) {
        if (icmp) r.sport = port; else r.dport = port;
        slot = this.ct.create(orig, r, nowMs, m.icmpType, m.icmpCode);
      }
    }
    if (slot < 0) { this.drop(b, i, slot === CT_CREATE_FULL ? DROP_CT_FULL : DROP_NAT_EXHAUSTED); return -1; }
    this.counters[C_NEW_CONN]++;
    return slot << 1;
  }

  /** A free source port (ICMP: echo id) for the reply tuple `r` (its NAT port field is what is chosen). */
  private masqPort(r: Tuple, nowMs: number): number {
    const m = this.m;
    // A SYN may reclaim a port whose previous SNAT'ed connection is closing and idle past the
    // reuse hold, as the kernel's last attempts do.
    this.masq.evictClosing = m.proto === IPPROTO_TCP && (m.tcpFlags & TCP_SYN) !== 0;
    return chooseMasqPort(this.ct, r, m.sport, nowMs, this.masq);
  }

  /** ICMP errors belong to the connection they quote (RELATED); un-NAT outer and quoted headers. */
  private processIcmpError(b: PacketBatch, i: number, nowMs: number): void {
    const m = this.m, ct = this.ct, buf = b.slab;
    // The quoted packet travelled the other way: look up its inverse.
    const q = this.tuple.set(m.innerProto, m.innerSrc, m.innerDst, m.innerSport, m.innerDport);
    const h = ct.lookup(q.invertOf(q), nowMs);
    if (h < 0) {
      // Not ours to translate (e.g. an error about a packet we never saw): pass it on unchanged.
      this.drops[DROP_ICMP_NO_CONN]++;
      this.emit(b, i, this.remoteIndexOf(m.dst), m.totalLen);
      return;
    }
    const slot = h >> 1, dir = h & 1;
    // The quoted packet must read as it looked on the far side: the tuple of the other direction.
    let qSrc: number, qDst: number, qSport: number, qDport: number, mySrc: number;
    if (dir === DIR_ORIGINAL) {
      qSrc = ct.replySrc(slot); qDst = ct.replyDst(slot); qSport = ct.replySport(slot); qDport = ct.replyDport(slot);
      mySrc = ct.origSrc(slot);
    } else {
      qSrc = ct.origSrc(slot); qDst = ct.origDst(slot); qSport = ct.origSport(slot); qDport = ct.origDport(slot);
      mySrc = ct.replySrc(slot);
    }
    if (m.innerSrc !== qSrc || m.innerSport !== qSport) rewriteIcmpInnerSrc(buf, m, qSrc, qSport);
    if (m.innerDst !== qDst || m.innerDport !== qDport) rewriteIcmpInnerDst(buf, m, qDst, qDport);
    // Outer: to the quoted packet's sender; from the address it talked to if the error came from the peer itself.
    if (m.dst !== qSrc) rewriteDst(buf, m, qSrc, 0);
    if (m.src === mySrc && m.src !== qDst) rewriteSrc(buf, m, qDst, 0);
    this.emit(b, i, this.remoteIndexOf(qSrc), m.totalLen);
  }

  private emit(b: PacketBatch, i: number, remote: number, len: number): void {
    if (remote < 0) {
      b.lens[i] = len;
      this.counters[C_TX_LOCAL]++; this.counters[C_TX_LOCAL + 1] += len;
      return;
    }
    if (this.offload !== undefined) {
      const r = this.offload.toIpip(b, i, len, this.m, this.remoteIP[remote]);
      if (r < 0) this.drop(b, i, DROP_VNET - r);
      else if (r === 0) this.drop(b, i, DROP_NEEDS_FRAG);
      else b.lens[i] = 0; // moved to offload.out
      return;
    }
    const off = b.offs[i];
    const start = encapIpip(b.slab, off, len, this.s.nodeIP, this.remoteIP[remote], this.nextIpId(), true);
    if (start < 0) { this.drop(b, i, DROP_NEEDS_FRAG); return; }
    b.offs[i] = start;
    b.lens[i] = len + IPIP_HEADER_LEN;
    this.counters[C_TX_IPIP]++; this.counters[C_TX_IPIP + 1] += len + IPIP_HEADER_LEN;
  }

  /** Counts a packet that left for another node (OffloadEgress calls this once per segment). */
  countTxIpip(bytes: number): void {
    this.counters[C_TX_IPIP]++; this.counters[C_TX_IPIP + 1] += bytes;
  }

  nextIpId(): number {
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.ipId;
  }

  private sendFragNeeded(buf: Buffer, off: number, len: number, to: number): void {
    const g = this.generated;
    if (g.count >= g.capacity) return;
    const at = g.count * SLOT_SIZE + HEADROOM;
    const n = writeIcmpFragNeeded(g.slab, at, buf, off, len, this.s.nodeIP, this.s.tunnelMtu);
    if (n > 0) this.queueGenerated(at, n, to);
  }

  private sendUnreachable(buf: Buffer, off: number, len: number, to: number, code: number): void {
    const g = this.generated;
    if (g.count >= g.capacity) return;
    const at = g.count * SLOT_SIZE + HEADROOM;
    const n = writeIcmpUnreachable(g.slab, at, buf, off, len, this.s.nodeIP, code);
    if (n > 0) this.queueGenerated(at, n, to);
  }

  private queueGenerated(at: number, n: number, to: number): void {
    const g = this.generated, k = g.count++;
    g.offs[k] = at; g.lens[k] = n;
    const remote = this.remoteIndexOf(to);
    if (remote >= 0) {
      const start = encapIpip(g.slab, at, n, this.s.nodeIP, this.remoteIP[remote], this.nextIpId(), true);
      if (start < 0) { g.count--; return; }
      g.offs[k] = start;
      g.lens[k] = n + IPIP_HEADER_LEN;
    }
    this.counters[C_TX_GENERATED]++; this.counters[C_TX_GENERATED + 1] += g.lens[k];
  }

  /** The remote node (index into settings.remoteNodes) whose pod CIDR holds addr, or -1: O(1), see remote-index.ts. */
  private remoteIndexOf(addr: number): number {
    return this.remotes.byPodAddr(addr);
  }

  private remoteIndexOfNode(addr: number): number {
    return this.remotes.byNodeIP(addr);
  }
}
