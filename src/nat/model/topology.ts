// Topology-aware routing (kube-proxy pkg/proxy/topology.go): a Service that asks for it
// (ServicePortInfo.topologyAware) sends this node's connections only to the endpoints whose
// EndpointSlice hints name this node's zone (label topology.kubernetes.io/zone), provided the
// hints are usable: every ready endpoint has hints and at least one is for this zone. Otherwise
// all endpoints are used, as if there were no hints.
import { ClusterState, EndpointInfo, ServicePortInfo } from './state';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** kube-proxy's canUseTopology for one service port on a node in `zone` ('' or null: no zone label). */
export function canUseTopology(sp: ServicePortInfo, endpoints: readonly EndpointInfo[], zone: string | null): boolean {
  if (!sp.topologyAware || !zone) return false;
  let forZone = false;
  for (const e of endpoints) {
    if (!e.ready) continue;
    const hints = e.zoneHints ?? [];
    if (hints.length === 0) return false;
    if (hints.includes(zone)) forZone = true;
  }
  return forZone;
}

/**
 * The state as node `nodeName` routes it: for each service port that can use topology, the ready
 * endpoints not hinted for this node's zone are left out (the others are kept: they only matter
 * when no ready endpoint is left, which cannot happen here). Service ports with a Local traffic
 * policy are left alone: kube-proxy applies hints to the cluster-wide endpoints only, and
 * kube-tun's rule builder takes both lists from one (deviation: an external-Local service's
 * internal traffic ignores hints). Returns `state` itself when nothing is filtered.
 */
export function applyTopology(state: ClusterState, nodeName: string): ClusterState {
  const zone = state.nodes.find((n) => n.name === nodeName)?.labels[ZONE_LABEL] ?? null;
  if (!zone) return state;
  let endpoints: Record<string, readonly EndpointInfo[]> | null = null;
  for (const sp of state.servicePorts) {
    if (sp.internalPolicyLocal || sp.externalPolicyLocal) continue;
    const eps = state.endpoints[sp.key];
    if (!eps || !canUseTopology(sp, eps, zone)) continue;
    endpoints ??= { ...state.endpoints };
    endpoints[sp.key] = eps.filter((e) => !e.ready || (e.zoneHints ?? []).includes(zone));
  }
  return endpoints === null ? state : { ...state, endpoints };
}
