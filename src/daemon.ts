// `kube-tun run`: wiring and lifecycle. start() brings up, in order, the first rule load, the
// conntrack table and pipeline, the TUN device, routing, the IPIP socket and the batch loop
// (datapath/loop), then the control socket (control/verbs), pcap, metrics and health servers;
// stop() undoes what was done. Reloads live in control/reloader, conntrack events in ops/events,
// the counters' readers in ops/stats.
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import type { Logger } from 'pino';
import { TunDevice, IpipSocket, offloadNames } from './io';
import { PcapTap } from './io/pcap';
import { ConntrackTable } from './conntrack';
import { Pipeline } from './datapath/pipeline';
import { BatchLoop, type FdFailure } from './datapath/loop';
import { setupRouting, teardownRouting } from './control/routing';
import { serveControl, removeNetnsSocketDir } from './control/control-socket';
import type { DaemonOptions } from './control/sync';
import { Reloader } from './control/reloader';
import { fileDesiredState, kubeDesiredState, type DesiredState } from './control/desired-state';
import { connectKubeSource, type KubeSource } from './control/kube-source';
import { loadConfig, type ClusterState } from './nat';
import { handleControl } from './control/verbs';
import { createMetricsServer, EventLoopDelay, MetricsServer, SyncRecorder } from './ops/metrics';
import { createHealthServer, HealthServer } from './ops/health';
import { ConntrackEvents } from './ops/events';
import { daemonStats, pipelineMetricsSource, type DataPathIo } from './ops/stats';

/** `kube-tun run`'s options: the sync options plus the data path's own. */
export interface RunOptions extends DaemonOptions {
  /** `--offload on|off` (default on): TUN vnet header + TSO/checksum offloads, GSO/GRO in userspace. */
  offload?: boolean;
}

const SWEEP_INTERVAL_MS = 1000;
const SWEEP_BUDGET = 4096;

export class Daemon {
  private tun?: TunDevice;
  private ipip?: IpipSocket;
  private pipeline!: Pipeline;
  private ct!: ConntrackTable;
  private events!: ConntrackEvents;
  private reloader?: Reloader;
  /** Watch mode's informers (null in file mode). */
  private kube: KubeSource | null = null;
  private timers: NodeJS.Timeout[] = [];
  private control?: net.Server;
  private stopping = false;
  private stopped?: Promise<void>;
  private loop?: BatchLoop;
  /** Resolves (with the reason) once the daemon has stopped itself because its TUN or IPIP fd failed. */
  readonly failed: Promise<string>;
  private fail!: (reason: string) => void;
  private routingInstalled = false;
  private readonly startedAt = Date.now();
  /** Capture point of `--pcap` / `kube-tun pcap`: what the TUN and the IPIP socket hand us, and what we write. */
  private readonly tap: PcapTap;
  private readonly syncRec = new SyncRecorder();
  private readonly loopDelay = new EventLoopDelay();
  /** TUN open, routing installed, rules loaded, servers listening: /readyz. */
  private started = false;
  private metrics?: MetricsServer;
  private health?: HealthServer;

  constructor(private readonly opts: RunOptions, private readonly log: Logger) {
    this.tap = new PcapTap({ onStop: (s) => this.log.info(s, 'pcap stopped') });
    this.failed = new Promise((resolve) => { this.fail = resolve; });
  }

  /** Everything up, or everything undone and the error thrown. Resolves once the servers listen. */
  async start(): Promise<void> {
    try {
      const { initial, source } = await this.desiredState();
      this.startDataPath(initial, source);
      await this.startServices();
    } catch (e) {
      await this.stop('start failed');
      throw e;
    }
    this.started = true;
    const loaded = this.reloader!.loaded;
    this.log.info({
      control: this.opts.controlSocket, rules: loaded.ruleCount, services: loaded.serviceCount, ms: loaded.compileMs,
      metrics: this.opts.metricsBindAddress || undefined, healthz: this.opts.healthzBindAddress || undefined,
    }, 'ready');
  }

  /**
   * File mode: the config files, read now. Watch mode: the API server's Services, EndpointSlices
   * and Nodes once all three are listed (kube-proxy waits for its informers' sync the same way:
   * nothing is routed, served or ready before), with the KubeTunConfiguration of --config.
   */
  private async desiredState(): Promise<{ initial: ClusterState; source: DesiredState }> {
    if (!this.opts.kube) return { initial: loadConfig(this.opts.configFiles), source: fileDesiredState(this.opts.configFiles) };
    const configSources = this.opts.configFiles.map((file) => ({ file, text: fs.readFileSync(file, 'utf8') }));
    const src = this.kube = connectKubeSource(this.opts.kube, { configSources, log: (msg) => this.log.warn({ kube: msg }, 'watch') });
    src.on('change', (c) => {
      if (c.kind === 'invalid') this.log.warn({ object: c.key, err: c.message }, 'object refused; left out');
      else if (c.kind !== 'synced') {
        this.log.debug({ change: c.kind, key: c.key }, 'watch: changed');
        this.reloader?.noteChange(`${c.kind} ${c.key}`);
      }
    });
    this.log.info({ kubeconfig: this.opts.kube.kubeconfig ?? '(in-cluster)' }, 'waiting for the API server: Services, EndpointSlices, Nodes');
    src.start();
    await src.waitForSync();
    const source = kubeDesiredState(src);
    src.takeChanges(); // the first state is all of it
    return { initial: src.state(), source };
  }

  private startDataPath(initial: ClusterState, source: DesiredState): void {
    const reloader = this.reloader = new Reloader(this.opts, this.log, (seconds, changes) => this.syncRec.record(seconds, changes), initial, source);
    const { settings, plan, matcher } = reloader.loaded;
    this.ct = new ConntrackTable({ max: this.opts.ctMax });
    this.events = new ConntrackEvents(this.ct, this.log);
    this.ct.onEvent = (type, slot) => this.events.onEvent(type, slot);
    // Offload off is exactly the plain path (TUNSETOFFLOAD(0), 2048-byte slots). On, a kernel that
    // refuses the vnet header leaves a plain device: the pipeline follows what took effect.
    const tun = this.tun = TunDevice.open(this.opts.tun, this.opts.offload !== false ? { vnetHdr: true, offload: true } : undefined);
    this.pipeline = new Pipeline(settings, matcher, this.ct, tun.vnetHdr);
    this.log.info({
      tun: tun.name, node: this.opts.node, offload: this.opts.offload !== false ? 'on' : 'off', vnetHdr: tun.vnetHdr,
      offloads: offloadNames(tun.offload), requested: offloadNames(tun.offloadRequested), vnetRefused: tun.vnetRefused,
    }, 'tun device open');
    this.routingInstalled = true; // a partial setup is torn down too
    setupRouting(plan);
    this.log.info({ serviceCIDR: plan.serviceCIDR, remotePodCIDRs: plan.remotePodCIDRs }, 'routing installed');
    if (settings.remoteNodes.length > 0) {
      this.ipip = IpipSocket.open();
      this.log.info({ peers: settings.remoteNodes.map((r) => r.name) }, 'ipip socket open');
    }
    this.loop = new BatchLoop(this.pipeline, this.tap, this.tun, this.ipip, { log: this.log, onFdFailure: (f) => this.dataPathFailed(f) });
    this.loop.start();
    this.timers.push(setInterval(() => this.ct.sweep(performance.now(), SWEEP_BUDGET), SWEEP_INTERVAL_MS));
    reloader.start(this.pipeline);
  }

  private async startServices(): Promise<void> {
    const reloader = this.reloader!;
    const verbs = { ct: this.ct, events: this.events, reloader, tap: this.tap, log: this.log, stats: () => this.stats() };
    this.control = await serveControl(this.opts.controlSocket, (req, sock) => handleControl(verbs, req, sock));
    if (this.opts.pcap) {
      this.tap.enable(this.opts.pcap, this.opts.pcapMaxPackets ?? 0);
      this.log.info(this.tap.status(), 'pcap started');
    }
    if (this.opts.metricsBindAddress) {
      this.metrics = createMetricsServer({
        bindAddress: this.opts.metricsBindAddress, log: this.log,
        source: { ...pipelineMetricsSource(this.pipeline, () => this.syncRec.snapshot(), this.io()), eventLoopDelay: () => this.loopDelay.snapshot() },
      });
    }
    if (this.opts.healthzBindAddress) {
      this.health = createHealthServer({
        bindAddress: this.opts.healthzBindAddress, log: this.log, syncPeriodMs: this.opts.syncPeriodMs,
        lastSync: () => reloader.lastSyncAt, pendingSince: () => reloader.pendingSince, ready: () => this.started && !this.stopping,
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

  /** Re-read the config now (SIGHUP); false when it failed and the previous rules stay. */
  reload(why: string): boolean {
    return this.reloader?.reload(why) ?? false;
  }

  stats(): Record<string, unknown> {
    const r = this.reloader!;
    return daemonStats({
      node: this.opts.node, tun: this.opts.tun, startedAt: this.startedAt, pipeline: this.pipeline, eventListeners: this.events.listeners,
      sync: { count: r.syncCount, lastSyncAt: r.lastSyncAt, compileMs: r.loaded.compileMs, pendingSince: r.pendingSince, healthy: this.health?.healthy() ?? null },
      pcap: this.tap.status(), io: this.io(), eventLoopDelay: this.loopDelay.snapshot(),
    });
  }

  private io(): DataPathIo {
    return { tun: this.tun, ipip: this.ipip, loop: this.loop };
  }

  /** The loop lost its TUN (or IPIP socket): stop in order (the loop has logged why), then report it. */
  private dataPathFailed(f: FdFailure): void {
    const reason = `${f.device} failed: ${f.code}`;
    void this.stop(reason).then(() => this.fail(reason), () => this.fail(reason));
  }

  /** Idempotent: a second call (a signal during a stop) waits for the first. */
  stop(reason: string): Promise<void> {
    this.stopped ??= this.doStop(reason);
    return this.stopped;
  }

  private async doStop(reason: string): Promise<void> {
    this.stopping = true;
    this.log.info({ reason }, 'stopping');
    this.loop?.stop();
    for (const t of this.timers) clearInterval(t);
    this.reloader?.stop();
    await this.kube?.stop();
    this.events?.closeAll();
    const st = this.tap.disable();
    if (st) this.log.info(st, 'pcap closed');
    if (this.control) {
      this.control.close();
      try { fs.rmSync(this.opts.controlSocket, { force: true }); } catch { /* ignore */ }
      removeNetnsSocketDir(this.opts.controlSocket);
    }
    this.ipip?.close();
    this.tun?.close();
    if (this.routingInstalled && !this.opts.keepRouting) {
      try {
        const removed = teardownRouting(this.reloader!.loaded.plan);
        this.log.info({ removed }, 'routing removed');
      } catch (e: any) {
        this.log.warn({ err: e.message }, 'routing teardown incomplete; run kube-tun cleanup');
      }
    }
    await Promise.all([this.metrics?.close(), this.health?.close()]);
    this.loopDelay.stop();
  }
}
