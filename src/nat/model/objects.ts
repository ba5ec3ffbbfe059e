// Kubernetes objects -> kube-tun's model: KubeTunConfiguration, v1 Node, v1 Service,
// discovery.k8s.io/v1 EndpointSlice and v1 List, one document at a time, collected for load.ts
// to cross-reference.
import { Cidr, cidrContains, formatCidr, looksLikeIPv6, parseCidrStrict } from '../ip';
import {
  DetectLocalMode, KubeTunConfig, NodeInfo, Protocol, Scheduler, ServicePortInfo, ServiceType, SourceRef, defaultKubeTunConfig,
} from './state';
import { DocCtx, Obj, show } from './doc';

const TUNNEL_ANNOTATION = 'projectcalico.org/IPv4IPIPTunnelAddr';
const SCHEDULER_ANNOTATION = 'kube-tun.dev/scheduler';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
const TOPOLOGY_HINTS_ANNOTATION = 'service.kubernetes.io/topology-aware-hints';
const DEFAULT_STICKY_SECONDS = 10800;

/** One Service as the proxier sees it: its ports (none when it is not proxied: ExternalName, headless). */
export interface ParsedService { readonly key: string; readonly ports: readonly ServicePortInfo[] }

/** One EndpointSlice before its Service's slices are merged (load.ts assembleState). */
export interface ParsedSlice {
  /** <namespace>/<slice name> */
  readonly key: string;
  /** <namespace>/<service name> (the kubernetes.io/service-name label) */
  readonly service: string;
  readonly ports: readonly { name: string; protocol: Protocol; port: number }[];
  readonly endpoints: readonly RawEndpoint[];
}

/** Collected objects before cross-referencing. */
export interface Collected {
  config: KubeTunConfig | null;
  configSource: SourceRef | null;
  services: Map<string, ParsedService>;
  slices: Map<string, ParsedSlice>;
  nodes: Map<string, NodeInfo>;
}

export interface RawEndpoint {
  ip: number; nodeName: string | null; zone: string | null; ready: boolean; serving: boolean; terminating: boolean;
  /** hints.forZones[].name; empty = no hints */
  zoneHints: readonly string[];
}

const CONFIG_KEYS = new Set([
  'apiVersion', 'kind', 'metadata', 'clusterCIDR', 'serviceCIDR', 'masqueradeAll', 'masqueradeBit', 'hostnameOverride',
  'nodeIPs', 'nodePortAddresses', 'detectLocalMode', 'localhostNodePorts', 'randomFully', 'conntrackTCPBeLiberal', 'scheduler',
]);

function firstIPv4Cidr(ctx: DocCtx, v: unknown, path: string): Cidr | null {
  if (v === undefined || v === null || v === '') return null;
  const s = ctx.str(v, path);
  // kube-proxy accepts a comma-separated dual-stack list; kube-tun uses the IPv4 member.
  const parts = s.split(',').map((p) => p.trim()).filter((p) => p !== '');
  let found: Cidr | null = null;
  for (const p of parts) {
    if (looksLikeIPv6(p)) continue;
    const c = parseCidrStrict(p);
    if (!c) ctx.fail(path, `must be an IPv4 CIDR like 10.0.0.0/16, got ${show(s)}`);
    if (!found) found = c;
  }
  if (!found) ctx.fail(path, `needs an IPv4 CIDR, got ${show(s)}`);
  return found;
}

function parseKubeTunConfig(ctx: DocCtx, o: Obj): KubeTunConfig {
  ctx.desc = 'KubeTunConfiguration';
  if (o.apiVersion !== 'kubetun.dev/v1alpha1') ctx.fail('apiVersion', `must be kubetun.dev/v1alpha1, got ${show(o.apiVersion)}`);
  for (const k of Object.keys(o)) if (!CONFIG_KEYS.has(k)) ctx.fail(k, `unknown field (known: ${[...CONFIG_KEYS].filter((x) => x !== 'apiVersion' && x !== 'kind' && x !== 'metadata').join(', ')})`);
  const c = defaultKubeTunConfig();
  c.clusterCIDR = firstIPv4Cidr(ctx, o.clusterCIDR, 'clusterCIDR');
  c.serviceCIDR = firstIPv4Cidr(ctx, o.serviceCIDR, 'serviceCIDR');
  c.masqueradeAll = ctx.bool(o.masqueradeAll, 'masqueradeAll', false);
  c.masqueradeBit = ctx.int(o.masqueradeBit, 'masqueradeBit', 0, 31, 14);
  c.hostnameOverride = ctx.str(o.hostnameOverride, 'hostnameOverride', true) || null;
  c.nodeIPs = ctx.arr(o.nodeIPs, 'nodeIPs').map((v, i) => ctx.ip(v, `nodeIPs[${i}]`));
  c.nodePortAddresses = ctx.arr(o.nodePortAddresses, 'nodePortAddresses').map((v, i) => ctx.cidr(v, `nodePortAddresses[${i}]`));
  c.detectLocalMode = o.detectLocalMode === undefined ? null
    : ctx.oneOf<DetectLocalMode>(o.detectLocalMode, 'detectLocalMode', ['ClusterCIDR', 'NodeCIDR', 'None'], 'ClusterCIDR');
  c.localhostNodePorts = ctx.bool(o.localhostNodePorts, 'localhostNodePorts', true);
  c.randomFully = ctx.bool(o.randomFully, 'randomFully', true);
  c.conntrackTCPBeLiberal = ctx.bool(o.conntrackTCPBeLiberal, 'conntrackTCPBeLiberal', false);
  c.scheduler = ctx.oneOf<Scheduler>(o.scheduler, 'scheduler', ['random', 'rr'], 'random');
  return c;
}

function meta(ctx: DocCtx, o: Obj, namespaced: boolean): { name: string; namespace: string; labels: Record<string, string>; annotations: Record<string, string> } {
  const m = ctx.obj(o.metadata, 'metadata')!;
  const name = ctx.str(m.name, 'metadata.name');
  if (name === '') ctx.fail('metadata.name', 'must not be empty');
  const namespace = namespaced ? (ctx.str(m.namespace, 'metadata.namespace', true) ?? 'default') : '';
  const strMap = (v: unknown, path: string): Record<string, string> => {
    const mm = ctx.obj(v, path, true);
    const out: Record<string, string> = {};
    if (mm) for (const [k, val] of Object.entries(mm)) out[k] = ctx.str(val, `${path}.${k}`);
    return out;
  };
  return { name, namespace, labels: strMap(m.labels, 'metadata.labels'), annotations: strMap(m.annotations, 'metadata.annotations') };
}

function parseNode(ctx: DocCtx, o: Obj): NodeInfo {
  const md = meta(ctx, o, false);
  ctx.desc = `Node ${md.name}`;
  const spec = ctx.obj(o.spec, 'spec', true) ?? {};
  let podCIDR: Cidr | null = null;
  if (spec.podCIDR !== undefined && spec.podCIDR !== null && spec.podCIDR !== '') podCIDR = ctx.cidr(spec.podCIDR, 'spec.podCIDR');
  else {
    const list = ctx.arr(spec.podCIDRs, 'spec.podCIDRs');
    for (let i = 0; i < list.length && !podCIDR; i++) {
      const s = ctx.str(list[i], `spec.podCIDRs[${i}]`);
      if (!looksLikeIPv6(s)) podCIDR = ctx.cidr(s, `spec.podCIDRs[${i}]`);
    }
  }
  const status = ctx.obj(o.status, 'status', true) ?? {};
  const internalIPs: number[] = [], externalIPs: number[] = [];
  ctx.arr(status.addresses, 'status.addresses').forEach((a, i) => {
    const p = `status.addresses[${i}]`;
    const ao = ctx.obj(a, p)!;
    const type = ctx.str(ao.type, `${p}.type`);
    const addr = ctx.str(ao.address, `${p}.address`);
    if (type === 'InternalIP' || type === 'ExternalIP') {
      if (looksLikeIPv6(addr)) return;
      const ip = ctx.ip(addr, `${p}.address`);
      (type === 'InternalIP' ? internalIPs : externalIPs).push(ip);
    }
  });
  const t = md.annotations[TUNNEL_ANNOTATION];
  const tunnelAddr = t === undefined || t === '' ? null : ctx.ip(t, `metadata.annotations["${TUNNEL_ANNOTATION}"]`);
  return { name: md.name, podCIDR, internalIPs, externalIPs, tunnelAddr, labels: md.labels, source: ctx.source };
}

const PORT_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function parseService(ctx: DocCtx, o: Obj, cfg: () => KubeTunConfig): ParsedService {
  const md = meta(ctx, o, true);
  const key = `${md.namespace}/${md.name}`;
  ctx.desc = `Service ${key}`;
  const ports = parseServicePorts(ctx, o, md, cfg);
  return { key, ports: ports ?? [] };
}

function parseServicePorts(ctx: DocCtx, o: Obj, md: ReturnType<typeof meta>, cfg: () => KubeTunConfig): ServicePortInfo[] | null {
  const spec = ctx.obj(o.spec, 'spec')!;
  const typeText = spec.type === undefined || spec.type === null ? 'ClusterIP' : ctx.str(spec.type, 'spec.type');
  if (typeText === 'ExternalName') return null; // not proxied (kube-proxy skips it)
  if (typeText !== 'ClusterIP' && typeText !== 'NodePort' && typeText !== 'LoadBalancer') {
    ctx.fail('spec.type', `must be one of ClusterIP, NodePort, LoadBalancer, ExternalName, got ${show(typeText)}`);
  }
  const type = typeText as ServiceType;
  const cipText = ctx.str(spec.clusterIP, 'spec.clusterIP', true);
  if (cipText === 'None') return null; // headless: not proxied
  if (cipText === undefined || cipText === '') ctx.fail('spec.clusterIP', 'required (kube-tun does not allocate cluster IPs)');
  const clusterIP = ctx.bulkIp(cipText, 'spec.clusterIP');
  const c = cfg();
  if (c.serviceCIDR && !cidrContains(c.serviceCIDR, clusterIP)) {
    ctx.fail('spec.clusterIP', `${cipText} is outside serviceCIDR ${formatCidr(c.serviceCIDR)}`);
  }
  const externalIPs = ctx.arr(spec.externalIPs, 'spec.externalIPs')
    .map((v, i) => ctx.str(v, `spec.externalIPs[${i}]`))
    .filter((s) => !looksLikeIPv6(s))
    .map((s, i) => ctx.bulkIp(s, `spec.externalIPs[${i}]`));
  const lbVIPs: number[] = [];
  if (type === 'LoadBalancer') {
    const st = ctx.obj(o.status, 'status', true) ?? {};
    const lb = ctx.obj(st.loadBalancer, 'status.loadBalancer', true) ?? {};
    ctx.arr(lb.ingress, 'status.loadBalancer.ingress').forEach((ing, i) => {
      const p = `status.loadBalancer.ingress[${i}]`;
      const io = ctx.obj(ing, p)!;
      const ip = ctx.str(io.ip, `${p}.ip`, true);
      // ipMode Proxy: the load balancer does not deliver to the VIP, so kube-proxy skips it.
      if (ip === undefined || ip === '' || looksLikeIPv6(ip) || io.ipMode === 'Proxy') return;
      lbVIPs.push(ctx.bulkIp(ip, `${p}.ip`));
    });
  }
  const ranges = ctx.arr(spec.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges')
    .map((v, i) => ctx.str(v, `spec.loadBalancerSourceRanges[${i}]`).trim())
    .filter((s) => !looksLikeIPv6(s))
    .map((s, i) => ctx.cidr(s, `spec.loadBalancerSourceRanges[${i}]`));
  const externallyAccessible = type !== 'ClusterIP' || externalIPs.length > 0;
  const etp = ctx.oneOf(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy', ['Cluster', 'Local'], 'Cluster');
  const itp = ctx.oneOf(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy', ['Cluster', 'Local'], 'Cluster');
  const affinity = ctx.oneOf(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP'], 'None');
  let sticky = DEFAULT_STICKY_SECONDS;
  if (affinity === 'ClientIP') {
    const sac = ctx.obj(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig', true);
    const cip = sac ? ctx.obj(sac.clientIP, 'spec.sessionAffinityConfig.clientIP', true) : undefined;
    if (cip) sticky = ctx.int(cip.timeoutSeconds, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', 1, 86400, DEFAULT_STICKY_SECONDS);
  }
  const externalPolicyLocal = externallyAccessible && etp === 'Local';
  // apiservice.NeedsHealthCheck: only LoadBalancer services with eTP Local get a health check port.
  let hcnp = 0;
  if (spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort !== null) {
    hcnp = ctx.port(spec.healthCheckNodePort, 'spec.healthCheckNodePort');
  }
  const healthCheckNodePort = type === 'LoadBalancer' && externalPolicyLocal ? hcnp : 0;
  const td = ctx.str(spec.trafficDistribution, 'spec.trafficDistribution', true);
  const mode = md.annotations[TOPOLOGY_MODE_ANNOTATION] ?? md.annotations[TOPOLOGY_HINTS_ANNOTATION];
  // kube-proxy takes "Auto" and "auto" (topology.go); any other value means no hints.
  const topologyAware = td === 'PreferClose' || mode === 'Auto' || mode === 'auto';
  const annot = md.annotations[SCHEDULER_ANNOTATION];
  const scheduler: Scheduler = annot === undefined
    ? c.scheduler
    : ctx.oneOf<Scheduler>(annot, `metadata.annotations["${SCHEDULER_ANNOTATION}"]`, ['random', 'rr'], 'random');

  const ports = ctx.arr(spec.ports, 'spec.ports');
  if (ports.length === 0) ctx.fail('spec.ports', 'at least one port is required');
  const seen = new Set<string>();
  const out: ServicePortInfo[] = [];
  ports.forEach((pv, i) => {
    const p = `spec.ports[${i}]`;
    const po = ctx.obj(pv, p)!;
    const portName = ctx.str(po.name, `${p}.name`, true) ?? '';
    if (portName !== '' && !PORT_NAME_RE.test(portName)) ctx.fail(`${p}.name`, `must be a DNS label, got ${show(portName)}`);
    if (ports.length > 1 && portName === '') ctx.fail(`${p}.name`, 'required when the service has more than one port');
    if (seen.has(portName)) ctx.fail(`${p}.name`, `duplicate port name ${show(portName)}`);
    seen.add(portName);
    const protocol = ctx.oneOf<Protocol>(po.protocol, `${p}.protocol`, ['TCP', 'UDP', 'SCTP'], 'TCP');
    const port = ctx.port(po.port, `${p}.port`);
    let targetPort: number | string = port;
    if (po.targetPort !== undefined && po.targetPort !== null) {
      targetPort = typeof po.targetPort === 'string' ? ctx.str(po.targetPort, `${p}.targetPort`) : ctx.port(po.targetPort, `${p}.targetPort`);
    }
    let nodePort = 0;
    if (po.nodePort !== undefined && po.nodePort !== null && po.nodePort !== 0) {
      if (type === 'ClusterIP') ctx.fail(`${p}.nodePort`, "may not be used when spec.type is 'ClusterIP'");
      nodePort = ctx.port(po.nodePort, `${p}.nodePort`);
    } else if (type === 'NodePort') {
      ctx.fail(`${p}.nodePort`, 'required for type NodePort (kube-tun does not allocate node ports)');
    }
    const key = `${md.namespace}/${md.name}:${portName}/${protocol}`;
    out.push({
      key, namespace: md.namespace, name: md.name, portName, protocol, type, clusterIP, port, targetPort, nodePort,
      externalIPs, loadBalancerVIPs: lbVIPs, loadBalancerSourceRanges: ranges, externalPolicyLocal,
      internalPolicyLocal: itp === 'Local', healthCheckNodePort, sessionAffinityClientIP: affinity === 'ClientIP',
      stickyMaxAgeSeconds: sticky, scheduler, topologyAware, source: ctx.source,
    });
  });
  return out;
}

function parseEndpointSlice(ctx: DocCtx, o: Obj): ParsedSlice | null {
  const md = meta(ctx, o, true);
  ctx.desc = `EndpointSlice ${md.namespace}/${md.name}`;
  const svc = md.labels[SERVICE_NAME_LABEL];
  if (svc === undefined || svc === '') ctx.fail(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'required (names the Service this slice belongs to)');
  const addressType = ctx.str(o.addressType, 'addressType');
  if (addressType === 'IPv6' || addressType === 'FQDN') return null; // not this proxier's family (kube-proxy ignores them)
  if (addressType !== 'IPv4') ctx.fail('addressType', `must be IPv4, IPv6 or FQDN, got ${show(addressType)}`);
  const ports: { name: string; protocol: Protocol; port: number }[] = [];
  ctx.arr(o.ports, 'ports').forEach((pv, i) => {
    const p = `ports[${i}]`;
    const po = ctx.obj(pv, p)!;
    const name = ctx.str(po.name, `${p}.name`, true) ?? '';
    const protocol = ctx.oneOf<Protocol>(po.protocol, `${p}.protocol`, ['TCP', 'UDP', 'SCTP'], 'TCP');
    if (po.port === undefined || po.port === null || po.port === 0) return; // kube-proxy ignores ports without a number
    ports.push({ name, protocol, port: ctx.port(po.port, `${p}.port`) });
  });
  const endpoints: RawEndpoint[] = [];
  ctx.arr(o.endpoints, 'endpoints').forEach((ev, i) => {
    const p = `endpoints[${i}]`;
    const eo = ctx.obj(ev, p)!;
    const addrs = ctx.arr(eo.addresses, `${p}.addresses`);
    if (addrs.length === 0) ctx.fail(`${p}.addresses`, 'at least one address is required');
    const ip = ctx.bulkIp(addrs[0], `${p}.addresses[0]`);
    const cond = ctx.obj(eo.conditions, `${p}.conditions`, true) ?? {};
    // nil ready/serving mean true, nil terminating means false (endpointslicecache.go).
    const ready = ctx.bool(cond.ready, `${p}.conditions.ready`, true);
    const serving = ctx.bool(cond.serving, `${p}.conditions.serving`, ready);
    const terminating = ctx.bool(cond.terminating, `${p}.conditions.terminating`, false);
    const nodeName = ctx.str(eo.nodeName, `${p}.nodeName`, true) ?? null;
    const zone = ctx.str(eo.zone, `${p}.zone`, true) ?? null;
    const hints = ctx.obj(eo.hints, `${p}.hints`, true);
    const zoneHints = hints === undefined ? [] : ctx.arr(hints.forZones, `${p}.hints.forZones`).map((z, j) => {
      const zp = `${p}.hints.forZones[${j}]`;
      return ctx.str(ctx.obj(z, zp)!.name, `${zp}.name`);
    });
    endpoints.push({ ip, nodeName, zone, ready, serving, terminating, zoneHints });
  });
  return { key: `${md.namespace}/${md.name}`, service: `${md.namespace}/${svc}`, ports, endpoints };
}

/** Parses one document's object (recursing into a List's items) into `col`. */
export function handleObject(ctx: DocCtx, v: unknown, col: Collected, pathPrefix: string): void {
  const o = ctx.obj(v, pathPrefix || '(document)')!;
  const kind = o.kind, apiVersion = o.apiVersion;
  const at = (p: string) => (pathPrefix ? `${pathPrefix}.${p}` : p);
  if (typeof kind !== 'string') ctx.fail(at('kind'), `required, got ${show(kind)}`);
  if (pathPrefix) {
    // Items of a List: report paths relative to the item.
    const sub = new DocCtx(ctx.file, ctx.doc);
    const orig = sub.fail.bind(sub);
    sub.fail = (path: string, msg: string): never => orig(`${pathPrefix}.${path}`, msg);
    ctx = sub;
  }
  const cfg = () => col.config ?? defaultKubeTunConfig();
  if (kind === 'KubeTunConfiguration') {
    if (pathPrefix) ctx.fail('kind', 'KubeTunConfiguration may not be inside a List');
    if (col.config) ctx.fail('kind', `a second KubeTunConfiguration (the first is ${col.configSource!.file} document ${col.configSource!.doc})`);
    col.config = parseKubeTunConfig(ctx, o);
    col.configSource = ctx.source;
    return;
  }
  if (kind === 'List' && apiVersion === 'v1') {
    ctx.arr(o.items, at('items')).forEach((it, i) => handleObject(ctx, it, col, at(`items[${i}]`)));
    return;
  }
  if (kind === 'Node' && apiVersion === 'v1') {
    const n = parseNode(ctx, o);
    if (col.nodes.has(n.name)) ctx.fail('metadata.name', `duplicate Node ${show(n.name)}`);
    col.nodes.set(n.name, n);
    return;
  }
  if (kind === 'Service' && apiVersion === 'v1') {
    const svc = parseService(ctx, o, cfg);
    if (col.services.has(svc.key)) ctx.fail('metadata.name', `duplicate Service ${svc.key}`);
    col.services.set(svc.key, svc);
    return;
  }
  if (kind === 'EndpointSlice' && apiVersion === 'discovery.k8s.io/v1') {
    const s = parseEndpointSlice(ctx, o);
    if (!s) return;
    if (col.slices.has(s.key)) ctx.fail('metadata.name', `duplicate EndpointSlice ${s.key}`);
    col.slices.set(s.key, s);
    return;
  }
  ctx.fail(at('kind'), `unsupported object ${show(apiVersion)} ${show(kind)} (supported: kubetun.dev/v1alpha1 KubeTunConfiguration, v1 Node, v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 List)`);
}


// One object at a time, for callers that hold objects rather than documents (watch mode's
// informers): the same parsers as the file mode's documents. `ref` names the object in messages.
// They throw ConfigError; the kind and apiVersion are the caller's to check.

/** A v1 Service; `cfg` gives the serviceCIDR check and the default scheduler. */
export function parseServiceObject(o: unknown, cfg: KubeTunConfig, ref: SourceRef): ParsedService {
  const ctx = new DocCtx(ref.file, ref.doc);
  return parseService(ctx, ctx.obj(o, '(document)')!, () => cfg);
}

/** A discovery.k8s.io/v1 EndpointSlice; null for IPv6 and FQDN slices (not this proxier's). */
export function parseEndpointSliceObject(o: unknown, ref: SourceRef): ParsedSlice | null {
  const ctx = new DocCtx(ref.file, ref.doc);
  return parseEndpointSlice(ctx, ctx.obj(o, '(document)')!);
}

/** A v1 Node. */
export function parseNodeObject(o: unknown, ref: SourceRef): NodeInfo {
  const ctx = new DocCtx(ref.file, ref.doc);
  return parseNode(ctx, ctx.obj(o, '(document)')!);
}
