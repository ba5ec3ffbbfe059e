// Desired state: the service port map, the endpoints map and the nodes, as pure data (kube-proxy's
// ServicePortMap / EndpointsMap), plus the per-node settings a proxier runs with. Nothing here knows
// how the state is realised (rules, matcher, text): see build.ts.
import { Cidr } from '../ip';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';
export type Scheduler = 'random' | 'rr';
export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'None';

/** Where an object came from, for messages. `doc` is 1-based. */
export interface SourceRef { readonly file: string; readonly doc: number }

/** One port of one Service: kube-proxy's ServicePort (BaseServicePortInfo). */
export interface ServicePortInfo {
  /** Unique key: `<ns>/<name>:<portName>/<PROTOCOL>` (ServicePortName incl. protocol). */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly portName: string; // "" when unnamed
  readonly protocol: Protocol;
  readonly type: ServiceType;
  readonly clusterIP: number;
  readonly port: number;
  readonly targetPort: number | string;
  readonly nodePort: number; // 0 = none
  readonly externalIPs: readonly number[];
  readonly loadBalancerVIPs: readonly number[];
  readonly loadBalancerSourceRanges: readonly Cidr[];
  /** externalTrafficPolicy Local (only when externally accessible, like apiservice.ExternalPolicyLocal). */
  readonly externalPolicyLocal: boolean;
  readonly internalPolicyLocal: boolean;
  readonly healthCheckNodePort: number; // 0 = none
  readonly sessionAffinityClientIP: boolean;
  readonly stickyMaxAgeSeconds: number;
  /** kube-tun extension (annotation kube-tun.dev/scheduler): endpoint choice per new connection. */
  readonly scheduler: Scheduler;
  /**
   * Topology-aware routing asked for: spec.trafficDistribution PreferClose, or the annotation
   * service.kubernetes.io/topology-mode (formerly topology-aware-hints) Auto. See topology.ts.
   */
  readonly topologyAware?: boolean;
  readonly source: SourceRef;
}

/** One endpoint of one service port (kube-proxy BaseEndpointInfo, node-independent part). */
export interface EndpointInfo {
  readonly ip: number;
  readonly port: number;
  /** "ip:port" (Endpoint.String()); also the sort key and part of the KUBE-SEP hash. */
  readonly endpoint: string;
  readonly nodeName: string | null;
  readonly zone: string | null;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  /** EndpointSlice hints.forZones names; empty = no hints. */
  readonly zoneHints?: readonly string[];
}

export interface NodeInfo {
  readonly name: string;
  readonly podCIDR: Cidr | null;
  readonly internalIPs: readonly number[];
  readonly externalIPs: readonly number[];
  /** projectcalico.org/IPv4IPIPTunnelAddr */
  readonly tunnelAddr: number | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly source: SourceRef;
}

/** KubeTunConfiguration (apiVersion kubetun.dev/v1alpha1): kube-proxy flags in camelCase. */
export interface KubeTunConfig {
  clusterCIDR: Cidr | null; // --cluster-cidr
  serviceCIDR: Cidr | null;
  masqueradeAll: boolean; // --masquerade-all
  masqueradeBit: number; // --iptables-masquerade-bit
  hostnameOverride: string | null; // --hostname-override
  nodeIPs: number[]; // --node-ip (kube-tun: list)
  nodePortAddresses: Cidr[]; // --nodeport-addresses (empty = all local addresses)
  detectLocalMode: DetectLocalMode | null; // --detect-local-mode (null = ClusterCIDR when clusterCIDR is set)
  localhostNodePorts: boolean; // --iptables-localhost-nodeports
  /** kube-tun: whether the kernel baseline supports MASQUERADE --random-fully (iptables.HasRandomFully()). */
  randomFully: boolean;
  /** net.netfilter.nf_conntrack_tcp_be_liberal != 0 (drops the KUBE-FORWARD INVALID rule). */
  conntrackTCPBeLiberal: boolean;
  /** kube-tun: default scheduler for services without the annotation (IPVS --ipvs-scheduler analogue). */
  scheduler: Scheduler;
}

export function defaultKubeTunConfig(): KubeTunConfig {
  return {
    clusterCIDR: null, serviceCIDR: null, masqueradeAll: false, masqueradeBit: 14, hostnameOverride: null,
    nodeIPs: [], nodePortAddresses: [], detectLocalMode: null, localhostNodePorts: true, randomFully: true,
    conntrackTCPBeLiberal: false, scheduler: 'random',
  };
}

/** The whole desired state, node-independent. Service ports sorted by (nameString, protocol). */
export interface ClusterState {
  readonly config: KubeTunConfig;
  readonly servicePorts: readonly ServicePortInfo[];
  /** Endpoints per ServicePortInfo.key, deduplicated by IP and sorted by "ip:port" string (kube-proxy's byEndpoint). */
  readonly endpoints: Readonly<Record<string, readonly EndpointInfo[]>>;
  readonly nodes: readonly NodeInfo[];
}

/** The settings one proxier (one node) runs with. Flags win over the config file. */
export interface NodeSettings {
  readonly nodeName: string;
  /** Primary first. */
  readonly nodeIPs: readonly number[];
  readonly clusterCIDR: Cidr | null;
  readonly serviceCIDR: Cidr | null;
  readonly podCIDR: Cidr | null;
  readonly detectLocalMode: DetectLocalMode;
  /** The CIDR behind localDetector.IfLocal()/IfNotLocal() (`-s X` / `! -s X`); null = not implemented. */
  readonly localTrafficCIDR: Cidr | null;
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  readonly masqueradeMark: number; // 1 << masqueradeBit
  /** Addresses that are `addrtype LOCAL` on this node besides 127.0.0.0/8: node IPs + tunnel address. */
  readonly localAddresses: readonly number[];
  readonly tunnelAddr: number | null;
  readonly nodePortAddresses: readonly Cidr[];
  readonly localhostNodePorts: boolean;
  readonly randomFully: boolean;
  readonly conntrackTCPBeLiberal: boolean;
}

/** Command-line flags (kube-proxy names); each wins over the file. */
export interface NodeFlags {
  hostnameOverride?: string; // --hostname-override
  clusterCIDR?: string; // --cluster-cidr
  masqueradeAll?: boolean; // --masquerade-all
  nodeIPs?: string[]; // --node-ip (repeatable)
}

/** ServicePortName.String(): "<ns>/<name>:<port>", or "<ns>/<name>" when unnamed (modern). */
export function servicePortNameString(sp: Pick<ServicePortInfo, 'namespace' | 'name' | 'portName'>, legacy = false): string {
  // Before kubernetes#85779-era releases String() was always "%s:%s", leaving a trailing colon.
  if (legacy || sp.portName !== '') return `${sp.namespace}/${sp.name}:${sp.portName}`;
  return `${sp.namespace}/${sp.name}`;
}
