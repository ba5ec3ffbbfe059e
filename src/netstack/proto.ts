// Protocol facts named once: IP protocol numbers (IANA, as in <netinet/in.h>), their names as
// iptables and conntrack-tools print them, and the TCP flag bits of the header's flags byte.

export const IPPROTO_ICMP = 1;
export const IPPROTO_IPIP = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_DCCP = 33;
export const IPPROTO_GRE = 47;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;
export const IPPROTO_UDPLITE = 136;

/** Lower-case names as `iptables -p` takes them and `conntrack -L` prints them. */
export const PROTO_NUM: Readonly<Record<string, number>> = {
  icmp: IPPROTO_ICMP, ipip: IPPROTO_IPIP, tcp: IPPROTO_TCP, udp: IPPROTO_UDP,
  dccp: IPPROTO_DCCP, gre: IPPROTO_GRE, icmpv6: IPPROTO_ICMPV6, sctp: IPPROTO_SCTP, udplite: IPPROTO_UDPLITE,
};
export const PROTO_NAME: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(PROTO_NUM).map(([name, n]) => [n, name]),
);

/** The protocol's name, or its number as text when it has none here (as conntrack-tools prints it). */
export function protoName(proto: number): string {
  return PROTO_NAME[proto] ?? String(proto);
}

/** Flag bits of the TCP header's flags byte (offset 13). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;
