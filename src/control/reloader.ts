// Keeping the running rules in sync with the config: the first load, reloads (file change,
// SIGHUP, `kube-tun reload`, the retry of a failed one), the stale-UDP flush after each, and the
// bookkeeping /healthz and `kube-tun stats` read (pendingSince, lastSyncAt, syncCount).
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import type { ConntrackTable } from '../conntrack';
import type { RuleSet } from '../nat';
import { IPPROTO_UDP } from '../netstack/proto';
import type { Pipeline } from '../datapath/pipeline';
import { loadDataPath, countChanges } from './sync';
import type { LoadedDataPath, DaemonOptions } from './sync';

export type SyncChanges = ReturnType<typeof countChanges>;

/** How often a watched file is polled for changes. */
const WATCH_INTERVAL_MS = 500;

/**
 * Like kube-proxy's deleteEndpointConnections: a UDP flow has no end, so an entry DNAT'ed to an
 * endpoint that no rule targets any more would keep sending a client's datagrams to it forever.
 * TCP entries stay: the endpoint resets them, as with the kernel. Returns the entries removed.
 */
export function flushStaleUdp(ct: ConntrackTable, rules: RuleSet): number {
  const live = new Set<number>();
  for (const t of rules.tables) for (const c of t.chains) for (const r of c.rules) {
    if (r.target?.kind === 'DNAT') live.add(r.target.addr * 65536 + r.target.port);
  }
  const stale: number[] = [];
  ct.forEach((slot) => {
    if (ct.proto(slot) !== IPPROTO_UDP) return;
    const dnat = ct.replySrc(slot) !== ct.origDst(slot) || ct.replySport(slot) !== ct.origDport(slot);
    if (dnat && !live.has(ct.replySrc(slot) * 65536 + ct.replySport(slot))) stale.push(slot);
  });
  for (const slot of stale) ct.remove(slot);
  return stale.length;
}

export class Reloader {
  /** What runs now. */
  loaded: LoadedDataPath;
  /** ms epoch of the last successful sync. */
  lastSyncAt = 0;
  syncCount = 0;
  /** ms epoch of the oldest config change not applied yet (0 = none): /healthz is kube-proxy's rule over it. */
  pendingSince = 0;
  private pipeline?: Pipeline;
  private retry?: NodeJS.Timeout;
  private watched: string[] = [];

  /**
   * Loads the config (throws if it is bad). `onSynced` hears of every successful load, this first
   * one included (then every Service and endpoint counts as a change).
   */
  constructor(
    private readonly opts: DaemonOptions,
    private readonly log: Logger,
    private readonly onSynced: (seconds: number, changes: SyncChanges) => void,
  ) {
    this.loaded = loadDataPath(opts);
    onSynced(this.loaded.compileMs / 1000, countChanges(null, this.loaded.state));
  }

  /** The first load runs in `pipeline` now: reloads go there, failed ones are retried, files watched. */
  start(pipeline: Pipeline): void {
    this.pipeline = pipeline;
    // kube-proxy retries a failed sync every period; so do we while a change is pending.
    this.retry = setInterval(() => { if (this.pendingSince !== 0) this.reload('retry of a failed sync'); }, this.opts.syncPeriodMs);
    if (this.opts.configFiles.length > 0 && this.opts.watch) {
      this.watched = this.opts.rulesFile ? [...this.opts.configFiles, this.opts.rulesFile] : this.opts.configFiles;
      for (const f of this.watched) fs.watchFile(f, { interval: WATCH_INTERVAL_MS }, () => this.requestReload(`${f} changed`));
    }
    this.lastSyncAt = Date.now();
    this.syncCount = 1;
  }

  stop(): void {
    clearInterval(this.retry);
    for (const f of this.watched) fs.unwatchFile(f);
  }

  /** A change was noticed: it is pending until a reload succeeds. */
  requestReload(why: string): boolean {
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    return this.reload(why);
  }

  /** Re-read the config and swap the matcher in one assignment; conntrack entries are kept. */
  reload(why: string): boolean {
    const t0 = performance.now();
    try {
      const next = loadDataPath(this.opts);
      const changes = countChanges(this.loaded.state, next.state);
      const p = this.pipeline!;
      p.matcher = next.matcher;
      this.loaded = next;
      const flushed = flushStaleUdp(p.ct, next.rules);
      const seconds = (performance.now() - t0) / 1000;
      this.lastSyncAt = Date.now();
      this.syncCount++;
      this.pendingSince = 0;
      this.onSynced(seconds, changes);
      this.log.info({ why, services: next.serviceCount, rules: next.ruleCount, changes, staleUdpFlushed: flushed, ms: +(seconds * 1000).toFixed(2) }, 'rules reloaded');
      return true;
    } catch (e: any) {
      if (this.pendingSince === 0) this.pendingSince = Date.now();
      this.log.error({ why, err: e.message }, 'reload failed; keeping the previous rules');
      return false;
    }
  }
}
