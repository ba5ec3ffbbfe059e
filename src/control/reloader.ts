// Keeping the running rules in sync with the desired state (files or the API server): the first
// load, then every change (file change, watch event, SIGHUP, `kube-tun reload`) through a
// BoundedFrequencyRunner (--min-sync-period, periodic full resync and retry every --sync-period)
// into ONE function, applyState, which swaps the matcher (xt_recent tables carried over) and
// flushes stale UDP entries; and the bookkeeping /healthz and `kube-tun stats` read
// (pendingSince, lastSyncAt, syncCount).
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import type { ConntrackTable } from '../conntrack';
import { applyTopology } from '../nat';
import type { ClusterState, RuleSet } from '../nat';
import { IPPROTO_UDP } from '../netstack/proto';
import type { Pipeline } from '../datapath/pipeline';
import { buildDataPath, countChanges } from './sync';
import type { LoadedDataPath, DaemonOptions } from './sync';
import { BoundedFrequencyRunner } from './bounded-runner';
import type { ChangedServices, DesiredState } from './desired-state';

export type SyncChanges = ReturnType<typeof countChanges>;

/** How often a watched file is polled for changes. */
const WATCH_INTERVAL_MS = 500;

/**
 * Like kube-proxy's deleteEndpointConnections: a UDP flow has no end, so an entry DNAT'ed to an
 * endpoint that no rule targets any more would keep sending a client's datagrams to it forever.
 * TCP entries stay: the endpoint resets them, as with the kernel. Returns the entries removed.
 */
export function flushStaleUdp(ct: ConntrackTable, stillTargeted: (addr: number, port: number) => boolean): number {
  const stale: number[] = [];
  ct.forEach((slot) => {
    if (ct.proto(slot) !== IPPROTO_UDP) return;
    const dnat = ct.replySrc(slot) !== ct.origDst(slot) || ct.replySport(slot) !== ct.origDport(slot);
    if (dnat && !stillTargeted(ct.replySrc(slot), ct.replySport(slot))) stale.push(slot);
  });
  for (const slot of stale) ct.remove(slot);
  return stale.length;
}

/** Is (addr, port) the destination of a DNAT rule in `rules`? (--rules mode: no proxier keeps count.) */
function dnatTargetsOf(rules: RuleSet): (addr: number, port: number) => boolean {
  const live = new Set<number>();
  for (const t of rules.tables) for (const c of t.chains) for (const r of c.rules) {
    if (r.target?.kind === 'DNAT') live.add(r.target.addr * 65536 + r.target.port);
  }
  return (addr, port) => live.has(addr * 65536 + port);
}

export class Reloader {
  /** What runs now. */
  loaded: LoadedDataPath;
  /** ms epoch of the last successful sync (one that found nothing to do included). */
  lastSyncAt = 0;
  syncCount = 0;
  /** Syncs that rebuilt the rules (the others found nothing changed). */
  rebuildCount = 0;
  /** ms epoch of the oldest change not applied yet (0 = none): /healthz is kube-proxy's rule over it. */
  pendingSince = 0;
  private pipeline?: Pipeline;
  private runner?: BoundedFrequencyRunner;
  private watched: string[] = [];
  /** UDP entries the last patch() flushed. */
  private lastFlushed = 0;
  /** A sync failed after its changes were taken: the next one redoes everything. */
  private redoAll = false;
  private why: string[] = [];

  /**
   * Builds the first data path from `initial` (throws if it is bad). `onSynced` hears of every
   * successful sync that changed something, this first one included (then every Service and
   * endpoint counts as a change).
   */
  constructor(
    private readonly opts: DaemonOptions,
    private readonly log: Logger,
    private readonly onSynced: (seconds: number, changes: SyncChanges) => void,
    initial: ClusterState,
    private readonly source: DesiredState,
  ) {
    this.loaded = buildDataPath(initial, opts);
    onSynced(this.loaded.compileMs / 1000, countChanges(null, this.loaded.state));
  }

  /** The first load runs in `pipeline` now: changes go there, failed syncs are retried, files watched. */
  start(pipeline: Pipeline): void {
    this.pipeline = pipeline;
    this.runner = new BoundedFrequencyRunner((periodic) => {
      this.sync(periodic && this.why.length === 0 ? 'periodic resync' : this.takeWhy());
    }, this.opts.minSyncPeriodMs, this.opts.syncPeriodMs);
    this.runner.start();
    if (this.source.kind === 'files' && this.opts.configFiles.length > 0 && this.opts.watch) {
      this.watched = this.opts.rulesFile ? [...this.opts.configFiles, this.opts.rulesFile] : this.opts.configFiles;
      for (const f of this.watched) fs.watchFile(f, { interval: WATCH_INTERVAL_MS }, () => this.noteChange(`${f} changed`));
    }
    this.lastSyncAt = Date.now();
    this.syncCount = 1;
  }

  stop(): void {
    this.runner?.stop();
    for (const f of this.watched) fs.unwatchFile(f);
  }

  /** A change was noticed (file, watch event): pending until a sync applies it; synced through the runner. */
  noteChange(why: string): void {
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    if (this.why.length < 8) this.why.push(why);
    this.runner?.run();
  }

  /** Sync now (SIGHUP, `kube-tun reload`), outside the runner; false when it failed. */
  requestReload(why: string): boolean {
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    return this.reload(why);
  }

  /** Sync now; false when it failed (the previous rules stay). */
  reload(why: string): boolean {
    return this.sync(why);
  }

  private takeWhy(): string {
    const w = this.why.join('; ') || 'change';
    this.why = [];
    return w;
  }

  private sync(why: string): boolean {
    try {
      const { state, changed } = this.source.read(this.loaded.state);
      return this.applyState(state, this.redoAll ? 'all' : changed, why);
    } catch (e: any) {
      this.failed(why, e);
      return false;
    }
  }

  private failed(why: string, e: Error): void {
    this.redoAll = true;
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    this.log.error({ why, err: e.message }, 'reload failed; keeping the previous rules');
  }

  /**
   * Applies `changed` Services of `next` through the running proxier. False when the proxier
   * failed part way (it then forgets its state): the caller rebuilds everything at once, so the
   * pipeline never keeps a half-patched matcher.
   */
  private patch(prev: LoadedDataPath, next: ClusterState, changed: ReadonlySet<string>): boolean {
    const p = this.pipeline!;
    let res;
    try {
      res = prev.proxier!.update(applyTopology(next, prev.node.nodeName), changed);
    } catch (e: any) {
      this.log.warn({ err: e.message }, 'incremental sync failed; rebuilding everything');
      return false;
    }
    p.matcher = res.matcher;
    this.loaded = { ...prev, state: next, matcher: res.matcher, serviceCount: next.servicePorts.length, ruleCount: res.matcher.ruleCount, compileMs: +res.ms.toFixed(2) };
    const dead = new Set<number>();
    for (const t of res.goneTargets) dead.add(t.addr * 65536 + t.port);
    this.lastFlushed = dead.size === 0 ? 0 : flushStaleUdp(p.ct, (a, port) => !dead.has(a * 65536 + port));
    return true;
  }

  /**
   * THE change path: `next` becomes what runs. `changed` names the Services (namespace/name) whose
   * ports or endpoints differ from what runs, or 'all'; an empty set means nothing to do (a
   * periodic resync of an unchanged state). A set is applied per Service: the IncrementalProxier
   * rebuilds those Services' rules and patches the running matcher between two batches; 'all'
   * rebuilds and recompiles everything and swaps the matcher in one assignment. Either way
   * conntrack entries are kept, the xt_recent tables carried over, stale UDP entries flushed.
   * Returns false (previous rules stay) when the state is refused.
   */
  applyState(next: ClusterState, changed: ChangedServices, why: string): boolean {
    // (Only Services changed here when `changed` is a set: a Node or the configuration makes it
    // 'all', which rebuilds everything, routes and node settings included.)
    const t0 = performance.now();
    try {
      let changes: SyncChanges = { services: 0, endpoints: 0 };
      let flushed = 0;
      if (changed === 'all' || changed.size > 0) {
        const prev = this.loaded, p = this.pipeline!;
        if (changed !== 'all' && prev.proxier && this.patch(prev, next, changed)) {
          changes = countChanges(prev.state, next, changed);
          flushed = this.lastFlushed;
        } else {
          const built = buildDataPath(next, this.opts, prev.matcher);
          changes = countChanges(prev.state, next);
          p.matcher = built.matcher;
          this.loaded = built;
          const proxier = built.proxier;
          flushed = flushStaleUdp(p.ct, proxier ? (a, port) => proxier.isDnatTarget(a, port) : dnatTargetsOf(built.rules()));
        }
        this.rebuildCount++;
      } else {
        this.loaded = { ...this.loaded, state: next };
      }
      const seconds = (performance.now() - t0) / 1000;
      this.lastSyncAt = Date.now();
      this.syncCount++;
      this.pendingSince = 0;
      this.redoAll = false;
      const what = changed === 'all' ? 'all' : changed.size;
      // The sync metrics observe syncs that did something: a resync that found nothing to do is
      // bookkeeping (lastSyncAt, /healthz), not a rules sync.
      if (what !== 0) this.onSynced(seconds, changes);
      const l = this.loaded;
      if (what === 0) this.log.debug({ why }, 'sync: nothing changed');
      else this.log.info({ why, changed: what, services: l.serviceCount, rules: l.ruleCount, changes, staleUdpFlushed: flushed, ms: +(seconds * 1000).toFixed(2) }, 'rules reloaded');
      return true;
    } catch (e: any) {
      this.failed(why, e);
      return false;
    }
  }
}
