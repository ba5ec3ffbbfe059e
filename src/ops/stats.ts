// What the operator reads of the data path: `kube-tun stats` (JSON) and the metrics server's
// source. Both read the pipeline's and the conntrack table's counters at the time they are asked;
// the data path never copies them.
import { performance } from 'node:perf_hooks';
import { protoName, IPPROTO_TCP } from '../netstack/proto';
import type { ConntrackTable } from '../conntrack';
import type { PcapStatus } from '../io/pcap';
import { ioDropCounts, tunSysStats, type PacketIoStats, type TunSysStats } from '../io';
import { FAULT_EXCEPTIONS, FAULT_IO_ERRORS, FAULT_PACKETS, ICMP_SENT_TYPES, LOOP_EXCEPTION } from '../datapath/loop';
import {
  ALL_DROP_REASONS, C_RX_TUN, C_RX_IPIP, C_TX_LOCAL, C_TX_IPIP, C_TX_GENERATED, C_NEW_CONN, C_DNAT, C_SNAT, C_NAT_CLASH, C_BATCHES,
} from '../datapath/pipeline';
import type { Pipeline } from '../datapath/pipeline';
import type { ConntrackSnapshot, IoSnapshot, LoopDelaySnapshot, MetricsSource, SyncSnapshot } from './metrics';

/** The I/O side of a running data path: its fds' native counters, the loop's, the TUN's in sysfs. */
export interface DataPathIo {
  tun?: { readonly name: string; stats(): PacketIoStats };
  ipip?: { stats(): PacketIoStats };
  loop?: { readonly faults: Float64Array; readonly icmpSent: Float64Array; readonly lastException: string };
  /** Reads /sys/class/net/<name> (default tunSysStats; tests pass a fake). */
  tunSys?: (name: string) => TunSysStats | null;
}

/** One read of everything in `io` (a sysfs read: per scrape / per `stats`, never per packet). */
export function ioSnapshot(io: DataPathIo): IoSnapshot {
  const tun = io.tun?.stats(), ipip = io.ipip?.stats();
  const tunDevice = io.tun ? (io.tunSys ?? tunSysStats)(io.tun.name) : null;
  const f = io.loop?.faults;
  return {
    drops: ioDropCounts({ tun, ipip, tunSys: tunDevice }),
    tunDevice, tun, ipip,
    loop: {
      exceptions: f ? f[FAULT_EXCEPTIONS] : 0, packetsLost: f ? f[FAULT_PACKETS] : 0, ioErrors: f ? f[FAULT_IO_ERRORS] : 0,
      lastException: io.loop?.lastException ?? '',
    },
    icmpErrorsSent: Object.fromEntries(ICMP_SENT_TYPES.map((t, i) => [t, io.loop ? io.loop.icmpSent[i] : 0])),
  };
}

/**
 * The pipeline's drop reasons plus the loop's: kubetun_drops_total and `stats`' drops. 'none'
 * (the parser's "no drop", index 0) is not a reason and is left out.
 */
const DROP_REASONS: readonly string[] = [...ALL_DROP_REASONS.filter((r) => r !== 'none'), LOOP_EXCEPTION];
function dropCounts(p: Pipeline, faults: Float64Array | undefined, out: Float64Array): Float64Array {
  let k = 0;
  ALL_DROP_REASONS.forEach((r, i) => { if (r !== 'none') out[k++] = p.drops[i]; });
  out[k] = faults ? faults[FAULT_PACKETS] : 0;
  return out;
}

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
export function pipelineMetricsSource(p: Pipeline, sync: () => SyncSnapshot, io?: DataPathIo): MetricsSource {
  const drops = new Float64Array(DROP_REASONS.length);
  return {
    counters: () => p.counters,
    drops: () => dropCounts(p, io?.loop?.faults, drops),
    dropReasons: DROP_REASONS,
    io: io && (() => ioSnapshot(io)),
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
  io?: DataPathIo;
  eventLoopDelay?: LoopDelaySnapshot;
}

/** `kube-tun stats`: drops list only the reasons seen; the key order is the output's. */
export function daemonStats(s: StatsInput): Record<string, unknown> {
  const p = s.pipeline, c = p.counters, ct = p.ct;
  const io = s.io && ioSnapshot(s.io);
  const counts = dropCounts(p, s.io?.loop?.faults, new Float64Array(DROP_REASONS.length));
  const drops: Record<string, number> = {};
  DROP_REASONS.forEach((name, i) => { if (counts[i] > 0) drops[name] = counts[i]; });
  return {
    node: s.node, tun: s.tun, uptimeSeconds: Math.round((Date.now() - s.startedAt) / 1000),
    packets: {
      rxTun: c[C_RX_TUN], rxTunBytes: c[C_RX_TUN + 1], rxIpip: c[C_RX_IPIP], rxIpipBytes: c[C_RX_IPIP + 1],
      txLocal: c[C_TX_LOCAL], txLocalBytes: c[C_TX_LOCAL + 1], txIpip: c[C_TX_IPIP], txIpipBytes: c[C_TX_IPIP + 1],
      txGenerated: c[C_TX_GENERATED], txGeneratedBytes: c[C_TX_GENERATED + 1], batches: c[C_BATCHES],
    },
    connections: { new: c[C_NEW_CONN], dnat: c[C_DNAT], snat: c[C_SNAT], natClash: c[C_NAT_CLASH] },
    drops,
    // Not drops: answers kube-tun sent (the packets that caused them are in drops, e.g. frag-needed-sent).
    ...(io ? { icmpErrorsSent: io.icmpErrorsSent } : {}),
    // Below the pipeline: the native read/write counters, the TUN device's own (sysfs), by reason.
    ...(io ? { io: { drops: io.drops, tunDevice: io.tunDevice, tun: io.tun ?? null, ipip: io.ipip ?? null, loop: io.loop } } : {}),
    conntrack: { entries: ct.size, max: ct.max, eventListeners: s.eventListeners, ...ct.counters },
    sync: {
      count: s.sync.count, lastSyncAt: new Date(s.sync.lastSyncAt).toISOString(), compileMs: s.sync.compileMs,
      pendingSince: s.sync.pendingSince ? new Date(s.sync.pendingSince).toISOString() : null, healthy: s.sync.healthy,
    },
    pcap: s.pcap,
    ...(s.eventLoopDelay ? { eventLoopDelay: s.eventLoopDelay } : {}),
  };
}
