// What the operator reads of the data path: `kube-tun stats` (JSON) and the metrics server's
// source. Both read the pipeline's and the conntrack table's counters at the time they are asked;
// the data path never copies them.
import { performance } from 'node:perf_hooks';
import { protoName, IPPROTO_TCP } from '../netstack/proto';
import type { ConntrackTable } from '../conntrack';
import type { PcapStatus } from '../io/pcap';
import {
  ALL_DROP_REASONS, C_RX_TUN, C_RX_IPIP, C_TX_LOCAL, C_TX_IPIP, C_TX_GENERATED, C_NEW_CONN, C_DNAT, C_SNAT, C_NAT_CLASH, C_BATCHES,
} from '../datapath/pipeline';
import type { Pipeline } from '../datapath/pipeline';
import type { ConntrackSnapshot, MetricsSource, SyncSnapshot } from './metrics';

/** Entries by protocol and state for the metrics (one pass over the table per scrape). */
export function conntrackSnapshot(ct: ConntrackTable): ConntrackSnapshot {
  const byProtoState: Record<string, number> = {};
  let entries = 0;
  ct.forEach((slot) => {
    const proto = ct.proto(slot);
    const state = proto === IPPROTO_TCP ? ct.tcpStateName(slot) : ct.isAssured(slot) ? 'ASSURED' : ct.seenReply(slot) ? 'REPLIED' : 'UNREPLIED';
    const key = `${protoName(proto)}/${state}`;
    byProtoState[key] = (byProtoState[key] ?? 0) + 1;
    entries++;
  }, performance.now());
  const c = ct.counters;
  return {
    entries, max: ct.max, byProtoState,
    inserts: c.inserts, deletes: c.deletes, expirations: c.expirations, earlyDrops: c.earlyDrops, insertFailed: c.insertFailed,
  };
}

/** The metrics server's view of a running pipeline. */
export function pipelineMetricsSource(p: Pipeline, sync: () => SyncSnapshot): MetricsSource {
  return {
    counters: () => p.counters,
    drops: () => p.drops,
    dropReasons: ALL_DROP_REASONS,
    counterIndex: {
      rx_tun: C_RX_TUN, rx_ipip: C_RX_IPIP, tx_local: C_TX_LOCAL, tx_ipip: C_TX_IPIP, tx_generated: C_TX_GENERATED,
      dnat: C_DNAT, snat: C_SNAT, nat_clash: C_NAT_CLASH,
    },
    batches: () => ({ count: p.counters[C_BATCHES], sizeHistogram: p.batchSizes }),
    sync,
    conntrack: () => conntrackSnapshot(p.ct),
  };
}

export interface StatsInput {
  node: string;
  tun: string;
  /** ms epoch the daemon started. */
  startedAt: number;
  pipeline: Pipeline;
  /** `conntrack -E` connections open. */
  eventListeners: number;
  sync: { count: number; lastSyncAt: number; compileMs: number; pendingSince: number; healthy: boolean | null };
  pcap: PcapStatus;
}

/** `kube-tun stats`: drops list only the reasons seen; the key order is the output's. */
export function daemonStats(s: StatsInput): Record<string, unknown> {
  const p = s.pipeline, c = p.counters, ct = p.ct;
  const drops: Record<string, number> = {};
  ALL_DROP_REASONS.forEach((name, i) => { if (p.drops[i] > 0) drops[name] = p.drops[i]; });
  return {
    node: s.node, tun: s.tun, uptimeSeconds: Math.round((Date.now() - s.startedAt) / 1000),
    packets: {
      rxTun: c[C_RX_TUN], rxTunBytes: c[C_RX_TUN + 1], rxIpip: c[C_RX_IPIP], rxIpipBytes: c[C_RX_IPIP + 1],
      txLocal: c[C_TX_LOCAL], txLocalBytes: c[C_TX_LOCAL + 1], txIpip: c[C_TX_IPIP], txIpipBytes: c[C_TX_IPIP + 1],
      txGenerated: c[C_TX_GENERATED], txGeneratedBytes: c[C_TX_GENERATED + 1], batches: c[C_BATCHES],
    },
    connections: { new: c[C_NEW_CONN], dnat: c[C_DNAT], snat: c[C_SNAT], natClash: c[C_NAT_CLASH] },
    drops,
    conntrack: { entries: ct.size, max: ct.max, eventListeners: s.eventListeners, ...ct.counters },
    sync: {
      count: s.sync.count, lastSyncAt: new Date(s.sync.lastSyncAt).toISOString(), compileMs: s.sync.compileMs,
      pendingSince: s.sync.pendingSince ? new Date(s.sync.pendingSince).toISOString() : null, healthy: s.sync.healthy,
    },
    pcap: s.pcap,
  };
}
