// From config files (or an iptables-save dump) to what the daemon runs: the compiled matcher, the
// data-path settings and the routing plan. Called at start and on every reload.
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import { loadConfig, makeNodeSettings, buildRules, compileMatcher, renderIptablesSave, ConfigError, importIptablesSave, countRules, formatCidr } from '../nat';
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
  /** `--sync-period`: a config change not applied within 2x this makes /healthz 503; failed reloads are retried this often. */
  syncPeriodMs: number;
  /** `--ready-fd N`: "READY=1\n" is written to this fd (then closed) once everything is up. */
  readyFd?: number;
  /** `--pcap FILE`: capture from the start (toggled at runtime with `kube-tun pcap`). */
  pcap?: string;
  /** `--pcap-max-packets N`: stop the capture after N packets (0 = no limit). */
  pcapMaxPackets?: number;
}

export const DEFAULT_SYNC_PERIOD_MS = 30_000;

export interface LoadedDataPath {
  state: ClusterState;
  node: NodeSettings;
  rules: RuleSet;
  matcher: Matcher;
  settings: DataPathSettings;
  plan: RoutingPlan;
  serviceCount: number;
  ruleCount: number;
  compileMs: number;
  renderLive(): string;
}

export function loadDataPath(o: DaemonOptions): LoadedDataPath {
  const t0 = performance.now();
  const state = loadConfig(o.configFiles);
  const node = makeNodeSettings(state, { hostnameOverride: o.node, clusterCIDR: o.clusterCIDR, masqueradeAll: o.masqueradeAll, nodeIPs: o.nodeIPs });
  const self = state.nodes.find((n) => n.name === node.nodeName);
  if (!self) throw new ConfigError(`--hostname-override: no Node object named "${node.nodeName}" in ${o.configFiles.join(', ')}`);
  if (node.nodeIPs.length === 0) throw new ConfigError(`Node ${node.nodeName}: status.addresses has no InternalIP and no --node-ip was given`);
  if (!node.serviceCIDR) throw new ConfigError('KubeTunConfiguration.serviceCIDR: required (the routes into the TUN are built from it)');
  // With --rules the rules come from an iptables-save dump (kube-proxy's, or a real node's); the
  // manifests then only describe the nodes and the cluster settings the routing needs.
  const rules = o.rulesFile ? importIptablesSave(fs.readFileSync(o.rulesFile, 'utf8'), o.rulesFile) : buildRules(state, node);
  const matcher = compileMatcher(rules, node);
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
    state, node, rules, matcher, settings, plan, compileMs,
    serviceCount: o.rulesFile ? rules.services.length : state.servicePorts.length,
    ruleCount: countRules(rules),
    renderLive: () => renderIptablesSave(rules),
  };
}

/**
 * What changed between two loads, counted the way kube-proxy's sync metrics count: one per
 * Service (namespace/name) added, removed or changed, and one per Service whose endpoints changed
 * (kube-proxy counts EndpointSlice events; kube-tun sees the merged endpoints, so a Service with
 * several changed slices counts once). `prev` null = the first load: everything is a change.
 */
export function countChanges(prev: ClusterState | null, next: ClusterState): { services: number; endpoints: number } {
  const services = (st: ClusterState | null) => {
    const m = new Map<string, string>();
    for (const sp of st?.servicePorts ?? []) {
      const k = `${sp.namespace}/${sp.name}`;
      const { source: _source, ...rest } = sp;
      m.set(k, (m.get(k) ?? '') + JSON.stringify(rest));
    }
    return m;
  };
  const endpoints = (st: ClusterState | null) => {
    const m = new Map<string, string>();
    for (const sp of st?.servicePorts ?? []) {
      const k = `${sp.namespace}/${sp.name}`;
      const eps = st!.endpoints[sp.key];
      if (eps?.length) m.set(k, (m.get(k) ?? '') + sp.key + JSON.stringify(eps));
    }
    return m;
  };
  const diff = (a: Map<string, string>, b: Map<string, string>) => {
    let n = 0;
    for (const [k, v] of b) if (a.get(k) !== v) n++;
    for (const k of a.keys()) if (!b.has(k)) n++;
    return n;
  };
  return { services: diff(services(prev), services(next)), endpoints: diff(endpoints(prev), endpoints(next)) };
}
