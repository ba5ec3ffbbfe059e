// Reads multi-document YAML manifests (KubeTunConfiguration, v1 Node, v1 Service,
// discovery.k8s.io/v1 EndpointSlice, v1 List) into a ClusterState, and a ClusterState plus
// kube-proxy flags into NodeSettings. Every error names file, document (1-based) and field path.
import * as fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import {
  Cidr, cidrContains, formatCidr, formatIPv4, looksLikeIPv6, parseCidr, parseIPv4,
} from '../ip';
import {
  ClusterState, DetectLocalMode, EndpointInfo, KubeTunConfig, NodeFlags, NodeInfo, NodeSettings, Protocol,
  Scheduler, ServicePortInfo, ServiceType, SourceRef, defaultKubeTunConfig, servicePortNameString,
} from './state';

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
    // The plain YAML most manifests are written in: the same values, an order of magnitude faster.
    const fast = fastYamlDocuments(src.text);
    if (fast !== null) {
      fast.forEach((value, i) => {
        if (value === null || value === undefined) return; // empty document
        const isConfig = typeof value === 'object' && (value as Obj).kind === 'KubeTunConfiguration';
        docs.push({ ctx: new DocCtx(src.file, i + 1), value, isConfig });
      });
      continue;
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

// ---------------------------------------------------------------------------------------------
// Fast path for YAML. The yaml package needs ~0.2 ms per document (its lexer and composer keep
// every token, range and comment), seconds for a 10,000-service manifest. fastYamlDocuments()
// reads the plain subset that generated and hand-written manifests use — block mappings and
// sequences, single-line flow collections, single-line plain and quoted scalars, comments — into
// the same values as parseAllDocuments(...).toJS() (YAML 1.2 core schema). On anything else
// (anchors, tags, block or multi-line scalars, escapes, complex or non-string keys, duplicate keys,
// tabs, directives, syntax errors…) it returns null and the whole source goes to the yaml package,
// which also reports the errors: documents are numbered and read exactly as before.

// The yaml package's core schema, in its order (schema/core/*.js).
const Y_NULL = /^(?:~|[Nn]ull|NULL)?$/;
const Y_BOOL = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const Y_INT_OCT = /^0o[0-7]+$/;
const Y_INT = /^[-+]?[0-9]+$/;
const Y_INT_HEX = /^0x[0-9a-fA-F]+$/;
const Y_FLOAT_NAN = /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
const Y_FLOAT_EXP = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/;
const Y_FLOAT = /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/;
/** Plain scalars that can only be strings: they start with none of ~ . + - 0-9 n N t T f F. */
const Y_SURELY_STRING = /^[^~.+\-0-9nNtTfF]/;

/** A plain scalar's value, as the yaml package's core schema resolves it. */
function yamlPlain(s: string): unknown {
  if (Y_SURELY_STRING.test(s)) return s;
  if (Y_NULL.test(s)) return null;
  if (Y_BOOL.test(s)) return s[0] === 't' || s[0] === 'T';
  if (Y_INT_OCT.test(s)) return parseInt(s.substring(2), 8);
  if (Y_INT.test(s)) return parseInt(s, 10);
  if (Y_INT_HEX.test(s)) return parseInt(s.substring(2), 16);
  if (Y_FLOAT_NAN.test(s)) return s.slice(-3).toLowerCase() === 'nan' ? NaN : s[0] === '-' ? -Infinity : Infinity;
  if (Y_FLOAT_EXP.test(s) || Y_FLOAT.test(s)) return parseFloat(s);
  return s;
}

/** Thrown (and caught) when the fast path leaves a source to the yaml package. */
const YAML_FALLBACK = new Error('fast YAML path: not in the subset');

/** Characters a plain scalar cannot start with (YAML indicators; - ? : only when followed by a space). */
const Y_INDICATOR_START = /^[[\]{},#&*!|>'"%@`]|^[-?:](?: |$)/;

class FastYaml {
  private readonly lines: string[];
  private i = 0; // current line
  private end = 0; // end (exclusive) of the current document's lines

  constructor(text: string) {
    this.lines = text.split('\n');
    for (let k = 0; k < this.lines.length; k++) {
      const l = this.lines[k];
      if (l.length > 0 && l.charCodeAt(l.length - 1) === 13) this.lines[k] = l.slice(0, -1);
      if (this.lines[k].includes('\r')) FastYaml.fail(); // a line break of its own for YAML
    }
  }

  static fail(): never {
    throw YAML_FALLBACK;
  }

  /** The documents' values, numbered as parseAllDocuments numbers them. */
  documents(): unknown[] {
    const lines = this.lines, out: unknown[] = [];
    let start = 0, explicit = false;
    for (let k = 0; k <= lines.length; k++) {
      const l = k < lines.length ? lines[k] : null;
      if (l !== null && !(l.startsWith('---') && (l.length === 3 || l[3] === ' '))) {
        const c = l.charCodeAt(0);
        if (c === 37 || (c === 46 && l.startsWith('...'))) FastYaml.fail(); // directives, document end
        continue;
      }
      if (l !== null && l.length > 3 && !/^--- +(?:#.*)?$/.test(l)) FastYaml.fail(); // content after ---
      // lines [start, k) are a document: counted when it was started by "---" or has content.
      this.i = start;
      this.end = k;
      const first = this.skip();
      if (first < k) out.push(this.document());
      else if (explicit) out.push(null);
      start = k + 1;
      explicit = true;
    }
    return out;
  }

  /** Index of the next line with content (not blank, not a comment) from this.i, or this.end. */
  private skip(): number {
    const lines = this.lines;
    let k = this.i;
    for (; k < this.end; k++) {
      const l = lines[k];
      let p = 0;
      while (p < l.length && l.charCodeAt(p) === 32) p++;
      if (p < l.length && l.charCodeAt(p) !== 35) break;
    }
    this.i = k;
    return k;
  }

  private static indent(l: string): number {
    let p = 0;
    while (p < l.length && l.charCodeAt(p) === 32) p++;
    return p;
  }

  private document(): unknown {
    const l = this.lines[this.i];
    if (FastYaml.indent(l) !== 0 || FastYaml.isItem(l, 0)) FastYaml.fail();
    const v = this.mapping(0, 0);
    if (this.skip() < this.end) FastYaml.fail();
    return v;
  }

  /** Does line l have a sequence item ("-" then a space or the end) at column c? */
  private static isItem(l: string, c: number): boolean {
    return l.charCodeAt(c) === 45 && (l.length === c + 1 || l.charCodeAt(c + 1) === 32);
  }

  /**
   * "key: value" at column col of this.i (the first line may have the key after "- "), and the
   * following lines with keys at column col.
   */
  private mapping(col: number, firstAt: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    let at = firstAt; // column of the key on the current line
    for (;;) {
      const l = this.lines[this.i];
      const colon = FastYaml.keyEnd(l, at);
      if (colon < 0) FastYaml.fail();
      let key: string;
      const q = l.charCodeAt(at);
      if (q === 34 || q === 39) { // "key": / 'key':
        const [k, after] = quoted(l, at);
        if (after !== colon) FastYaml.fail();
        key = k;
      } else {
        key = l.slice(at, colon);
        if (key.charCodeAt(key.length - 1) === 32 || typeof yamlPlain(key) !== 'string') FastYaml.fail(); // "a : b", "1: b"
      }
      if (key === '__proto__' || key === '<<') FastYaml.fail();
      if (Object.prototype.hasOwnProperty.call(obj, key)) FastYaml.fail(); // duplicate: the yaml package says so
      this.i++;
      obj[key] = this.valueAfter(l, colon + 1, col);
      if (this.skip() >= this.end) return obj;
      const next = this.lines[this.i], ind = FastYaml.indent(next);
      if (ind < col) return obj;
      if (ind > col) FastYaml.fail(); // a continuation or a syntax error
      if (FastYaml.isItem(next, ind)) return obj; // a sequence at the key's column: the caller's
      at = col;
    }
  }

  /** Position of the ": " (or ":" ending the line) after a plain or quoted key starting at `at` on l, or -1. */
  private static keyEnd(l: string, at: number): number {
    const c = l.charCodeAt(at);
    if (c === 34 || c === 39) { // a quoted key, or a quoted scalar
      let e = l.indexOf(l[at], at + 1);
      while (c === 39 && e > 0 && l.charCodeAt(e + 1) === 39) e = l.indexOf("'", e + 2); // '' in '…'
      if (e < 0 || l.charCodeAt(e + 1) !== 58) return -1;
      return e + 2 === l.length || l.charCodeAt(e + 2) === 32 ? e + 1 : -1;
    }
    if (Y_INDICATOR_START.test(l.slice(at, at + 2))) return -1; // a flow collection, …
    for (let p = at; p < l.length; p++) {
      const c = l.charCodeAt(p);
      if (c === 58) { // ':'
        if (p + 1 === l.length || l.charCodeAt(p + 1) === 32) return p > at ? p : -1;
        return -1; // "a:b" keys: leave them to the yaml package
      }
      if (c === 35 && l.charCodeAt(p - 1) === 32) return -1; // a comment
      if (c === 34 || c === 39) return -1; // quotes
    }
    return -1;
  }

  /** The value of a mapping entry whose key ends before `from` on line l (already consumed), the key at column col. */
  private valueAfter(l: string, from: number, col: number): unknown {
    let p = from;
    while (p < l.length && l.charCodeAt(p) === 32) p++;
    if (p < l.length && l.charCodeAt(p) !== 35) {
      if (p === from) FastYaml.fail();
      return this.inline(l, p);
    }
    // Nothing on the line: a block below, a sequence at the key's column, or null.
    if (this.skip() >= this.end) return null;
    const next = this.lines[this.i], ind = FastYaml.indent(next);
    if (ind > col) return this.block(ind);
    if (ind === col && FastYaml.isItem(next, ind)) return this.sequence(ind);
    return null;
  }

  /** A block mapping or sequence whose first line (this.i) is indented by ind. */
  private block(ind: number): unknown {
    return FastYaml.isItem(this.lines[this.i], ind) ? this.sequence(ind) : this.mapping(ind, ind);
  }

  /** "- item" lines at column col. */
  private sequence(col: number): unknown[] {
    const arr: unknown[] = [];
    for (;;) {
      const l = this.lines[this.i];
      let p = col + 1;
      while (p < l.length && l.charCodeAt(p) === 32) p++;
      if (p === l.length || l.charCodeAt(p) === 35) FastYaml.fail(); // a block below a lone "-"
      if (FastYaml.isItem(l, p)) arr.push(this.sequence(p)); // "- - item" and more items below
      else if (FastYaml.keyEnd(l, p) >= 0) arr.push(this.mapping(p, p)); // "- key: value" and more keys below
      else {
        this.i++;
        arr.push(this.inline(l, p));
      }
      if (this.skip() >= this.end) return arr;
      const next = this.lines[this.i], ind = FastYaml.indent(next);
      if (ind < col) return arr;
      if (ind > col) FastYaml.fail();
      if (!FastYaml.isItem(next, ind)) return arr;
    }
  }

  /** A value that starts at l[p] and ends the line (but for a comment): flow collection, quoted or plain scalar. */
  private inline(l: string, p: number): unknown {
    const c = l.charCodeAt(p);
    let v: unknown, q: number;
    if (c === 123 || c === 91) { // { [
      const f = new FlowReader(l, p);
      v = f.value();
      q = f.p;
    } else if (c === 34 || c === 39) {
      const r = quoted(l, p);
      v = r[0];
      q = r[1];
    } else {
      if (Y_INDICATOR_START.test(l.slice(p, p + 2))) FastYaml.fail();
      let e = l.indexOf(' #', p);
      if (e < 0) e = l.length;
      const s = trimSpaces(l, p, e);
      if (s.includes(': ') || s.endsWith(':')) FastYaml.fail();
      return yamlPlain(s);
    }
    while (q < l.length && l.charCodeAt(q) === 32) q++;
    if (q < l.length && !(l.charCodeAt(q) === 35 && l.charCodeAt(q - 1) === 32)) FastYaml.fail();
    return v;
  }
}

/** l[start, end) without trailing spaces (YAML trims spaces, not all of String.trim's white space). */
function trimSpaces(l: string, start: number, end: number): string {
  while (end > start && l.charCodeAt(end - 1) === 32) end--;
  return l.slice(start, end);
}

/** A quoted scalar at l[p] (single-line; double-quoted without escapes): [value, position after it]. */
function quoted(l: string, p: number): [string, number] {
  const qc = l[p];
  if (qc === '"') {
    const e = l.indexOf('"', p + 1);
    if (e < 0) FastYaml.fail();
    const s = l.slice(p + 1, e);
    if (s.includes('\\')) FastYaml.fail();
    return [s, e + 1];
  }
  let s = '';
  let k = p + 1;
  for (;;) {
    const e = l.indexOf("'", k);
    if (e < 0) FastYaml.fail();
    s += l.slice(k, e);
    if (l[e + 1] !== "'") return [s, e + 1];
    s += "'";
    k = e + 2;
  }
}

/** A flow collection on one line: { key: value, … } and [ value, … ] with plain keys. */
class FlowReader {
  constructor(private readonly l: string, public p: number) {}

  private ws(): void {
    while (this.p < this.l.length && this.l.charCodeAt(this.p) === 32) this.p++;
  }

  value(): unknown {
    const c = this.l.charCodeAt(this.p);
    if (c === 123) return this.map();
    if (c === 91) return this.seq();
    if (c === 34 || c === 39) {
      const [v, q] = quoted(this.l, this.p);
      this.p = q;
      return v;
    }
    return yamlPlain(this.plain(false));
  }

  /** A plain scalar in a flow collection, up to , [ ] { } or ": " (a key when `key`). */
  private plain(key: boolean): string {
    const l = this.l, start = this.p;
    if (Y_INDICATOR_START.test(l.slice(start, start + 2))) FastYaml.fail();
    const c0 = l.charCodeAt(start);
    if ((c0 === 45 || c0 === 63 || c0 === 58) && ' ,[]{}'.includes(l[start + 1] ?? ' ')) FastYaml.fail(); // - ? : alone
    let p = start;
    for (; p < l.length; p++) {
      const c = l.charCodeAt(p);
      if (c === 44 || c === 91 || c === 93 || c === 123 || c === 125) break; // , [ ] { }
      if (c === 58) { // ':'
        const d = p + 1 < l.length ? l.charCodeAt(p + 1) : 32;
        if (d === 32 || d === 44 || d === 91 || d === 93 || d === 123 || d === 125) {
          if (!key) FastYaml.fail(); // an implicit key in a sequence, or "a: b: c"
          break;
        }
      }
      if (c === 35 && l.charCodeAt(p - 1) === 32) FastYaml.fail(); // a comment inside the collection
      if (c === 34 || c === 39 || c === 9) FastYaml.fail();
    }
    this.p = p;
    const s = trimSpaces(l, start, p);
    if (s === '') FastYaml.fail();
    return s;
  }

  private seq(): unknown[] {
    const arr: unknown[] = [];
    this.p++;
    this.ws();
    if (this.l.charCodeAt(this.p) === 93) { this.p++; return arr; }
    for (;;) {
      arr.push(this.value());
      this.ws();
      const c = this.l.charCodeAt(this.p++);
      if (c === 93) return arr;
      if (c !== 44) FastYaml.fail();
      this.ws();
      if (this.l.charCodeAt(this.p) === 93) FastYaml.fail(); // a trailing comma
    }
  }

  private map(): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    this.p++;
    this.ws();
    if (this.l.charCodeAt(this.p) === 125) { this.p++; return obj; }
    for (;;) {
      const key = this.plain(true);
      if (key === '__proto__' || key === '<<' || typeof yamlPlain(key) !== 'string') FastYaml.fail();
      if (this.l.charCodeAt(this.p) !== 58 || this.l.charCodeAt(this.p + 1) !== 32) FastYaml.fail();
      if (Object.prototype.hasOwnProperty.call(obj, key)) FastYaml.fail();
      this.p += 2;
      this.ws();
      obj[key] = this.value();
      this.ws();
      const c = this.l.charCodeAt(this.p++);
      if (c === 125) return obj;
      if (c !== 44) FastYaml.fail();
      this.ws();
      if (this.l.charCodeAt(this.p) === 125) FastYaml.fail();
    }
  }
}

/**
 * The documents of a YAML stream as parseAllDocuments(text, { uniqueKeys: true }) and toJS() read
 * them, or null when the text is not in the subset the fast path reads.
 */
export function fastYamlDocuments(text: string): unknown[] | null {
  if (text.includes('\t') || text.charCodeAt(0) === 0xfeff) return null;
  try {
    return new FastYaml(text).documents();
  } catch (e) {
    if (e === YAML_FALLBACK) return null;
    throw e;
  }
}
