// `kube-tun run` and `kube-tun cleanup`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Logger } from 'pino';
import { Daemon, RunOptions } from '../daemon';
import { defaultControlSocket, socketAnswers } from '../control/control-socket';
import { teardownRouting, DEFAULT_TABLE_FROM_TUN, DEFAULT_TABLE_TO_TUN } from '../control/routing';
import { DEFAULT_CT_MAX, DEFAULT_MIN_SYNC_PERIOD_MS, DEFAULT_SYNC_PERIOD_MS } from '../control/sync';
import { notifyReadyFd } from '../ops/health';
import { parseBindAddress, DEFAULT_HEALTHZ_BIND_ADDRESS, DEFAULT_METRICS_BIND_ADDRESS } from '../ops/http';
import { parseDuration } from './config-file';
import { loadConfig } from '../nat';
import { UsageError, intFlag, tunFlag, offloadFlag } from './flags';

function bindAddress(v: unknown, flag: string, dflt: string): string {
  const s = v === undefined ? dflt : String(v);
  if (s === '') return '';
  try { parseBindAddress(s, 0); } catch (e: any) { throw new UsageError(`--${flag}: ${e.message}`); }
  return s;
}

function durationFlag(v: unknown, flag: string, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  let ms: number;
  try { ms = parseDuration(String(v)); } catch (e: any) { throw new UsageError(`--${flag}: ${e.message}`); }
  if (!(ms >= min)) throw new UsageError(`--${flag}: must be at least ${min}ms, got "${v}"`);
  return ms;
}

/**
 * Where the state comes from (as `kube-tun run --help` says): --kubeconfig FILE -> that API
 * server; else, with KUBERNETES_SERVICE_HOST set, no --rules and --config files that hold no
 * Node, Service or EndpointSlice (none, or only the KubeTunConfiguration) -> in-cluster; else the
 * --config files.
 */
export function kubeSource(v: Record<string, any>, env: NodeJS.ProcessEnv = process.env): { kubeconfig?: string } | null {
  if (v.kubeconfig !== undefined) {
    if (v.rules) throw new UsageError('run: --rules DUMP and --kubeconfig exclude each other (the rules come from one or the other)');
    return { kubeconfig: String(v.kubeconfig) };
  }
  if (!env.KUBERNETES_SERVICE_HOST || v.rules) return null;
  if (!v.config?.length) return {};
  let settingsOnly = false;
  try {
    const st = loadConfig(v.config);
    settingsOnly = st.nodes.length === 0 && st.servicePorts.length === 0 && Object.keys(st.endpoints).length === 0;
  } catch {
    // a bad file: file mode reports it
  }
  return settingsOnly ? {} : null;
}

export function daemonOptions(v: Record<string, any>): RunOptions {
  const node = v['hostname-override'] ?? v.node;
  if (!node) throw new UsageError('run: --hostname-override NODE (or --node NODE) is required');
  const kube = kubeSource(v);
  if (!kube && !v.config?.length) {
    throw new UsageError(v.rules
      ? 'run: --rules DUMP also needs --config FILE with the Node objects and the KubeTunConfiguration (routing and IPIP peers come from them)'
      : 'run: give --config FILE (Services, EndpointSlices, Nodes, KubeTunConfiguration)');
  }
  const ctMax = intFlag(v['ct-max'], 'ct-max') ?? DEFAULT_CT_MAX;
  const tun = tunFlag(v.tun);
  const syncPeriodMs = durationFlag(v['sync-period'], 'sync-period', DEFAULT_SYNC_PERIOD_MS, 1);
  const minSyncPeriodMs = durationFlag(v['min-sync-period'], 'min-sync-period', DEFAULT_MIN_SYNC_PERIOD_MS, 0);
  return {
    kube, minSyncPeriodMs,
    node, tun, ctMax,
    configFiles: v.config ?? [],
    rulesFile: v.rules,
    clusterCIDR: v['cluster-cidr'],
    masqueradeAll: v['masquerade-all'],
    nodeIPs: v['node-ip'],
    controlSocket: v['control-socket'] ?? defaultControlSocket(tun),
    watch: !v['no-watch'],
    keepRouting: !!v['keep-routing'],
    metricsBindAddress: bindAddress(v['metrics-bind-address'], 'metrics-bind-address', DEFAULT_METRICS_BIND_ADDRESS),
    healthzBindAddress: bindAddress(v['healthz-bind-address'], 'healthz-bind-address', DEFAULT_HEALTHZ_BIND_ADDRESS),
    syncPeriodMs,
    readyFd: intFlag(v['ready-fd'], 'ready-fd'),
    pcap: v.pcap ? path.resolve(v.pcap) : undefined,
    pcapMaxPackets: intFlag(v['pcap-max-packets'], 'pcap-max-packets'),
    offload: offloadFlag(v.offload),
  };
}

export async function run(v: Record<string, any>, log: Logger): Promise<number> {
  const opts = daemonOptions(v);
  const daemon = new Daemon(opts, log);
  await daemon.start();
  if (opts.readyFd !== undefined) {
    try {
      notifyReadyFd(opts.readyFd);
    } catch (e) {
      await daemon.stop('--ready-fd failed');
      throw e;
    }
  }
  return new Promise<number>((resolve) => {
    // Whatever a peer of the control socket or a scraper still holds open must not keep a
    // stopped daemon alive: the routing is gone, so exit shortly after the orderly stop.
    const done = (code: number) => { resolve(code); setTimeout(() => process.exit(code), 1000).unref(); };
    const stop = (sig: string) => {
      daemon.stop(sig).then(() => done(0), (e: Error) => { log.error({ err: e.message }, 'stop failed'); done(1); });
    };
    // The TUN (or IPIP socket) failed: the daemon has stopped itself and removed its routing.
    void daemon.failed.then(() => done(1));
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGHUP', () => daemon.reload('SIGHUP'));
  });
}

/** Is `tun` a TUN device that some process holds open? (A non-persistent TUN only exists while it is.) */
function tunInUse(tun: string): boolean {
  let out: string;
  try {
    out = execFileSync('ip', ['-d', 'link', 'show', 'dev', tun], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return false;
  }
  return /\btun type tun\b/.test(out) && !/\bpersist on\b/.test(out);
}

/**
 * Like `kube-proxy --cleanup`: remove the policy rules, routing tables and TUN device `run`
 * installs, put the local table back at priority 0, and remove a stale control socket. Safe to
 * repeat. Refuses (exit 1) while a daemon still holds the TUN open, unless --force.
 */
export async function cleanup(v: Record<string, any>): Promise<number> {
  const tun = tunFlag(v.tun);
  const socket = v['control-socket'] ?? defaultControlSocket(tun);
  if (!v.force && tunInUse(tun)) {
    throw new Error(`cleanup: ${tun} is held open by a running process (a kube-tun run?); stop it first, or pass --force`);
  }
  const removed = teardownRouting({ tun, tableFromTun: DEFAULT_TABLE_FROM_TUN, tableToTun: DEFAULT_TABLE_TO_TUN });
  if (fs.statSync(socket, { throwIfNoEntry: false })?.isSocket() && !(await socketAnswers(socket))) {
    fs.rmSync(socket, { force: true });
    removed.push(`stale control socket ${socket}`);
  }
  const say = (r: string) => (r.startsWith('local table restored') ? `${r}\n` : `removed ${r}\n`);
  process.stdout.write(removed.length ? removed.map(say).join('') : 'nothing to clean up\n');
  return 0;
}
