// From the desired state (config files or the API server; or an iptables-save dump) to what the
// daemon runs: the compiled matcher, the data-path settings and the routing plan. Called at start
// and on every sync that changes something; stateChanges says which Services a sync changes.
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import {
  loadConfig, makeNodeSettings, compileMatcher, renderIptablesSave, ConfigError, importIptablesSave, countRules, formatCidr, applyTopology,
  IncrementalProxier,
} from '../nat';
import type { Matcher, ClusterState, NodeSettings, RuleSet } from '../nat';
import { IPIP_HEADER_LEN } from '../netstack/ipip';
import type { DataPathSettings, RemoteNode } from '../datapath/pipeline';
import { RoutingPlan, DEFAULT_TABLE_FROM_TUN, DEFAULT_TABLE_TO_TUN } from './routing';

export const DEFAULT_CT_MAX = 262144;
const UNDERLAY_MTU = 1500;
// A backend keeps a closed connection in TIME_WAIT for 60 s (Linux TCP_TIMEWAIT_LEN); handing it
// the same (masquerade addr, port) again inside that window makes it drop the new SYN (PAWS).
const AVOID_REUSE_MS = 60_000;

export interface DaemonOptions {
  node: string;
  tun: string;
  ctMax: number;
  configFiles: string[];
  rulesFile?: string;
  clusterCIDR?: string;
  masqueradeAll?: boolean;
  nodeIPs?: string[];
  controlSocket: string;
  watch: boolean;
  keepRouting: boolean;
  /** Prometheus endpoint HOST:PORT (`--metrics-bind-address`); '' disables. */
  metricsBindAddress: string;
  /** /healthz, /livez, /readyz HOST:PORT (`--healthz-bind-address`); '' disables. */
  healthzBindAddress: string;
  /** `--sync-period`: a config change not applied within 2x this makes /healthz 503; full resync (and retry of a failed one) this often. */
  syncPeriodMs: number;
  /** `--min-sync-period`: syncs at most this often; a change after a quiet spell is applied at once. */
  minSyncPeriodMs: number;
  /**
   * Watch mode: the state comes from the API server (`--kubeconfig FILE`, or in-cluster when
   * `kubeconfig` is undefined); configFiles then give only the KubeTunConfiguration. null = file mode.
   */
  kube: { kubeconfig?: string } | null;
  /** `--ready-fd N`: "READY=1\n" is written to this fd (then closed) once everything is up. */
  readyFd?: number;
  /** `--pcap FILE`: capture from the start (toggled at runtime with `kube-tun pcap`). */
  pcap?: string;
  /** `--pcap-max-packets N`: stop the capture after N packets (0 = no limit). */
  pcapMaxPackets?: number;
}

export const DEFAULT_SYNC_PERIOD_MS = 30_000;
/** kube-proxy's --iptables-min-sync-period default. */
export const DEFAULT_MIN_SYNC_PERIOD_MS = 1_000;

export interface LoadedDataPath {
  state: ClusterState;
  node: NodeSettings;
  matcher: Matcher;
  /** The rules compiled now (built on demand from the proxier's fragments: not for the sync path). */
  rules(): RuleSet;
  settings: DataPathSettings;
  plan: RoutingPlan;
  serviceCount: number;
  ruleCount: number;
  compileMs: number;
  renderLive(): string;
  /**
   * With rules built from the objects (not --rules): the proxier that built them, which applies a
   * later change per Service (Reloader.applyState) instead of rebuilding everything.
   */
  proxier?: IncrementalProxier;
}

/** The config files read and built (file mode's first load). */
export function loadDataPath(o: DaemonOptions): LoadedDataPath {
  return buildDataPath(loadConfig(o.configFiles), o);
}

/**
 * A desired state -> what the daemon runs. `previous`: the matcher it replaces, whose xt_recent
 * tables (session affinity) the new one takes over. Throws ConfigError.
 */
export function buildDataPath(state: ClusterState, o: DaemonOptions, previous?: Matcher): LoadedDataPath {
  const t0 = performance.now();
  const node = makeNodeSettings(state, { hostnameOverride: o.node, clusterCIDR: o.clusterCIDR, masqueradeAll: o.masqueradeAll, nodeIPs: o.nodeIPs });
  const self = state.nodes.find((n) => n.name === node.nodeName);
  const where = o.kube ? 'the API server' : o.configFiles.join(', ');
  if (!self) throw new ConfigError(`--hostname-override: no Node object named "${node.nodeName}" in ${where}`);
  if (node.nodeIPs.length === 0) throw new ConfigError(`Node ${node.nodeName}: status.addresses has no InternalIP and no --node-ip was given`);
  if (!node.serviceCIDR) throw new ConfigError('KubeTunConfiguration.serviceCIDR: required (the routes into the TUN are built from it)');
  // With --rules the rules come from an iptables-save dump (kube-proxy's, or a real node's); the
  // manifests then only describe the nodes and the cluster settings the routing needs.
  let proxier: IncrementalProxier | undefined;
  let matcher: Matcher, rules: () => RuleSet;
  if (o.rulesFile) {
    const dump = importIptablesSave(fs.readFileSync(o.rulesFile, 'utf8'), o.rulesFile);
    matcher = compileMatcher(dump, node, previous ? { previous } : {});
    rules = () => dump;
  } else {
    const p = new IncrementalProxier(node, previous ? { previous } : {});
    matcher = p.full(applyTopology(state, node.nodeName)).matcher;
    rules = () => p.rules(); // built on demand: `rules --live`, never per sync
    proxier = p;
  }
  const remoteNodes: RemoteNode[] = [];
  for (const n of state.nodes) {
    if (n.name === node.nodeName || !n.podCIDR) continue;
    if (n.internalIPs.length === 0) throw new ConfigError(`Node ${n.name}: status.addresses has no InternalIP (needed as the IPIP peer)`);
    remoteNodes.push({ name: n.name, nodeIP: n.internalIPs[0], podNet: n.podCIDR.addr, podMask: n.podCIDR.mask });
  }
  const settings: DataPathSettings = {
    nodeIP: node.nodeIPs[0],
    tunnelAddress: node.tunnelAddr ?? 0,
    serviceNet: node.serviceCIDR.addr, serviceMask: node.serviceCIDR.mask,
    remoteNodes,
    tunnelMtu: UNDERLAY_MTU - IPIP_HEADER_LEN,
    fullyRandom: node.randomFully,
    avoidReuseMs: AVOID_REUSE_MS,
  };
  const fmt = (a: number) => formatCidr({ addr: a, len: 32, mask: 0xffffffff }).replace(/\/32$/, '');
  const plan: RoutingPlan = {
    tun: o.tun,
    serviceCIDR: formatCidr(node.serviceCIDR),
    nodeIP: fmt(node.nodeIPs[0]),
    tunnelAddress: node.tunnelAddr !== null ? fmt(node.tunnelAddr) : undefined,
    localPodCIDR: self.podCIDR ? formatCidr(self.podCIDR) : undefined,
    remotePodCIDRs: state.nodes.filter((n) => n.name !== node.nodeName && n.podCIDR).map((n) => formatCidr(n.podCIDR!)),
    nodePortRange: [30000, 32767],
    tableFromTun: DEFAULT_TABLE_FROM_TUN,
    tableToTun: DEFAULT_TABLE_TO_TUN,
    mtu: UNDERLAY_MTU,
  };
  const compileMs = +(performance.now() - t0).toFixed(2);
  return {
    state, node, matcher, rules, settings, plan, compileMs, proxier,
    serviceCount: o.rulesFile ? rules().services.length : state.servicePorts.length,
    ruleCount: o.rulesFile ? countRules(rules()) : matcher.ruleCount,
    renderLive: () => renderIptablesSave(rules()),
  };
}

/** Services (namespace/name) whose ports, and whose endpoints, differ between two states. */
function changedServices(prev: ClusterState | null, next: ClusterState, only?: ReadonlySet<string>): { services: Set<string>; endpoints: Set<string> } {
  const services = (st: ClusterState | null) => {
    const m = new Map<string, string>();
    for (const sp of st?.servicePorts ?? []) {
      const k = `${sp.namespace}/${sp.name}`;
      if (only && !only.has(k)) continue;
      m.set(k, (m.get(k) ?? '') + withoutSource(sp));
    }
    return m;
  };
  const endpoints = (st: ClusterState | null) => {
    const m = new Map<string, string>();
    for (const sp of st?.servicePorts ?? []) {
      const k = `${sp.namespace}/${sp.name}`;
      if (only && !only.has(k)) continue;
      const eps = st!.endpoints[sp.key];
      if (eps?.length) m.set(k, (m.get(k) ?? '') + sp.key + JSON.stringify(eps));
    }
    return m;
  };
  const diff = (a: Map<string, string>, b: Map<string, string>) => {
    const out = new Set<string>();
    for (const [k, v] of b) if (a.get(k) !== v) out.add(k);
    for (const k of a.keys()) if (!b.has(k)) out.add(k);
    return out;
  };
  return { services: diff(services(prev), services(next)), endpoints: diff(endpoints(prev), endpoints(next)) };
}

/** JSON of a parsed object without its `source` (which names the document, not the content). */
function withoutSource(v: unknown): string {
  return JSON.stringify(v, (k, x) => (k === 'source' ? undefined : x));
}

/**
 * What a sync from `prev` to `next` has to redo: 'all' when the configuration or a Node changed
 * (node settings, routes, topology zones), else the Services whose ports or endpoints changed
 * (empty: nothing to do).
 */
export function stateChanges(prev: ClusterState, next: ClusterState): ReadonlySet<string> | 'all' {
  if (withoutSource(prev.config) !== withoutSource(next.config) || withoutSource(prev.nodes) !== withoutSource(next.nodes)) return 'all';
  const c = changedServices(prev, next);
  for (const k of c.endpoints) c.services.add(k);
  return c.services;
}

/**
 * What changed between two loads, counted the way kube-proxy's sync metrics count: one per
 * Service (namespace/name) added, removed or changed, and one per Service whose endpoints changed
 * (kube-proxy counts EndpointSlice events; kube-tun sees the merged endpoints, so a Service with
 * several changed slices counts once). `prev` null = the first load: everything is a change.
 * `only`: look at these Services alone (the others are known to be unchanged).
 */
export function countChanges(prev: ClusterState | null, next: ClusterState, only?: ReadonlySet<string>): { services: number; endpoints: number } {
  const c = changedServices(prev, next, only);
  return { services: c.services.size, endpoints: c.endpoints.size };
}
