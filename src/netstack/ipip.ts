/**
 * IPIP (IP protocol 4, RFC 2003) as Linux tunl0 / Calico use it: a bare 20-byte outer IPv4 header in
 * front of the unchanged inner packet (no extra headers).
 *
 * Outer header fields (net/ipv4/ip_tunnel.c ip_tunnel_xmit with tunl0's defaults):
 * - TTL: inherited from the inner packet (ttl 0 = inherit, tunl0's default).
 * - TOS: 0, or the inner TOS when `inheritTos` (tunnel "tos inherit"); then ECN per RFC 6040
 *   (INET_ECN_encapsulate): the inner ECN field is copied, except CE which becomes ECT(0).
 * - DF: copied from the inner packet (pmtudisc, not ignore_df).
 * - ID: supplied by the caller (Linux uses a per-destination counter; it is not copied).
 * - protocol 4, options none, checksum computed over the 20 bytes.
 */
import { read16, write16 } from './bytes';
import { csumApply, csumDelta16 } from './checksum';
import {
  ECN_CE,
  ECN_ECT_0,
  ECN_MASK,
  ECN_NOT_ECT,
  IPV4_CHECKSUM,
  IPV4_FLAG_DF,
  IPV4_FLAGS_FRAG,
  IPV4_MAX_TOTAL_LEN,
  IPV4_MIN_HEADER_LEN,
  IPV4_TOS,
  IPV4_TTL,
  IPV4_VER_IHL,
  IPV4_VERSION,
  writeIpv4Header,
} from './ipv4';
import { IPPROTO_IPIP } from './proto';
import { DropReason, PacketMeta, parseIpv4 } from './packet';

export const IPIP_HEADER_LEN = 20;

/**
 * Prepends an outer IPv4 header to the inner packet at buf[innerOff .. innerOff+innerLen), writing it at
 * innerOff - IPIP_HEADER_LEN (the caller provides the headroom, e.g. io/tun.ts HEADROOM). Returns the
 * new start offset; the encapsulated packet is innerLen + IPIP_HEADER_LEN bytes long. Returns -1, writing nothing, if
 * there is no headroom, the inner packet is shorter than an IPv4 header or the result would exceed
 * 65535 bytes. The inner packet is not modified. No allocation.
 */
export function encapIpip(
  buf: Uint8Array,
  innerOff: number,
  innerLen: number,
  outerSrc: number,
  outerDst: number,
  ipId: number,
  inheritTos = false,
): number {
  const off = innerOff - IPIP_HEADER_LEN;
  if (off < 0 || innerLen < IPV4_MIN_HEADER_LEN || innerOff + innerLen > buf.length) return -1;
  const total = innerLen + IPIP_HEADER_LEN;
  if (total > IPV4_MAX_TOTAL_LEN) return -1;
  const innerTos = buf[innerOff + IPV4_TOS];
  const innerEcn = innerTos & ECN_MASK;
  const tos = ((inheritTos ? innerTos : 0) & ~ECN_MASK) | (innerEcn === ECN_CE ? ECN_ECT_0 : innerEcn);
  const df = read16(buf, innerOff + IPV4_FLAGS_FRAG) & IPV4_FLAG_DF;
  writeIpv4Header(
    buf, off, tos, total, ipId & 0xffff, df, buf[innerOff + IPV4_TTL], IPPROTO_IPIP, outerSrc >>> 0, outerDst >>> 0,
  );
  return off;
}

/**
 * Validates an IPIP packet at buf[off .. off+len) (outer header via parseIpv4, so the outer checksum,
 * lengths and fragments are checked) and locates the inner packet: on DropReason.None the inner packet
 * is buf[m.l4off .. m.l4off+m.l4len) and the other fields of `m` describe the outer header. The caller
 * then parses the inner packet (parseIpv4 with the same or another PacketMeta).
 *
 * ECN decapsulation per RFC 6040 (Linux INET_ECN_decapsulate): an outer CE mark is propagated to an
 * ECN-capable inner packet (inner TOS and checksum updated in place); outer CE over a Not-ECT inner
 * packet is dropped (DropReason.IpipEcnError).
 *
 * Reasons: any parseIpv4 reason for the outer header, NotIpip (protocol != 4), IpipBadInner (inner
 * shorter than 20 bytes, not version 4, or IHL < 5), IpipEcnError.
 */
export function decapIpip(buf: Uint8Array, off: number, len: number, m: PacketMeta): DropReason {
  const r = parseIpv4(buf, off, len, m, false);
  if (r !== DropReason.None && r !== DropReason.UnsupportedProto) return r;
  if (m.proto !== IPPROTO_IPIP) return DropReason.NotIpip;
  const ioff = m.l4off;
  if (m.l4len < IPV4_MIN_HEADER_LEN) return DropReason.IpipBadInner;
  const verIhl = buf[ioff + IPV4_VER_IHL];
  if (verIhl >>> 4 !== IPV4_VERSION || (verIhl & 0x0f) < 5) return DropReason.IpipBadInner;
  if ((m.tos & ECN_MASK) === ECN_CE) {
    const innerTos = buf[ioff + IPV4_TOS];
    const innerEcn = innerTos & ECN_MASK;
    if (innerEcn === ECN_NOT_ECT) return DropReason.IpipEcnError;
    if (innerEcn !== ECN_CE) {
      const oldWord = (verIhl << 8) | innerTos;
      const newTos = innerTos | ECN_CE;
      buf[ioff + IPV4_TOS] = newTos;
      const at = ioff + IPV4_CHECKSUM;
      write16(buf, at, csumApply(read16(buf, at), csumDelta16(oldWord, (verIhl << 8) | newTos)));
    }
  }
  return DropReason.None;
}
