// The metrics port (`--metrics-bind-address`, default 127.0.0.1:10249): Prometheus text on
// GET /metrics, served with node's http module and prom-client.
//
// The data path never touches prom-client. Every metric here is a collector that reads the
// daemon's typed arrays (Pipeline.counters / Pipeline.drops, conntrack counters, ...) through a
// `MetricsSource` when Prometheus scrapes. Within one scrape each source function is called at
// most once (results are memoized until the end of the current tick), so a costly
// `conntrack()` (entries by protocol and state) is computed once per scrape, not once per metric.
//
// Metric names (kube-proxy's where one exists):
//   kubetun_packets_total{direction="rx_tun|rx_ipip|tx_local|tx_ipip|tx_generated"}   counter
//   kubetun_bytes_total{direction=...}                                              counter
//   kubetun_drops_total{reason=...}                  every reason, 0 included       counter
//       packets not forwarded; the ICMP errors kube-tun sends about some of them (frag-needed for
//       frag-needed-sent, port-unreachable for rule-reject) are not drops: they are counted in
//       kubetun_icmp_errors_sent_total, the packet that caused each in kubetun_drops_total
//   kubetun_icmp_errors_sent_total{type="frag-needed|port-unreachable|dest-unreachable|other"} counter
//   kubetun_io_drops_total{reason=...}   below the pipeline (io/stats.ts IO_DROP_REASONS): the TUN
//       device's own drops from sysfs (tun_queue_full = its tx_dropped: our read queue overflowed)
//       and the native read/write counters (oversize reads, read errors, write backpressure/errors)
//   kubetun_tun_queue_length                       the TUN's tx_queue_len (packets)  gauge
//   kubetun_io_last_errno{fd="tun|ipip",op="read|write"}   latest errno, 0 = none    gauge
//   kubetun_loop_exceptions_total      batches lost to an exception (their packets: drops
//       reason="loop-exception")                                                      counter
//   kubetun_conntrack_entries{proto,state}                                           gauge
//   kubetun_conntrack_max                                                            gauge
//   kubetun_conntrack_{inserts,deletes,expirations,early_drops,insert_failed}_total  counter
//   kubetun_nat_allocations_total{type="dnat|snat"}                                  counter
//   kubetun_nat_clashes_total                                                        counter
//   kubetun_batch_size                             histogram, le = 1, 2, 4, ... 2^(n-1), +Inf
//   kubetun_event_loop_delay_seconds{quantile="0.5|0.9|0.99|0.999|1"}  summary since start: how
//       late the event loop ran a 1 ms timer (perf_hooks.monitorEventLoopDelay), i.e. how long
//       a packet batch could have waited behind a sync, a scrape or a GC
//   kubeproxy_sync_proxy_rules_duration_seconds    histogram, kube-proxy's buckets (1 ms * 2^k, 15)
//   kubeproxy_sync_proxy_rules_last_timestamp_seconds                                gauge
//   kubeproxy_sync_proxy_rules_endpoint_changes_total                                counter
//   kubeproxy_sync_proxy_rules_service_changes_total                                 counter
//   plus prom-client's process_* / nodejs_* defaults (event loop lag, heap, GC) unless
//   processMetrics: false.
import * as http from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Registry, Histogram, collectDefaultMetrics, exponentialBuckets } from 'prom-client';
import type { Metric } from 'prom-client';
import type { IoDropReason, PacketIoStats, TunSysStats } from '../io';
import { parseBindAddress, listenOn, closeServer, refuseMethod, notFound, DEFAULT_METRICS_BIND_ADDRESS, METRICS_PORT } from './http';

/** Directions in `counterIndex`: packets at counters[i], bytes at counters[i + 1] (pipeline.ts layout). */
export const DIRECTIONS = ['rx_tun', 'rx_ipip', 'tx_local', 'tx_ipip', 'tx_generated'] as const;

export interface ConntrackSnapshot {
  entries: number;
  max: number;
  /** Entries by "proto/STATE", e.g. 'tcp/ESTABLISHED', 'udp/ASSURED', 'icmp/UNREPLIED'. */
  byProtoState: Record<string, number>;
  inserts: number; deletes: number; expirations: number; earlyDrops: number; insertFailed: number;
}

export interface BatchSnapshot {
  /** Batches processed. */
  count: number;
  /** Bucket batchSizeBucket(n) (datapath/batch-size) counts the batches of n packets; exported as le = 2^i. */
  sizeHistogram: Uint32Array;
  /** Sum of all batch sizes; default counters rx_tun + rx_ipip packets (every packet read is in one batch). */
  sum?: number;
}

export interface SyncSnapshot {
  /** Unix seconds of the last successful sync; 0 = none. */
  lastTimestampSeconds: number;
  /** Durations of syncs finished SINCE THE PREVIOUS CALL (drained: each is observed once). See SyncRecorder. */
  durationsSeconds: number[];
  /** Cumulative counts. */
  endpointChanges: number;
  serviceChanges: number;
}

/** The I/O layer at one instant (ops/stats ioSnapshot). */
export interface IoSnapshot {
  drops: Record<IoDropReason, number>;
  /** The TUN's kernel counters; null when the device is gone or unreadable. */
  tunDevice: TunSysStats | null;
  tun?: PacketIoStats;
  ipip?: PacketIoStats;
  loop: { exceptions: number; packetsLost: number; ioErrors: number; lastException: string };
  /** ICMP errors kube-tun generated, by type (datapath/loop ICMP_SENT_TYPES). */
  icmpErrorsSent: Record<string, number>;
}

/** perf_hooks' event-loop delay histogram, read (seconds). */
export interface LoopDelaySnapshot {
  count: number;
  sumSeconds: number;
  maxSeconds: number;
  /** quantile ("0.5", ..., "1") -> seconds */
  quantiles: Record<string, number>;
}

const LOOP_DELAY_QUANTILES = [0.5, 0.9, 0.99, 0.999, 1];

/**
 * The event loop's delay since start (monitorEventLoopDelay at its finest resolution, 1 ms):
 * the packet loop runs on this thread, so this is how long a batch can wait for anything else.
 */
export class EventLoopDelay {
  private readonly h: IntervalHistogram = monitorEventLoopDelay({ resolution: 1 });
  constructor() { this.h.enable(); }
  stop(): void { this.h.disable(); }
  snapshot(): LoopDelaySnapshot {
    const h = this.h, count = h.count ?? 0;
    const quantiles: Record<string, number> = {};
    for (const q of LOOP_DELAY_QUANTILES) quantiles[String(q)] = count ? h.percentile(q * 100) / 1e9 : 0;
    return { count, sumSeconds: count ? (h.mean * count) / 1e9 : 0, maxSeconds: count ? h.max / 1e9 : 0, quantiles };
  }
}

export interface MetricsSource {
  /** pipeline.counters (read at scrape time, never copied by the data path). */
  counters(): Float64Array;
  /**
   * Names -> indices into counters(): the DIRECTIONS (packets at i, bytes at i + 1) and 'dnat',
   * 'snat', 'nat_clash'. Missing names are not exported.
   */
  counterIndex: Record<string, number>;
  /** pipeline.drops, indexed like dropReasons. */
  drops(): Float64Array;
  dropReasons: readonly string[];
  conntrack(): ConntrackSnapshot;
  batches(): BatchSnapshot;
  sync(): SyncSnapshot;
  /** The event loop's delay; without it kubetun_event_loop_delay_seconds is not exported. */
  eventLoopDelay?(): LoopDelaySnapshot;
  /** The I/O layer; without it the io metrics are not exported. */
  io?(): IoSnapshot;
}

export interface MetricsServerOptions {
  /** HOST:PORT, default 127.0.0.1:10249; port 0 = the OS chooses (see `listening`). */
  bindAddress?: string;
  source: MetricsSource;
  log?: Logger;
  /** prom-client's default process_* and nodejs_* metrics (event loop lag, heap, GC). Default true. */
  processMetrics?: boolean;
}

export interface MetricsServer {
  close(): Promise<void>;
  readonly registry: Registry;
  /** Resolves once listening (with the port the OS chose for port 0); rejects if the bind fails. */
  readonly listening: Promise<AddressInfo>;
  readonly server: http.Server;
}

/** kube-proxy's SyncProxyRulesLatency buckets: ExponentialBuckets(0.001, 2, 15). */
export const SYNC_DURATION_BUCKETS = exponentialBuckets(0.001, 2, 15);

/**
 * Records syncs (rule compiles + swaps) for MetricsSource.sync(): the daemon calls record() after
 * each successful (re)load; the metrics server drains the durations at scrape time. At most
 * `maxPending` unscraped durations are kept (the oldest are dropped) so nobody scraping costs nothing.
 */
export class SyncRecorder {
  lastTimestampSeconds = 0;
  endpointChanges = 0;
  serviceChanges = 0;
  private pending: number[] = [];
  constructor(private readonly maxPending = 1024) {}

  record(durationSeconds: number, changes: { endpoints?: number; services?: number } = {}, atMs = Date.now()): void {
    this.lastTimestampSeconds = atMs / 1000;
    this.endpointChanges += changes.endpoints ?? 0;
    this.serviceChanges += changes.services ?? 0;
    if (this.pending.length >= this.maxPending) this.pending.shift();
    this.pending.push(durationSeconds);
  }

  /** MetricsSource.sync(): hands out the durations recorded since the previous call. */
  snapshot(): SyncSnapshot {
    const durationsSeconds = this.pending;
    this.pending = [];
    return { lastTimestampSeconds: this.lastTimestampSeconds, durationsSeconds, endpointChanges: this.endpointChanges, serviceChanges: this.serviceChanges };
  }
}

interface Sample { value: number; labels: Record<string, string | number>; metricName?: string }

/** A prom-client compatible collector whose samples are computed from the source on each scrape. */
class SnapshotMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram' | 'summary',
    private readonly read: (out: Sample[]) => void,
  ) {}
  async get(): Promise<{ name: string; help: string; type: string; values: Sample[]; aggregator: string }> {
    const values: Sample[] = [];
    this.read(values);
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
  reset(): void { /* values live in the source */ }
}

/** Memoize fn until the end of the current tick: one source call per scrape, fresh on the next. */
function perScrape<T>(fn: () => T): () => T {
  let have = false, value: T;
  return () => {
    if (!have) {
      value = fn();
      have = true;
      queueMicrotask(() => { have = false; value = undefined as T; });
    }
    return value;
  };
}

/** Builds the registry (exported separately for tests and for embedding in another server). */
export function createMetricsRegistry(source: MetricsSource, opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  const counters = perScrape(() => source.counters());
  const drops = perScrape(() => source.drops());
  const ct = perScrape(() => source.conntrack());
  const batches = perScrape(() => source.batches());
  const readIo = source.io;
  const io = readIo ? perScrape(() => readIo.call(source)) : undefined;

  const syncDuration = new Histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds (kube-tun: compile and swap of the rules)',
    buckets: SYNC_DURATION_BUCKETS,
    registers: [],
    collect: () => { sync(); },
  });
  // Draining the durations into the histogram happens whichever sync metric is read first.
  const sync = perScrape(() => {
    const s = source.sync();
    for (const d of s.durationsSeconds) syncDuration.observe(d);
    return s;
  });

  const add = (m: SnapshotMetric) => registry.registerMetric(m as unknown as Metric);
  const idx = (name: string): number | undefined => {
    const i = source.counterIndex[name];
    return typeof i === 'number' && i >= 0 ? i : undefined;
  };

  add(new SnapshotMetric('kubetun_packets_total', 'Packets by direction: read from the TUN / the IPIP socket, written locally / into IPIP, generated by kube-tun (ICMP errors)', 'counter', (out) => {
    const c = counters();
    for (const d of DIRECTIONS) { const i = idx(d); if (i !== undefined) out.push({ labels: { direction: d }, value: c[i] }); }
  }));
  add(new SnapshotMetric('kubetun_bytes_total', 'Bytes (IP packets incl. headers; IPIP outer header included where present) by direction', 'counter', (out) => {
    const c = counters();
    for (const d of DIRECTIONS) { const i = idx(d); if (i !== undefined) out.push({ labels: { direction: d }, value: c[i + 1] }); }
  }));
  add(new SnapshotMetric('kubetun_drops_total', 'Packets not forwarded, by reason', 'counter', (out) => {
    const d = drops();
    // 'none' is the parser's "not dropped": never a reason.
    source.dropReasons.forEach((reason, i) => { if (reason !== 'none') out.push({ labels: { reason }, value: d[i] ?? 0 }); });
  }));
  if (io) {
    add(new SnapshotMetric('kubetun_icmp_errors_sent_total', 'ICMP errors kube-tun generated and wrote, by type (not drops: the packet that caused each is counted in kubetun_drops_total)', 'counter', (out) => {
      const sent = io().icmpErrorsSent;
      for (const type of Object.keys(sent)) out.push({ labels: { type }, value: sent[type] });
    }));
    add(new SnapshotMetric('kubetun_io_drops_total', 'Packets lost below the pipeline, by reason: the TUN device\'s own drops (sysfs; tun_queue_full = our read queue overflowed) and our native reads/writes', 'counter', (out) => {
      const d = io().drops;
      for (const reason of Object.keys(d) as IoDropReason[]) out.push({ labels: { reason }, value: d[reason] });
    }));
    add(new SnapshotMetric('kubetun_tun_queue_length', 'Length (packets) of the TUN device\'s queue towards kube-tun (tx_queue_len); beyond it the kernel drops (tun_queue_full)', 'gauge', (out) => {
      const t = io().tunDevice;
      if (t !== null) out.push({ labels: {}, value: t.txQueueLen });
    }));
    add(new SnapshotMetric('kubetun_io_last_errno', 'Latest errno of a failed native read/write (0 = none)', 'gauge', (out) => {
      const s = io();
      for (const [fd, st] of [['tun', s.tun], ['ipip', s.ipip]] as const) {
        if (st === undefined) continue;
        out.push({ labels: { fd, op: 'read' }, value: st.lastReadErrno });
        out.push({ labels: { fd, op: 'write' }, value: st.lastWriteErrno });
      }
    }));
    add(new SnapshotMetric('kubetun_loop_exceptions_total', 'Batches the I/O loop lost to an exception (their packets: kubetun_drops_total{reason="loop-exception"})', 'counter', (out) => {
      out.push({ labels: {}, value: io().loop.exceptions });
    }));
  }

  add(new SnapshotMetric('kubetun_conntrack_entries', 'Conntrack entries by protocol and state', 'gauge', (out) => {
    const by = ct().byProtoState;
    for (const key of Object.keys(by).sort()) {
      const slash = key.indexOf('/');
      const proto = slash < 0 ? key : key.slice(0, slash), state = slash < 0 ? '' : key.slice(slash + 1);
      out.push({ labels: { proto, state }, value: by[key] });
    }
  }));
  add(new SnapshotMetric('kubetun_conntrack_max', 'Conntrack table size limit (--ct-max)', 'gauge', (out) => { out.push({ labels: {}, value: ct().max }); }));
  const ctCounter = (name: string, help: string, pick: (s: ConntrackSnapshot) => number) =>
    add(new SnapshotMetric(name, help, 'counter', (out) => { out.push({ labels: {}, value: pick(ct()) }); }));
  ctCounter('kubetun_conntrack_inserts_total', 'Conntrack entries created', (s) => s.inserts);
  ctCounter('kubetun_conntrack_deletes_total', 'Conntrack entries removed (by any cause)', (s) => s.deletes);
  ctCounter('kubetun_conntrack_expirations_total', 'Conntrack entries removed because their timeout expired', (s) => s.expirations);
  ctCounter('kubetun_conntrack_early_drops_total', 'Conntrack entries evicted to make room for new ones when the table was full (kernel: early_drop)', (s) => s.earlyDrops);
  ctCounter('kubetun_conntrack_insert_failed_total', 'Conntrack entries not created because their tuple was already taken (kernel: insert_failed)', (s) => s.insertFailed);

  add(new SnapshotMetric('kubetun_nat_allocations_total', 'NAT bindings made for new connections: dnat = service endpoint chosen, snat = masquerade port chosen', 'counter', (out) => {
    const c = counters();
    for (const type of ['dnat', 'snat']) { const i = idx(type); if (i !== undefined) out.push({ labels: { type }, value: c[i] }); }
  }));
  add(new SnapshotMetric('kubetun_nat_clashes_total', 'New connections dropped because no masquerade port was free for their tuple', 'counter', (out) => {
    const i = idx('nat_clash');
    if (i !== undefined) out.push({ labels: {}, value: counters()[i] });
  }));

  add(new SnapshotMetric('kubetun_batch_size', 'Packets per batch read from the TUN or the IPIP socket', 'histogram', (out) => {
    const b = batches(), h = b.sizeHistogram;
    let cum = 0;
    for (let i = 0; i < h.length; i++) {
      cum += h[i];
      out.push({ metricName: 'kubetun_batch_size_bucket', labels: { le: 2 ** i }, value: cum });
    }
    const count = Math.max(b.count, cum);
    let sum = b.sum;
    if (sum === undefined) {
      const c = counters(), t = idx('rx_tun'), p = idx('rx_ipip');
      sum = (t !== undefined ? c[t] : 0) + (p !== undefined ? c[p] : 0);
    }
    out.push({ metricName: 'kubetun_batch_size_bucket', labels: { le: '+Inf' }, value: count });
    out.push({ metricName: 'kubetun_batch_size_sum', labels: {}, value: sum });
    out.push({ metricName: 'kubetun_batch_size_count', labels: {}, value: count });
  }));

  registry.registerMetric(syncDuration);
  add(new SnapshotMetric('kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'The last time proxy rules were successfully synced', 'gauge', (out) => {
    out.push({ labels: {}, value: sync().lastTimestampSeconds });
  }));
  add(new SnapshotMetric('kubeproxy_sync_proxy_rules_endpoint_changes_total', 'Cumulative proxy rules Endpoint changes', 'counter', (out) => {
    out.push({ labels: {}, value: sync().endpointChanges });
  }));
  add(new SnapshotMetric('kubeproxy_sync_proxy_rules_service_changes_total', 'Cumulative proxy rules Service changes', 'counter', (out) => {
    out.push({ labels: {}, value: sync().serviceChanges });
  }));

  const eld = source.eventLoopDelay;
  if (eld) {
    add(new SnapshotMetric('kubetun_event_loop_delay_seconds', 'How late the event loop (which also runs the packet loop) ran a 1 ms timer, since start', 'summary', (out) => {
      const d = eld.call(source);
      for (const [q, v] of Object.entries(d.quantiles)) out.push({ labels: { quantile: q }, value: v });
      out.push({ metricName: 'kubetun_event_loop_delay_seconds_sum', labels: {}, value: d.sumSeconds });
      out.push({ metricName: 'kubetun_event_loop_delay_seconds_count', labels: {}, value: d.count });
    }));
  }

  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  return registry;
}

export function createMetricsServer(opts: MetricsServerOptions): MetricsServer {
  const addr = parseBindAddress(opts.bindAddress ?? DEFAULT_METRICS_BIND_ADDRESS, METRICS_PORT);
  const registry = createMetricsRegistry(opts.source, { processMetrics: opts.processMetrics });
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/metrics') { notFound(res); return; }
    if (refuseMethod(req, res)) return;
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': registry.contentType });
        res.end(text);
      },
      (e: Error) => {
        opts.log?.error({ err: e.message }, 'metrics scrape failed');
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(`error: ${e.message}\n`);
      },
    );
  });
  const listening = listenOn(server, addr, { log: opts.log, what: 'metrics', bindAddress: opts.bindAddress });
  return { close: () => closeServer(server), registry, listening, server };
}
