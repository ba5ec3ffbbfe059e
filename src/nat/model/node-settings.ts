// A ClusterState plus kube-proxy's flags -> the settings of the proxier for one node.
import { Cidr, looksLikeIPv6, parseCidrStrict, parseIPv4Strict } from '../ip';
import { ClusterState, DetectLocalMode, NodeFlags, NodeSettings } from './state';
import { ConfigError, show } from './doc';

/**
 * The settings of the proxier for one node: flags (kube-proxy names) win over the file.
 * Node name: --hostname-override, else the file's hostnameOverride. Node IPs: --node-ip, else the
 * file's nodeIPs, else the Node object's InternalIPs.
 */
export function makeNodeSettings(state: ClusterState, flags: NodeFlags = {}): NodeSettings {
  const cfg = state.config;
  const flagErr = (flag: string, msg: string): never => { throw new ConfigError(`--${flag}: ${msg}`); };
  const nodeName = flags.hostnameOverride ?? cfg.hostnameOverride;
  if (!nodeName) throw new ConfigError('--hostname-override: no node name: pass --hostname-override or set hostnameOverride in the KubeTunConfiguration');
  const node = state.nodes.find((n) => n.name === nodeName) ?? null;
  let clusterCIDR = cfg.clusterCIDR;
  if (flags.clusterCIDR !== undefined) {
    const c = parseCidrStrict(flags.clusterCIDR.split(',').map((s) => s.trim()).find((s) => !looksLikeIPv6(s)) ?? '');
    if (!c) flagErr('cluster-cidr', `must be an IPv4 CIDR, got ${show(flags.clusterCIDR)}`);
    clusterCIDR = c;
  }
  let nodeIPs: number[];
  if (flags.nodeIPs && flags.nodeIPs.length > 0) {
    nodeIPs = flags.nodeIPs.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '' && !looksLikeIPv6(s)).map((s) => {
      return parseIPv4Strict(s) ?? flagErr('node-ip', `must be an IPv4 address, got ${show(s)}`);
    });
  } else if (cfg.nodeIPs.length > 0) {
    nodeIPs = [...cfg.nodeIPs];
  } else {
    nodeIPs = node ? [...node.internalIPs] : [];
  }
  const masqueradeAll = flags.masqueradeAll ?? cfg.masqueradeAll;
  const podCIDR = node?.podCIDR ?? null;
  const mode: DetectLocalMode = cfg.detectLocalMode ?? (clusterCIDR ? 'ClusterCIDR' : 'None');
  let localTrafficCIDR: Cidr | null = null;
  if (mode === 'ClusterCIDR') localTrafficCIDR = clusterCIDR;
  else if (mode === 'NodeCIDR') {
    if (!podCIDR) throw new ConfigError(`detectLocalMode NodeCIDR needs spec.podCIDR on Node ${nodeName}`);
    localTrafficCIDR = podCIDR;
  }
  const tunnelAddr = node?.tunnelAddr ?? null;
  const localAddresses: number[] = [];
  const addLocal = (a: number) => { if (!localAddresses.includes(a)) localAddresses.push(a); };
  nodeIPs.forEach(addLocal);
  if (node) node.externalIPs.forEach(addLocal);
  if (tunnelAddr !== null) addLocal(tunnelAddr);
  return {
    nodeName, nodeIPs, clusterCIDR, serviceCIDR: cfg.serviceCIDR, podCIDR, detectLocalMode: mode, localTrafficCIDR,
    masqueradeAll, masqueradeBit: cfg.masqueradeBit, masqueradeMark: (1 << cfg.masqueradeBit) >>> 0, localAddresses,
    tunnelAddr, nodePortAddresses: cfg.nodePortAddresses, localhostNodePorts: cfg.localhostNodePorts,
    randomFully: cfg.randomFully, conntrackTCPBeLiberal: cfg.conntrackTCPBeLiberal,
  };
}
