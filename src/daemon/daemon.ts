// `kube-tun run`: the TUN device, the IPIP socket, the batch loop, reloads and the control socket.
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { TunDevice, IpipSocket, PacketBatch } from '../netstack/tun';
import { ConntrackTable, formatEntry, formatEvent } from '../conntrack';
import { Pipeline, ALL_DROP_REASONS } from './pipeline';
import { setupRouting, teardownRouting } from './routing';
import { serveControl, ControlRequest } from './control';
import { loadDataPath, LoadedDataPath, DaemonOptions } from './settings';
import { filterEntries, ListFilter } from './conntrack-filter';
import type * as net from 'node:net';

const BATCH = 64;
const MAX_BATCHES_PER_WAKEUP = 16; // then yield to timers and the control socket
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_BUDGET = 4096;

export class Daemon {
  private tun?: TunDevice;
  private ipip?: IpipSocket;
  private readonly batch = new PacketBatch(BATCH);
  private pipeline!: Pipeline;
  private ct!: ConntrackTable;
  private loaded!: LoadedDataPath;
  private timers: NodeJS.Timeout[] = [];
  private control?: net.Server;
  private watchers = new Set<net.Socket>();
  private stopping = false;
  readonly startedAt = Date.now();
  lastSyncAt = 0;
  syncCount = 0;

  constructor(private readonly opts: DaemonOptions, private readonly log: Logger) {}

  start(): void {
    this.loaded = loadDataPath(this.opts);
    const { settings, plan, matcher } = this.loaded;
    this.ct = new ConntrackTable({ max: this.opts.ctMax });
    this.ct.onEvent = (type, slot) => this.onConntrackEvent(type, slot);
    this.pipeline = new Pipeline(settings, matcher, this.ct);
    this.tun = TunDevice.open(this.opts.tun);
    this.log.info({ tun: this.tun.name, node: this.opts.node }, 'tun device open');
    try {
      setupRouting(plan);
    } catch (e) {
      this.tun.close();
      throw e;
    }
    this.log.info({ serviceCIDR: plan.serviceCIDR, remotePodCIDRs: plan.remotePodCIDRs }, 'routing installed');
    if (settings.remoteNodes.length > 0) {
      this.ipip = IpipSocket.open();
      this.ipip.onReadable(() => this.drainIpip());
      this.log.info({ peers: settings.remoteNodes.map((r) => r.name) }, 'ipip socket open');
    }
    this.tun.onReadable(() => this.drainTun());
    this.timers.push(setInterval(() => this.ct.sweep(performance.now(), SWEEP_BUDGET), SWEEP_INTERVAL_MS));
    if (this.opts.configFiles.length > 0 && this.opts.watch) {
      for (const f of this.opts.configFiles) fs.watchFile(f, { interval: 500 }, () => this.reload(`${f} changed`));
    }
    this.control = serveControl(this.opts.controlSocket, (req, sock) => this.handleControl(req, sock));
    this.lastSyncAt = Date.now();
    this.syncCount = 1;
    this.log.info({ control: this.opts.controlSocket, rules: this.loaded.ruleCount, services: this.loaded.serviceCount, ms: this.loaded.compileMs }, 'ready');
  }

  private drainTun(): void {
    const tun = this.tun!, b = this.batch, p = this.pipeline;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (tun.read(b) === 0) break;
      p.processTunBatch(b, performance.now());
      tun.write(b);
      this.flushGenerated();
    }
  }

  private drainIpip(): void {
    const sock = this.ipip!, b = this.batch, p = this.pipeline;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (sock.read(b) === 0) break;
      p.processIpipBatch(b, performance.now());
      this.tun!.write(b);
      this.flushGenerated();
    }
  }

  private flushGenerated(): void {
    const g = this.pipeline.generated;
    if (g.count > 0) {
      this.tun!.write(g);
      g.count = 0;
    }
  }

  /** Re-read the config and swap the matcher in one assignment; conntrack entries are kept. */
  reload(why: string): void {
    const t0 = performance.now();
    try {
      const next = loadDataPath(this.opts);
      this.pipeline.matcher = next.matcher;
      this.loaded = next;
      this.lastSyncAt = Date.now();
      this.syncCount++;
      this.log.info({ why, services: next.serviceCount, rules: next.ruleCount, ms: +(performance.now() - t0).toFixed(2) }, 'rules reloaded');
    } catch (e: any) {
      this.log.error({ why, err: e.message }, 'reload failed; keeping the previous rules');
    }
  }

  private onConntrackEvent(type: 'NEW' | 'UPDATE' | 'DESTROY', slot: number): void {
    if (this.watchers.size === 0) return;
    const line = formatEvent(type, this.ct, slot, performance.now()) + '\n';
    for (const w of this.watchers) w.write(line);
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
        for (const s of victims) this.ct.remove(s);
        return `conntrack v1.4.7 (conntrack-tools): ${victims.length} flow entries have been deleted.\n`;
      }
      case 'conntrack-events':
        this.watchers.add(sock);
        sock.on('close', () => this.watchers.delete(sock));
        return;
      case 'stats':
        return JSON.stringify(this.stats(), null, 2) + '\n';
      case 'rules':
        return this.loaded.renderLive();
      case 'reload':
        this.reload('control socket');
        return `reloaded: ${this.loaded.serviceCount} service ports\n`;
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
      conntrack: { entries: this.ct.size, max: this.ct.max, ...this.ct.counters },
      sync: { count: this.syncCount, lastSyncAt: new Date(this.lastSyncAt).toISOString(), compileMs: this.loaded.compileMs },
    };
  }

  stop(reason: string): void {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info({ reason }, 'stopping');
    for (const t of this.timers) clearInterval(t);
    for (const f of this.opts.configFiles) fs.unwatchFile(f);
    for (const w of this.watchers) w.end();
    this.control?.close();
    try { fs.rmSync(this.opts.controlSocket, { force: true }); } catch { /* ignore */ }
    this.ipip?.close();
    this.tun?.close();
    if (!this.opts.keepRouting) {
      try {
        teardownRouting(this.loaded.plan);
      } catch (e: any) {
        this.log.warn({ err: e.message }, 'routing teardown incomplete; run kube-tun cleanup');
      }
    }
  }
}
