// Reads multi-document YAML manifests (KubeTunConfiguration, v1 Node, v1 Service,
// discovery.k8s.io/v1 EndpointSlice, v1 List) into a ClusterState, and a ClusterState plus
// kube-proxy flags into NodeSettings. Every error names file, document (1-based) and field path.
import * as fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import {
  Cidr, cidrContains, formatCidr, formatIPv4, looksLikeIPv6, parseCidr, parseIPv4,
} from './ip';
import {
  ClusterState, DetectLocalMode, EndpointInfo, KubeTunConfig, NodeFlags, NodeInfo, NodeSettings, Protocol,
  Scheduler, ServicePortInfo, ServiceType, SourceRef, defaultKubeTunConfig, servicePortNameString,
} from './model';

export class ConfigError extends Error {
  constructor(message: string, readonly file?: string, readonly doc?: number, readonly path?: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface ConfigSource { readonly file: string; readonly text: string }

const TUNNEL_ANNOTATION = 'projectcalico.org/IPv4IPIPTunnelAddr';
const SCHEDULER_ANNOTATION = 'kube-tun.dev/scheduler';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const DEFAULT_STICKY_SECONDS = 10800;

type Obj = Record<string, unknown>;

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
}

/** Field access with path-carrying errors for one document. */
class DocCtx {
  desc = '';
  constructor(readonly file: string, readonly doc: number) {}
  get source(): SourceRef { return { file: this.file, doc: this.doc }; }
  fail(path: string, msg: string): never {
    const where = `${this.file}: document ${this.doc}${this.desc ? ` (${this.desc})` : ''}`;
    throw new ConfigError(`${where}: ${path ? `${path}: ` : ''}${msg}`, this.file, this.doc, path);
  }
  obj(v: unknown, path: string, optional = false): Obj | undefined {
    if (v === undefined || v === null) {
      if (optional) return undefined;
      this.fail(path, 'required');
    }
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(path, `must be a mapping, got ${show(v)}`);
    return v as Obj;
  }
  arr(v: unknown, path: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(path, `must be a list, got ${show(v)}`);
    return v;
  }
  str(v: unknown, path: string, optional: true): string | undefined;
  str(v: unknown, path: string, optional?: false): string;
  str(v: unknown, path: string, optional = false): string | undefined {
    if (v === undefined || v === null) {
      if (optional) return undefined;
      this.fail(path, 'required');
    }
    if (typeof v !== 'string') this.fail(path, `must be a string, got ${show(v)}`);
    return v;
  }
  bool(v: unknown, path: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(path, `must be true or false, got ${show(v)}`);
    return v;
  }
  int(v: unknown, path: string, lo: number, hi: number, dflt?: number): number {
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (v === undefined || v === null) this.fail(path, `required (${lo}-${hi})`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) this.fail(path, `must be ${lo}-${hi}, got ${show(v)}`);
    return v;
  }
  port(v: unknown, path: string): number { return this.int(v, path, 1, 65535); }
  ip(v: unknown, path: string): number {
    const s = this.str(v, path);
    if (looksLikeIPv6(s)) this.fail(path, `IPv6 is not supported, got ${show(s)}`);
    const a = parseIPv4(s);
    if (a < 0) this.fail(path, `must be an IPv4 address, got ${show(s)}`);
    return a;
  }
  cidr(v: unknown, path: string): Cidr {
    const s = this.str(v, path);
    if (looksLikeIPv6(s)) this.fail(path, `IPv6 is not supported, got ${show(s)}`);
    const c = parseCidr(s);
    if (!c) this.fail(path, `must be an IPv4 CIDR like 10.0.0.0/16, got ${show(s)}`);
    return c;
  }
  oneOf<T extends string>(v: unknown, path: string, allowed: readonly T[], dflt: T): T {
    if (v === undefined || v === null || v === '') return dflt;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) this.fail(path, `must be one of ${allowed.join(', ')}, got ${show(v)}`);
    return v as T;
  }
}

/** Collected objects before cross-referencing. */
interface Collected {
  config: KubeTunConfig | null;
  configSource: SourceRef | null;
  services: Map<string, { ports: ServicePortInfo[]; ctx: DocCtx }>;
  slices: Map<string, { service: string; ports: { name: string; protocol: Protocol; port: number }[]; endpoints: RawEndpoint[] }>;
  nodes: Map<string, NodeInfo>;
}

interface RawEndpoint {
  ip: number; nodeName: string | null; zone: string | null; ready: boolean; serving: boolean; terminating: boolean;
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
    const c = parseCidr(p);
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

function parseService(ctx: DocCtx, o: Obj, cfg: () => KubeTunConfig): ServicePortInfo[] | null {
  const md = meta(ctx, o, true);
  ctx.desc = `Service ${md.namespace}/${md.name}`;
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
  const clusterIP = ctx.ip(cipText, 'spec.clusterIP');
  const c = cfg();
  if (c.serviceCIDR && !cidrContains(c.serviceCIDR, clusterIP)) {
    ctx.fail('spec.clusterIP', `${cipText} is outside serviceCIDR ${formatCidr(c.serviceCIDR)}`);
  }
  const externalIPs = ctx.arr(spec.externalIPs, 'spec.externalIPs')
    .map((v, i) => ctx.str(v, `spec.externalIPs[${i}]`))
    .filter((s) => !looksLikeIPv6(s))
    .map((s, i) => ctx.ip(s, `spec.externalIPs[${i}]`));
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
      lbVIPs.push(ctx.ip(ip, `${p}.ip`));
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
      stickyMaxAgeSeconds: sticky, scheduler, source: ctx.source,
    });
  });
  return out;
}

function parseEndpointSlice(ctx: DocCtx, o: Obj): { key: string; service: string; ports: { name: string; protocol: Protocol; port: number }[]; endpoints: RawEndpoint[] } | null {
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
    const ip = ctx.ip(addrs[0], `${p}.addresses[0]`);
    const cond = ctx.obj(eo.conditions, `${p}.conditions`, true) ?? {};
    // nil ready/serving mean true, nil terminating means false (endpointslicecache.go).
    const ready = ctx.bool(cond.ready, `${p}.conditions.ready`, true);
    const serving = ctx.bool(cond.serving, `${p}.conditions.serving`, ready);
    const terminating = ctx.bool(cond.terminating, `${p}.conditions.terminating`, false);
    const nodeName = ctx.str(eo.nodeName, `${p}.nodeName`, true) ?? null;
    const zone = ctx.str(eo.zone, `${p}.zone`, true) ?? null;
    endpoints.push({ ip, nodeName, zone, ready, serving, terminating });
  });
  return { key: `${md.namespace}/${md.name}`, service: `${md.namespace}/${svc}`, ports, endpoints };
}

function handleObject(ctx: DocCtx, v: unknown, col: Collected, pathPrefix: string): void {
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
    const ports = parseService(ctx, o, cfg);
    const md = ctx.desc.replace(/^Service /, '');
    if (col.services.has(md)) ctx.fail('metadata.name', `duplicate Service ${md}`);
    col.services.set(md, { ports: ports ?? [], ctx });
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

/** Parses manifests (already read) into the desired state. Throws ConfigError. */
export function parseConfig(sources: readonly ConfigSource[]): ClusterState {
  const col: Collected = { config: null, configSource: null, services: new Map(), slices: new Map(), nodes: new Map() };
  // The configuration may come after the services that depend on it (serviceCIDR check):
  // handle KubeTunConfiguration documents first.
  const docs: { ctx: DocCtx; value: unknown; isConfig: boolean }[] = [];
  for (const src of sources) {
    // JSON (kubectl get -o json) is YAML too, but JSON.parse is ~100x faster than the yaml package.
    const head = src.text.trimStart()[0];
    if (head === '{' || head === '[') {
      let value: unknown;
      try { value = JSON.parse(src.text); } catch { value = undefined; }
      if (value !== undefined) {
        const list = Array.isArray(value) ? value : [value];
        list.forEach((v, i) => {
          if (v === null) return;
          const isConfig = typeof v === 'object' && (v as Obj).kind === 'KubeTunConfiguration';
          docs.push({ ctx: new DocCtx(src.file, i + 1), value: v, isConfig });
        });
        continue;
      }
    }
    const parsed = parseAllDocuments(src.text, { uniqueKeys: true });
    const list = Array.isArray(parsed) ? parsed : [parsed];
    list.forEach((d, i) => {
      const ctx = new DocCtx(src.file, i + 1);
      if (d.errors.length > 0) {
        const e = d.errors[0];
        const line = e.linePos?.[0]?.line;
        ctx.fail('', `YAML: ${e.message.split('\n')[0]}${line ? ` (line ${line})` : ''}`);
      }
      const value: unknown = d.toJS({ maxAliasCount: 100 });
      if (value === null || value === undefined) return; // empty document
      const isConfig = typeof value === 'object' && (value as Obj).kind === 'KubeTunConfiguration';
      docs.push({ ctx, value, isConfig });
    });
  }
  for (const d of docs) if (d.isConfig) handleObject(d.ctx, d.value, col, '');
  for (const d of docs) if (!d.isConfig) handleObject(d.ctx, d.value, col, '');
  return assembleState(col);
}

/** Reads and parses manifest files. Throws ConfigError (also for unreadable files). */
export function loadConfig(files: string | readonly string[]): ClusterState {
  const list = typeof files === 'string' ? [files] : files;
  const sources = list.map((file) => {
    try {
      return { file, text: fs.readFileSync(file, 'utf8') };
    } catch (e) {
      throw new ConfigError(`${file}: ${(e as Error).message}`, file);
    }
  });
  return parseConfig(sources);
}

function assembleState(col: Collected): ClusterState {
  const config = col.config ?? defaultKubeTunConfig();
  const servicePorts: ServicePortInfo[] = [];
  for (const { ports } of col.services.values()) servicePorts.push(...ports);
  servicePorts.sort((a, b) => {
    const an = servicePortNameString(a), bn = servicePortNameString(b);
    return an < bn ? -1 : an > bn ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0;
  });
  // endpointslicecache: per (service, port name, protocol) the endpoints of all slices, deduplicated
  // by IP, then sorted by Endpoint.String() ("ip:port", string order).
  const byKey = new Map<string, Map<number, EndpointInfo>>();
  const sliceNames = [...col.slices.keys()].sort();
  for (const sn of sliceNames) {
    const s = col.slices.get(sn)!;
    for (const p of s.ports) {
      const key = `${s.service}:${p.name}/${p.protocol}`;
      let m = byKey.get(key);
      if (!m) byKey.set(key, (m = new Map()));
      for (const e of s.endpoints) {
        if (m.has(e.ip)) continue;
        m.set(e.ip, {
          ip: e.ip, port: p.port, endpoint: `${formatIPv4(e.ip)}:${p.port}`, nodeName: e.nodeName, zone: e.zone,
          ready: e.ready, serving: e.serving, terminating: e.terminating,
        });
      }
    }
  }
  const endpoints: Record<string, EndpointInfo[]> = {};
  for (const [key, m] of byKey) {
    const list = [...m.values()];
    list.sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
    endpoints[key] = list;
  }
  const nodes = [...col.nodes.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { config, servicePorts, endpoints, nodes };
}

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
    const c = parseCidr(flags.clusterCIDR.split(',').map((s) => s.trim()).find((s) => !looksLikeIPv6(s)) ?? '');
    if (!c) flagErr('cluster-cidr', `must be an IPv4 CIDR, got ${show(flags.clusterCIDR)}`);
    clusterCIDR = c;
  }
  let nodeIPs: number[];
  if (flags.nodeIPs && flags.nodeIPs.length > 0) {
    nodeIPs = flags.nodeIPs.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '' && !looksLikeIPv6(s)).map((s) => {
      const a = parseIPv4(s);
      if (a < 0) flagErr('node-ip', `must be an IPv4 address, got ${show(s)}`);
      return a;
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
