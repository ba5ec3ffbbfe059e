// `kube-tun run`: the TUN device, the IPIP socket, the batch loop, reloads, the control socket,
// and the operator's side (issue 6): Prometheus metrics, health endpoints, pcap capture,
// conntrack events.
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { TunDevice, IpipSocket, PacketBatch } from './io';
import { PcapTap, pcapControl } from './io/pcap';
import { ConntrackTable, ConntrackEventType, formatEntry, formatEvent, protoName } from './conntrack';
import {
  Pipeline, ALL_DROP_REASONS, C_RX_TUN, C_RX_IPIP, C_TX_LOCAL, C_TX_IPIP, C_TX_GENERATED, C_DNAT, C_SNAT, C_NAT_CLASH, C_BATCHES,
} from './datapath/pipeline';
import { setupRouting, teardownRouting } from './control/routing';
import { serveControl, ControlRequest } from './control/control-socket';
import { loadDataPath, LoadedDataPath, DaemonOptions, countChanges } from './control/sync';
import { filterEntries, compileFilter, ListFilter } from './ops/conntrack-filter';
import { createMetricsServer, MetricsServer, SyncRecorder, ConntrackSnapshot } from './ops/metrics';
import { createHealthServer, HealthServer } from './ops/health';
import type * as net from 'node:net';

const BATCH = 64;
const MAX_BATCHES_PER_WAKEUP = 16; // then yield to timers and the control socket
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_BUDGET = 4096;
/** A `conntrack -E` reader this far behind loses events (the kernel's ENOBUFS). */
const WATCHER_MAX_BUFFERED = 4 << 20;
const EVENT_TYPES: readonly ConntrackEventType[] = ['NEW', 'UPDATE', 'DESTROY'];

interface Watcher { match: (slot: number) => boolean; mask: Set<ConntrackEventType>; lost: number }

export class Daemon {
  private tun?: TunDevice;
  private ipip?: IpipSocket;
  private readonly batch = new PacketBatch(BATCH);
  private pipeline!: Pipeline;
  private ct!: ConntrackTable;
  private loaded!: LoadedDataPath;
  private timers: NodeJS.Timeout[] = [];
  private control?: net.Server;
  private watchers = new Map<net.Socket, Watcher>();
  private stopping = false;
  private routingInstalled = false;
  /** Set (to the time) while `conntrack -D` removes entries: their DESTROY events show the time left. */
  private deletingNow = 0;
  readonly startedAt = Date.now();
  lastSyncAt = 0;
  syncCount = 0;
  /** Capture point of `--pcap` / `kube-tun pcap`: what the TUN and the IPIP socket hand us, and what we write. */
  readonly tap: PcapTap;
  readonly syncRec = new SyncRecorder();
  /** ms epoch of the oldest config change not applied yet (0 = none): /healthz is kube-proxy's rule over it. */
  pendingSince = 0;
  /** TUN open, routing installed, rules loaded, servers listening: /readyz. */
  started = false;
  metrics?: MetricsServer;
  health?: HealthServer;

  constructor(private readonly opts: DaemonOptions, private readonly log: Logger) {
    this.tap = new PcapTap({ onStop: (s) => this.log.info(s, 'pcap stopped') });
  }

  /** Everything up, or everything undone and the error thrown. Resolves once the servers listen. */
  async start(): Promise<void> {
    try {
      this.startDataPath();
      await this.startServices();
    } catch (e) {
      await this.stop('start failed');
      throw e;
    }
    this.started = true;
    this.log.info({
      control: this.opts.controlSocket, rules: this.loaded.ruleCount, services: this.loaded.serviceCount, ms: this.loaded.compileMs,
      metrics: this.opts.metricsBindAddress || undefined, healthz: this.opts.healthzBindAddress || undefined,
    }, 'ready');
  }

  private startDataPath(): void {
    this.loaded = loadDataPath(this.opts);
    const { settings, plan, matcher } = this.loaded;
    this.syncRec.record(this.loaded.compileMs / 1000, countChanges(null, this.loaded.state));
    this.ct = new ConntrackTable({ max: this.opts.ctMax });
    this.ct.onEvent = (type, slot) => this.onConntrackEvent(type, slot);
    this.pipeline = new Pipeline(settings, matcher, this.ct);
    this.tun = TunDevice.open(this.opts.tun);
    this.log.info({ tun: this.tun.name, node: this.opts.node }, 'tun device open');
    this.routingInstalled = true; // a partial setup is torn down too
    setupRouting(plan);
    this.log.info({ serviceCIDR: plan.serviceCIDR, remotePodCIDRs: plan.remotePodCIDRs }, 'routing installed');
    if (settings.remoteNodes.length > 0) {
      this.ipip = IpipSocket.open();
      this.ipip.onReadable(() => this.drainIpip());
      this.log.info({ peers: settings.remoteNodes.map((r) => r.name) }, 'ipip socket open');
    }
    this.tun.onReadable(() => this.drainTun());
    this.timers.push(setInterval(() => this.ct.sweep(performance.now(), SWEEP_BUDGET), SWEEP_INTERVAL_MS));
    // kube-proxy retries a failed sync every period; so do we while a change is pending.
    this.timers.push(setInterval(() => { if (this.pendingSince !== 0) this.reload('retry of a failed sync'); }, this.opts.syncPeriodMs));
    if (this.opts.configFiles.length > 0 && this.opts.watch) {
      for (const f of this.watchedFiles()) {
        fs.watchFile(f, { interval: 500 }, () => {
          if (this.pendingSince === 0) this.pendingSince = Date.now();
          this.reload(`${f} changed`);
        });
      }
    }
    this.lastSyncAt = Date.now();
    this.syncCount = 1;
  }

  private async startServices(): Promise<void> {
    this.control = await serveControl(this.opts.controlSocket, (req, sock) => this.handleControl(req, sock));
    if (this.opts.pcap) {
      this.tap.enable(this.opts.pcap, this.opts.pcapMaxPackets ?? 0);
      this.log.info(this.tap.status(), 'pcap started');
    }
    const p = this.pipeline;
    if (this.opts.metricsBindAddress) {
      this.metrics = createMetricsServer({
        bindAddress: this.opts.metricsBindAddress, log: this.log,
        source: {
          counters: () => p.counters,
          drops: () => p.drops,
          dropReasons: ALL_DROP_REASONS,
          counterIndex: {
            rx_tun: C_RX_TUN, rx_ipip: C_RX_IPIP, tx_local: C_TX_LOCAL, tx_ipip: C_TX_IPIP, tx_generated: C_TX_GENERATED,
            dnat: C_DNAT, snat: C_SNAT, nat_clash: C_NAT_CLASH,
          },
          batches: () => ({ count: p.counters[C_BATCHES], sizeHistogram: p.batchSizes }),
          sync: () => this.syncRec.snapshot(),
          conntrack: () => this.conntrackSnapshot(),
        },
      });
    }
    if (this.opts.healthzBindAddress) {
      this.health = createHealthServer({
        bindAddress: this.opts.healthzBindAddress, log: this.log, syncPeriodMs: this.opts.syncPeriodMs,
        lastSync: () => this.lastSyncAt, pendingSince: () => this.pendingSince, ready: () => this.started && !this.stopping,
      });
    }
    const bind = (what: string, flag: string, addr: string, l: Promise<unknown> | undefined) => l?.catch((e: Error) => {
      throw new Error(`${what} server: cannot listen on ${addr} (--${flag}): ${e.message}`);
    });
    await Promise.all([
      bind('metrics', 'metrics-bind-address', this.opts.metricsBindAddress, this.metrics?.listening),
      bind('healthz', 'healthz-bind-address', this.opts.healthzBindAddress, this.health?.listening),
    ]);
  }

  /** Entries by protocol and state for the metrics (one pass over the table per scrape). */
  private conntrackSnapshot(): ConntrackSnapshot {
    const ct = this.ct, byProtoState: Record<string, number> = {};
    let entries = 0;
    ct.forEach((slot) => {
      const proto = ct.proto(slot);
      const state = proto === 6 ? ct.tcpStateName(slot) : ct.isAssured(slot) ? 'ASSURED' : ct.seenReply(slot) ? 'REPLIED' : 'UNREPLIED';
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

  private drainTun(): void {
    const tun = this.tun!, b = this.batch, p = this.pipeline, tap = this.tap;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (tun.read(b) === 0) break;
      const now = performance.now();
      tap.ingress(b, now);
      p.processTunBatch(b, now);
      tap.egress(b, now);
      tun.write(b);
      this.flushGenerated(now);
    }
  }

  private drainIpip(): void {
    const sock = this.ipip!, b = this.batch, p = this.pipeline, tap = this.tap;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (sock.read(b) === 0) break;
      const now = performance.now();
      tap.ingress(b, now); // still with the outer IPIP header
      p.processIpipBatch(b, now);
      tap.egress(b, now);
      this.tun!.write(b);
      this.flushGenerated(now);
    }
  }

  private flushGenerated(now: number): void {
    const g = this.pipeline.generated;
    if (g.count > 0) {
      this.tap.egress(g, now);
      this.tun!.write(g);
      g.count = 0;
    }
  }

  private watchedFiles(): string[] {
    return this.opts.rulesFile ? [...this.opts.configFiles, this.opts.rulesFile] : this.opts.configFiles;
  }

  /**
   * Like kube-proxy's deleteEndpointConnections: a UDP flow has no end, so an entry DNAT'ed to an
   * endpoint that no rule targets any more would keep sending a client's datagrams to it forever.
   * TCP entries stay: the endpoint resets them, as with the kernel.
   */
  private flushStaleUdp(next: LoadedDataPath): number {
    const live = new Set<number>();
    for (const t of next.rules.tables) for (const c of t.chains) for (const r of c.rules) {
      if (r.target?.kind === 'DNAT') live.add(r.target.addr * 65536 + r.target.port);
    }
    const stale: number[] = [];
    const ct = this.ct;
    ct.forEach((slot) => {
      if (ct.proto(slot) !== 17) return;
      const dnat = ct.replySrc(slot) !== ct.origDst(slot) || ct.replySport(slot) !== ct.origDport(slot);
      if (dnat && !live.has(ct.replySrc(slot) * 65536 + ct.replySport(slot))) stale.push(slot);
    });
    for (const slot of stale) ct.remove(slot);
    return stale.length;
  }

  /** Re-read the config and swap the matcher in one assignment; conntrack entries are kept. */
  reload(why: string): boolean {
    const t0 = performance.now();
    try {
      const next = loadDataPath(this.opts);
      const changes = countChanges(this.loaded.state, next.state);
      this.pipeline.matcher = next.matcher;
      this.loaded = next;
      const flushed = this.flushStaleUdp(next);
      const seconds = (performance.now() - t0) / 1000;
      this.lastSyncAt = Date.now();
      this.syncCount++;
      this.pendingSince = 0;
      this.syncRec.record(seconds, changes);
      this.log.info({ why, services: next.serviceCount, rules: next.ruleCount, changes, staleUdpFlushed: flushed, ms: +(seconds * 1000).toFixed(2) }, 'rules reloaded');
      return true;
    } catch (e: any) {
      if (this.pendingSince === 0) this.pendingSince = Date.now();
      this.log.error({ why, err: e.message }, 'reload failed; keeping the previous rules');
      return false;
    }
  }

  private onConntrackEvent(type: ConntrackEventType, slot: number): void {
    if (this.watchers.size === 0) return;
    let line: string | undefined;
    for (const [sock, w] of this.watchers) {
      if (!w.mask.has(type) || !w.match(slot)) continue;
      if (sock.writableLength > WATCHER_MAX_BUFFERED) { w.lost++; continue; }
      if (w.lost > 0) {
        sock.write(`conntrack v1.4.7 (conntrack-tools): WARNING: We have hit ENOBUFS! We are losing events (${w.lost} lost).\n`);
        w.lost = 0;
      }
      line ??= this.eventLine(type, slot);
      sock.write(line);
    }
  }

  private eventLine(type: ConntrackEventType, slot: number): string {
    if (type === 'DESTROY' && this.deletingNow !== 0) {
      // A delete from `conntrack -D`: the kernel's event then still carries the time left (an
      // expiry's does not), e.g. "[DESTROY] tcp      6 119 TIME_WAIT src=…".
      return '[DESTROY]' + formatEvent('UPDATE', this.ct, slot, this.deletingNow).slice(9) + '\n';
    }
    // Timeouts as of the packet that caused the event, like the kernel's event at that moment
    // ("120 SYN_SENT").
    return formatEvent(type, this.ct, slot, type === 'DESTROY' ? undefined : this.ct.lastSeen(slot)) + '\n';
  }

  private addWatcher(sock: net.Socket, a: Record<string, any>): void {
    const mask = new Set<ConntrackEventType>();
    for (const t of String(a.eventMask ?? 'ALL').toUpperCase().split(',').map((x) => x.trim())) {
      if (t === 'ALL') EVENT_TYPES.forEach((e) => mask.add(e));
      else if ((EVENT_TYPES as readonly string[]).includes(t)) mask.add(t as ConntrackEventType);
      else throw new Error(`conntrack -e: unknown event "${t}" (NEW, UPDATE, DESTROY, ALL)`);
    }
    const w: Watcher = { match: compileFilter(this.ct, a as ListFilter), mask, lost: 0 };
    this.watchers.set(sock, w);
    sock.on('close', () => this.watchers.delete(sock));
    this.log.debug({ watchers: this.watchers.size }, 'conntrack event listener attached');
  }

  private handleControl(req: ControlRequest, sock: net.Socket): string | void {
    const a = (req.args ?? {}) as Record<string, any>;
    switch (req.cmd) {
      case 'conntrack-list': {
        const now = performance.now();
        const lines: string[] = [];
        filterEntries(this.ct, a as ListFilter, now, (slot) => lines.push(formatEntry(this.ct, slot, now)));
        return lines.join('\n') + (lines.length ? '\n' : '') +
          `conntrack v1.4.7 (conntrack-tools): ${lines.length} flow entries have been shown.\n`;
      }
      case 'conntrack-delete': {
        const now = performance.now();
        const victims: number[] = [];
        filterEntries(this.ct, a as ListFilter, now, (slot) => victims.push(slot));
        this.deletingNow = now;
        try {
          for (const s of victims) this.ct.remove(s);
        } finally {
          this.deletingNow = 0;
        }
        return `conntrack v1.4.7 (conntrack-tools): ${victims.length} flow entries have been deleted.\n`;
      }
      case 'conntrack-events':
        this.addWatcher(sock, a);
        return;
      case 'stats':
        return JSON.stringify(this.stats(), null, 2) + '\n';
      case 'rules':
        return this.loaded.renderLive();
      case 'reload':
        if (this.pendingSince === 0) this.pendingSince = Date.now();
        if (!this.reload('control socket')) throw new Error('reload failed; the previous rules stay (see the daemon log)');
        return `reloaded: ${this.loaded.serviceCount} service ports\n`;
      case 'pcap': {
        const out = pcapControl(this.tap, a);
        this.log.info({ ...this.tap.status(), action: a.action ?? 'status' }, 'pcap control');
        return out;
      }
      default:
        throw new Error(`unknown command "${req.cmd}"`);
    }
  }

  stats(): Record<string, unknown> {
    const p = this.pipeline, c = p.counters;
    const drops: Record<string, number> = {};
    ALL_DROP_REASONS.forEach((name, i) => { if (p.drops[i] > 0) drops[name] = p.drops[i]; });
    return {
      node: this.opts.node, tun: this.opts.tun, uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      packets: {
        rxTun: c[0], rxTunBytes: c[1], rxIpip: c[2], rxIpipBytes: c[3], txLocal: c[4], txLocalBytes: c[5],
        txIpip: c[6], txIpipBytes: c[7], txGenerated: c[8], txGeneratedBytes: c[9], batches: c[14],
      },
      connections: { new: c[10], dnat: c[11], snat: c[12], natClash: c[13] },
      drops,
      conntrack: { entries: this.ct.size, max: this.ct.max, eventListeners: this.watchers.size, ...this.ct.counters },
      sync: {
        count: this.syncCount, lastSyncAt: new Date(this.lastSyncAt).toISOString(), compileMs: this.loaded.compileMs,
        pendingSince: this.pendingSince ? new Date(this.pendingSince).toISOString() : null, healthy: this.health?.healthy() ?? null,
      },
      pcap: this.tap.status(),
    };
  }

  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info({ reason }, 'stopping');
    for (const t of this.timers) clearInterval(t);
    for (const f of this.watchedFiles()) fs.unwatchFile(f);
    for (const w of this.watchers.keys()) w.destroy();
    const st = this.tap.disable();
    if (st) this.log.info(st, 'pcap closed');
    if (this.control) {
      this.control.close();
      try { fs.rmSync(this.opts.controlSocket, { force: true }); } catch { /* ignore */ }
    }
    this.ipip?.close();
    this.tun?.close();
    if (this.routingInstalled && !this.opts.keepRouting) {
      try {
        teardownRouting(this.loaded.plan);
      } catch (e: any) {
        this.log.warn({ err: e.message }, 'routing teardown incomplete; run kube-tun cleanup');
      }
    }
    await Promise.all([this.metrics?.close(), this.health?.close()]);
  }
}
