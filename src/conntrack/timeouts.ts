// Conntrack timeouts, in seconds, with the kernel's defaults.
//
// TCP: net/netfilter/nf_conntrack_proto_tcp.c `tcp_timeouts[]`
//      (sysctl net.netfilter.nf_conntrack_tcp_timeout_<state>).
// UDP: nf_conntrack_proto_udp.c `udp_timeouts[]` (nf_conntrack_udp_timeout / _stream).
// ICMP: nf_conntrack_proto_icmp.c (nf_conntrack_icmp_timeout).
// Other protocols: nf_conntrack_proto_generic.c (nf_conntrack_generic_timeout).

export interface Timeouts {
  tcpSynSent: number;      // 120
  tcpSynRecv: number;      // 60
  tcpEstablished: number;  // 432000 (5 days)
  tcpFinWait: number;      // 120
  tcpCloseWait: number;    // 60
  tcpLastAck: number;      // 30
  tcpTimeWait: number;     // 120
  tcpClose: number;        // 10
  tcpSynSent2: number;     // 120
  /** Cap after nf_conntrack_tcp_max_retrans retransmissions. Not applied: we do not track sequence numbers. */
  tcpRetrans: number;      // 300
  /** Cap while data is unacknowledged; applied here only to mid-stream pick-ups without a reply (as the kernel does). */
  tcpUnack: number;        // 300
  udpUnreplied: number;    // 30  (nf_conntrack_udp_timeout)
  udpReplied: number;      // 120 (nf_conntrack_udp_timeout_stream)
  icmp: number;            // 30
  generic: number;         // 600
}

export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({
  tcpSynSent: 120,
  tcpSynRecv: 60,
  tcpEstablished: 432000,
  tcpFinWait: 120,
  tcpCloseWait: 60,
  tcpLastAck: 30,
  tcpTimeWait: 120,
  tcpClose: 10,
  tcpSynSent2: 120,
  tcpRetrans: 300,
  tcpUnack: 300,
  udpUnreplied: 30,
  udpReplied: 120,
  icmp: 30,
  generic: 600,
});

/** A UDP flow becomes a "stream" (120 s, ASSURED) if still active this long after its first packet. */
export const UDP_STREAM_DELAY_MS = 2000;

/** The kernel sysctl each field corresponds to (net.netfilter.*), for docs and config mapping. */
export const TIMEOUT_SYSCTLS: Readonly<Record<keyof Timeouts, string>> = Object.freeze({
  tcpSynSent: 'nf_conntrack_tcp_timeout_syn_sent',
  tcpSynRecv: 'nf_conntrack_tcp_timeout_syn_recv',
  tcpEstablished: 'nf_conntrack_tcp_timeout_established',
  tcpFinWait: 'nf_conntrack_tcp_timeout_fin_wait',
  tcpCloseWait: 'nf_conntrack_tcp_timeout_close_wait',
  tcpLastAck: 'nf_conntrack_tcp_timeout_last_ack',
  tcpTimeWait: 'nf_conntrack_tcp_timeout_time_wait',
  tcpClose: 'nf_conntrack_tcp_timeout_close',
  tcpSynSent2: 'nf_conntrack_tcp_timeout_syn_sent2',
  tcpRetrans: 'nf_conntrack_tcp_timeout_max_retrans',
  tcpUnack: 'nf_conntrack_tcp_timeout_unacknowledged',
  udpUnreplied: 'nf_conntrack_udp_timeout',
  udpReplied: 'nf_conntrack_udp_timeout_stream',
  icmp: 'nf_conntrack_icmp_timeout',
  generic: 'nf_conntrack_generic_timeout',
});

/** Defaults overlaid with `partial`; every value must be a finite number >= 0. */
export function resolveTimeouts(partial?: Partial<Timeouts>): Timeouts {
  const t: Timeouts = { ...DEFAULT_TIMEOUTS };
  if (partial) {
    for (const k of Object.keys(partial) as (keyof Timeouts)[]) {
      const v = partial[k];
      if (v === undefined) continue;
      if (!(k in DEFAULT_TIMEOUTS)) throw new Error(`unknown conntrack timeout "${k}"`);
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`conntrack timeout ${k} must be a number >= 0`);
      t[k] = v;
    }
  }
  return t;
}
