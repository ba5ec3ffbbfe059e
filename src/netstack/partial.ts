/**
 * NAT on CHECKSUM_PARTIAL packets (virtio_net_hdr NEEDS_CSUM, see vnet.ts): the TCP/UDP checksum field
 * of such a packet does not hold a checksum but the folded, NON-complemented sum of the pseudo header
 *   P = fold(src + dst + proto + L4 length)
 * and whoever finishes the packet (the kernel's skb_checksum_help, a NIC, our segmentTcp) later stores
 *   ~fold(P + sum of the L4 bytes from csum_start to the end, with P in the field).
 *
 * So a rewrite must:
 * - update P for an ADDRESS change, as a plain one's-complement sum: P' = fold(P + ~old + new). Not with
 *   RFC 1624's complemented form ~(~HC + ~m + m'), which is for a field holding a checksum: applied to P
 *   it would leave (almost always) a wrong value (Linux inet_proto_csum_replace4 has the same two
 *   branches, KUBE-PROXY.md 4.2);
 * - NOT fold a PORT change into P: the ports are L4 bytes that the finisher will sum itself, after we
 *   wrote them; folding their delta in as well would count the change twice;
 * - update the IPv4 header checksum normally (RFC 1624): it is always complete, even on a 64 KiB TSO
 *   super-packet, and the kernel verifies it on receive before it segments anything.
 *
 * The L4 length in P: the kernel puts the super-packet's L4 length there (tcp_v4_send_check:
 * `th->check = ~tcp_v4_check(skb->len, ...)` with skb->len = TCP header + all payload) and
 * tcp_gso_segment / __udp_gso_segment replace it per segment by adding (~superLen + segLen), computed
 * from skb->len. A NAT rewrite does not change lengths, so P keeps the super-packet length; and a TUN
 * writer that builds a super-packet itself (GRO, gso.ts) must put fold(pseudo header with the
 * super-packet's L4 length = IP total length - IHL) there, never a per-segment length.
 *
 * The functions mirror packet.ts rewriteSrc/rewriteDst (same arguments, same PacketMeta updates) and
 * require a packet parsed by parseIpv4 with verifyL4Checksum = false whose vnet header passed vnetCheck
 * with NEEDS_CSUM set (so the field is the TCP/UDP checksum). For other protocols only the address and
 * the IP header checksum change and `port` is ignored. Linux never hands out ICMP as CHECKSUM_PARTIAL
 * (ping and raw sockets checksum in software); a NEEDS_CSUM packet the pipeline does not want to handle
 * this way can always be finished first (vnetFinishChecksum, or segmentTcp for a super-packet), then
 * rewritten with the ordinary rewrites and written with an all-zero vnet header.
 */
import { read16, write16, write32 } from './bytes';
import { csumApply, csumDelta32, fold } from './checksum';
import { IPV4_CHECKSUM, IPV4_DST, IPV4_SRC } from './ipv4';
import { PacketMeta } from './packet';
import { IPPROTO_TCP, IPPROTO_UDP } from './proto';
import { TCP_CHECKSUM, TCP_DST_PORT, TCP_SRC_PORT } from './tcp';
import { UDP_CHECKSUM } from './udp';

/**
 * Adds an unfolded one's-complement delta (csumDelta16/32 sums) to a partial (non-complemented) sum:
 * fold(P + delta). The counterpart of csumApply for CHECKSUM_PARTIAL fields.
 */
export function partialApply(partial: number, delta: number): number {
  return fold((partial & 0xffff) + delta);
}

/** SNAT on a NEEDS_CSUM packet: source address := addr, source port := port (TCP/UDP). */
export function rewriteSrcPartial(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewritePartial(buf, m, addr >>> 0, port, true);
}

/** DNAT on a NEEDS_CSUM packet: destination address := addr, destination port := port (TCP/UDP). */
export function rewriteDstPartial(buf: Uint8Array, m: PacketMeta, addr: number, port: number): void {
  rewritePartial(buf, m, addr >>> 0, port, false);
}

function rewritePartial(buf: Uint8Array, m: PacketMeta, addr: number, port: number, isSrc: boolean): void {
  const off = m.off;
  const proto = m.proto;
  const l4 = proto === IPPROTO_TCP || proto === IPPROTO_UDP;
  const old = isSrc ? m.src : m.dst;
  if (old !== addr) {
    write32(buf, off + (isSrc ? IPV4_SRC : IPV4_DST), addr);
    const delta = csumDelta32(old, addr);
    const ipAt = off + IPV4_CHECKSUM;
    write16(buf, ipAt, csumApply(read16(buf, ipAt), delta)); // complete checksum: RFC 1624
    if (l4) {
      const at = m.l4off + (proto === IPPROTO_TCP ? TCP_CHECKSUM : UDP_CHECKSUM);
      write16(buf, at, partialApply(read16(buf, at), delta)); // partial sum: plain addition
    }
    if (isSrc) m.src = addr;
    else m.dst = addr;
  }
  if (l4) {
    // TCP and UDP both start with source port, destination port. The port bytes are summed by the
    // finisher: write them, leave the partial sum alone.
    port &= 0xffff;
    write16(buf, m.l4off + (isSrc ? TCP_SRC_PORT : TCP_DST_PORT), port);
    if (isSrc) m.sport = port;
    else m.dport = port;
  }
}
