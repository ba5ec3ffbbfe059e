// buildRules: kube-proxy's syncProxyRules (pkg/proxy/iptables/proxier.go) as a pure function from
// desired state + node settings to the rule IR. `proxyVersion: 'modern'` follows the v1.31+
// proxier; 'legacy' follows the v1.10-1.15 era seen in seed 000 (trailing-colon port names,
// "%0.5f" probabilities, KUBE-MARK-MASQ in KUBE-SERVICES, one `-m mark` MASQUERADE rule,
// --set-xmark, KUBE-XLB for externalTrafficPolicy Local).
import { endpointChainName, portProtoHash } from './chain-names';
import { Cidr, cidrContains, cidrOf, parseCidr } from '../ip';
import {
  BUILTIN_CHAINS, Chain, Match, Rule, RuleSet, ServiceRef, Table, Target, kubeProxyProbability, l4Of, protoOf, rb, ruleProtoNum, statisticRandom,
} from './ir';
import { IPPROTO_TCP } from '../../netstack/proto';
import { ClusterState, EndpointInfo, NodeSettings, ServicePortInfo, servicePortNameString } from '../model/state';

export interface BuildOptions {
  /** 'modern' (default): current proxier.go. 'legacy': the seed-000 era. */
  proxyVersion?: 'modern' | 'legacy';
  /**
   * Also write the builtin chains with kube-proxy's jump rules (EnsureRule at a full sync), so the
   * result is a complete table a matcher (or `iptables-restore` into an empty namespace) can run.
   * Default true.
   */
  includeJumpRules?: boolean;
  /** Write the localhost-NodePort nfacct rule (needs the nfacct object to exist in the kernel). Default false. */
  nfacct?: boolean;
  /** kube-proxy's largeClusterEndpointsThreshold: above it, per-endpoint comments are left out. Default 1000. */
  largeClusterEndpointsThreshold?: number;
}

const LOOPBACK = parseCidr('127.0.0.0/8')!;
const J_MARK_MASQ: Target = { kind: 'jump', chain: 'KUBE-MARK-MASQ' };
const NODEPORTS_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';

/** Go's fmt "%#08x": zero-pads the digits to 8, then the 0x prefix (so 0x4000 -> "0x00004000"). */
export function goHex08(v: number): string {
  return '0x' + (v >>> 0).toString(16).padStart(8, '0');
}

interface Categorized {
  cluster: EndpointInfo[];
  local: EndpointInfo[];
  allReachable: EndpointInfo[];
  hasAny: boolean;
}

function externallyAccessible(sp: ServicePortInfo): boolean {
  return sp.nodePort !== 0 || sp.loadBalancerVIPs.length > 0 || sp.externalIPs.length > 0;
}
function usesClusterEndpoints(sp: ServicePortInfo): boolean {
  return !sp.internalPolicyLocal || externallyAccessible(sp);
}
function usesLocalEndpoints(sp: ServicePortInfo): boolean {
  return sp.internalPolicyLocal || (sp.externalPolicyLocal && externallyAccessible(sp));
}

/** proxy.CategorizeEndpoints (topology hints not modelled: topologyMode is always ""). */
export function categorizeEndpoints(eps: readonly EndpointInfo[], sp: ServicePortInfo, nodeName: string): Categorized {
  const isLocal = (e: EndpointInfo) => e.nodeName !== null && e.nodeName === nodeName;
  let cluster: EndpointInfo[] = [];
  let hasAny = false;
  if (usesClusterEndpoints(sp)) {
    cluster = eps.filter((e) => e.ready);
    if (cluster.length === 0) cluster = eps.filter((e) => e.serving && e.terminating);
    if (cluster.length > 0) hasAny = true;
  }
  if (!usesLocalEndpoints(sp)) return { cluster, local: [], allReachable: cluster, hasAny };
  let hasLocalReady = false, hasLocalST = false;
  for (const e of eps) {
    if (e.ready) { hasAny = true; if (isLocal(e)) hasLocalReady = true; }
    else if (e.serving && e.terminating) { hasAny = true; if (isLocal(e)) hasLocalST = true; }
  }
  let local: EndpointInfo[] = [];
  let useST = false;
  if (hasLocalReady) local = eps.filter((e) => isLocal(e) && e.ready);
  else if (hasLocalST) { useST = true; local = eps.filter((e) => isLocal(e) && e.serving && e.terminating); }
  if (!usesClusterEndpoints(sp)) return { cluster, local, allReachable: local, hasAny };
  if (!useST) return { cluster, local, allReachable: cluster, hasAny };
  const m = new Map<string, EndpointInfo>();
  for (const e of cluster) m.set(e.endpoint, e);
  for (const e of local) m.set(e.endpoint, e);
  const all = [...m.values()].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
  return { cluster, local, allReachable: all, hasAny };
}

/** KUBE-SEP names of one service port, each hashed once. */
function sepCache(name: string, proto: string, m = new Map<string, string>(), earlier?: ReadonlyMap<string, string>): (e: EndpointInfo) => string {
  return (e) => {
    let s = m.get(e.endpoint);
    if (s === undefined) m.set(e.endpoint, (s = earlier?.get(e.endpoint) ?? endpointChainName(name, proto, e.endpoint)));
    return s;
  };
}

/** Where rules are written: a full build's TableBuilder, or one service port's FragmentSink. */
interface ChainSink {
  /** The chain, declared on first use. */
  chain(name: string): Chain;
  rule(chain: string, r: Rule): void;
}

/** The chains every service port appends rules to (the order of ServiceFragment.shared). */
export const SHARED_CHAINS: readonly (readonly [Table['name'], string])[] = [
  ['nat', 'KUBE-SERVICES'], ['nat', 'KUBE-NODEPORTS'],
  ['filter', 'KUBE-SERVICES'], ['filter', 'KUBE-EXTERNAL-SERVICES'], ['filter', 'KUBE-NODEPORTS'], ['filter', 'KUBE-PROXY-FIREWALL'],
];
const SHARED_INDEX = new Map<string, Map<string, number>>([['nat', new Map()], ['filter', new Map()]]);
SHARED_CHAINS.forEach(([t, c], i) => SHARED_INDEX.get(t)!.set(c, i));

/** One service port's part of the rule set (modern layout). */
export interface ServiceFragment {
  readonly ref: ServiceRef;
  /** The number its rules carry (Rule.svc). */
  readonly svc: number;
  /** Its own nat chains (KUBE-SVC/SVL/EXT/FW/SEP), in the order a full build declares them. */
  readonly chains: Chain[];
  /** Its rules in SHARED_CHAINS[i], in order. */
  readonly shared: Rule[][];
  /** KUBE-SEP names by "ip:port" (sha256 each): a rebuild of the same service port reuses them. */
  readonly sepNames: Map<string, string>;
  /** portProtoHash of its name and protocol. */
  hash: string;
}

const NO_RULES: Rule[] = Object.freeze([]) as unknown as Rule[];

/** A TableBuilder look-alike that collects one service port's rules into its fragment. */
class FragmentSink implements ChainSink {
  private readonly own = new Map<string, Chain>();
  private readonly sharedIdx: Map<string, number>;
  constructor(readonly name: Table['name'], private readonly frag: ServiceFragment) {
    this.sharedIdx = SHARED_INDEX.get(name)!;
  }
  chain(name: string): Chain {
    const i = this.sharedIdx.get(name);
    if (i !== undefined) return { name, builtin: false, policy: null, rules: this.shared(i) };
    let c = this.own.get(name);
    if (!c) {
      if (this.name !== 'nat') throw new Error(`internal: a service's own chain ${name} outside the nat table`);
      c = { name, builtin: false, policy: null, rules: [] };
      this.own.set(name, c);
      this.frag.chains.push(c);
    }
    return c;
  }
  /** Most service ports have rules in one or two shared chains: the others keep NO_RULES. */
  private shared(i: number): Rule[] {
    const a = this.frag.shared[i];
    return a !== NO_RULES ? a : (this.frag.shared[i] = []);
  }
  rule(chain: string, r: Rule): void {
    const i = this.sharedIdx.get(chain);
    if (i !== undefined) { this.shared(i).push(r); return; }
    const c = this.own.get(chain);
    if (!c) throw new Error(`internal: chain ${chain} not declared in ${this.name}`);
    c.rules.push(r);
  }
}

class TableBuilder implements ChainSink {
  readonly chains: Chain[] = [];
  private readonly byName = new Map<string, Chain>();
  constructor(readonly name: Table['name']) {}
  builtin(name: string): Chain { return this.add(name, true); }
  chain(name: string): Chain { return this.add(name, false); }
  private add(name: string, builtin: boolean): Chain {
    let c = this.byName.get(name);
    if (!c) {
      c = { name, builtin, policy: builtin ? 'ACCEPT' : null, rules: [] };
      this.byName.set(name, c);
      this.chains.push(c);
    }
    return c;
  }
  rule(chain: string, r: Rule): void {
    const c = this.byName.get(chain);
    if (!c) throw new Error(`internal: chain ${chain} not declared in ${this.name}`);
    c.rules.push(r);
  }
  /** A chain built elsewhere (a fragment's), declared here; merged into one of that name if there is one. */
  adopt(c: Chain): void {
    const have = this.byName.get(c.name);
    if (have) { for (const r of c.rules) have.rules.push(r); return; }
    this.byName.set(c.name, c);
    this.chains.push(c);
  }
  table(): Table { return { name: this.name, chains: this.chains }; }
}

/** Rules of kube-proxy for `state` on the node `node`. */
export function buildRules(state: ClusterState, node: NodeSettings, opts: BuildOptions = {}): RuleSet {
  const legacy = opts.proxyVersion === 'legacy';
  return legacy ? buildLegacy(state, node, opts) : buildModern(state, node, opts);
}

function jumpRule(extra: Match[], comment: string | null, chain: string): Rule {
  const b = rb();
  for (const m of extra) b.match(m);
  if (comment) b.comment(comment);
  return b.jump(chain);
}
const CT_NEW: Match = { kind: 'conntrack', states: ['NEW'], inv: false };

function effectiveLocalhostNodePorts(node: NodeSettings): boolean {
  if (!node.localhostNodePorts) return false;
  if (node.nodePortAddresses.length === 0) return true;
  return node.nodePortAddresses.some((c) => cidrContains(c, 0x7f000001));
}

/** The addresses the "nodeports" tail rule is written for when --nodeport-addresses is set. */
function nodePortIPs(node: NodeSettings): number[] {
  const out: number[] = [];
  for (const a of [...node.localAddresses, 0x7f000001]) {
    if (node.nodePortAddresses.some((c) => cidrContains(c, a)) && !out.includes(a)) out.push(a);
  }
  return out;
}

function totalEndpointCount(state: ClusterState): number {
  let n = 0;
  for (const sp of state.servicePorts) n += state.endpoints[sp.key]?.length ?? 0;
  return n;
}

// ---------------------------------------------------------------------------------------------

function buildModern(state: ClusterState, node: NodeSettings, opts: BuildOptions): RuleSet {
  const ctx = modernContext(node, opts, totalEndpointCount(state) > (opts.largeClusterEndpointsThreshold ?? 1000));
  const services: ServiceRef[] = [];
  function* fragments(): Generator<ServiceFragment> {
    for (const sp of state.servicePorts) {
      const f = modernServiceFragment(ctx, sp, state.endpoints[sp.key] ?? [], services.length);
      services.push(f.ref);
      yield f;
    }
  }
  return assembleModern(ctx, fragments(), services);
}

/** What every service port's rules depend on besides the service port itself. */
export interface ModernContext {
  readonly node: NodeSettings;
  readonly opts: BuildOptions;
  /** More endpoints in total than largeClusterEndpointsThreshold: per-endpoint comments are left out. */
  readonly largeCluster: boolean;
  readonly localhostNP: boolean;
  readonly notLocal: Match | null;
}

export function modernContext(node: NodeSettings, opts: BuildOptions, largeCluster: boolean): ModernContext {
  const detector = node.localTrafficCIDR;
  return { node, opts, largeCluster, localhostNP: effectiveLocalhostNodePorts(node), notLocal: detector ? { kind: 'src', cidr: detector, inv: true } : null };
}

/**
 * The whole rule set from the service ports' fragments (in the state's order): the chains and
 * rules that belong to no service, each fragment's own chains after them, its rules appended to
 * SHARED_CHAINS, then the rules that close those chains. `services[f.svc]` is fragment f's ref.
 */
export function assembleModern(ctx: ModernContext, fragments: Iterable<ServiceFragment>, services: ServiceRef[]): RuleSet {
  const { node, opts, localhostNP } = ctx;
  const includeJumps = opts.includeJumpRules !== false;
  const mark = node.masqueradeMark;

  const filter = new TableBuilder('filter');
  const nat = new TableBuilder('nat');
  if (includeJumps) {
    for (const c of BUILTIN_CHAINS.filter) filter.builtin(c);
    for (const c of BUILTIN_CHAINS.nat) nat.builtin(c);
  }
  for (const c of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL']) filter.chain(c);
  if (localhostNP) filter.chain('KUBE-FIREWALL');
  for (const c of ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ']) nat.chain(c);

  if (includeJumps) {
    // iptablesJumpChains, each EnsureRule(Prepend): the last one listed ends up first.
    const jumps: [TableBuilder, string, string, string | null, Match[]][] = [
      [filter, 'KUBE-EXTERNAL-SERVICES', 'INPUT', 'kubernetes externally-visible service portals', [CT_NEW]],
      [filter, 'KUBE-EXTERNAL-SERVICES', 'FORWARD', 'kubernetes externally-visible service portals', [CT_NEW]],
      [filter, 'KUBE-NODEPORTS', 'INPUT', 'kubernetes health check service ports', []],
      [filter, 'KUBE-SERVICES', 'FORWARD', 'kubernetes service portals', [CT_NEW]],
      [filter, 'KUBE-SERVICES', 'OUTPUT', 'kubernetes service portals', [CT_NEW]],
      [filter, 'KUBE-FORWARD', 'FORWARD', 'kubernetes forwarding rules', []],
      [filter, 'KUBE-PROXY-FIREWALL', 'INPUT', 'kubernetes load balancer firewall', [CT_NEW]],
      [filter, 'KUBE-PROXY-FIREWALL', 'OUTPUT', 'kubernetes load balancer firewall', [CT_NEW]],
      [filter, 'KUBE-PROXY-FIREWALL', 'FORWARD', 'kubernetes load balancer firewall', [CT_NEW]],
      [nat, 'KUBE-SERVICES', 'OUTPUT', 'kubernetes service portals', []],
      [nat, 'KUBE-SERVICES', 'PREROUTING', 'kubernetes service portals', []],
      [nat, 'KUBE-POSTROUTING', 'POSTROUTING', 'kubernetes postrouting rules', []],
    ];
    if (localhostNP) {
      jumps.push([filter, 'KUBE-FIREWALL', 'INPUT', null, []], [filter, 'KUBE-FIREWALL', 'OUTPUT', null, []]);
    }
    const byBuiltin = new Map<string, Rule[]>();
    for (const [t, dst, src, comment, extra] of jumps) {
      const k = `${t.name}/${src}`;
      const list = byBuiltin.get(k) ?? [];
      list.unshift(jumpRule(extra, comment, dst));
      byBuiltin.set(k, list);
    }
    for (const [k, list] of byBuiltin) {
      const [tn, chain] = k.split('/');
      const t = tn === 'filter' ? filter : nat;
      for (const r of list) t.rule(chain, r);
    }
  }

  nat.rule('KUBE-POSTROUTING', rb().match({ kind: 'mark', value: mark, mask: mark, inv: true }).build({ kind: 'RETURN' }));
  nat.rule('KUBE-POSTROUTING', rb().build({ kind: 'MARK', op: 'xor', value: mark, mask: 0 }));
  nat.rule('KUBE-POSTROUTING', rb().comment('kubernetes service traffic requiring SNAT').build({ kind: 'MASQUERADE', randomFully: node.randomFully, random: false }));
  nat.rule('KUBE-MARK-MASQ', rb().build({ kind: 'MARK', op: 'or', value: mark, mask: 0 }));
  if (localhostNP) {
    filter.rule('KUBE-FIREWALL', rb().comment('block incoming localnet connections').dst(LOOPBACK).src(LOOPBACK, true)
      .match({ kind: 'conntrack', states: ['RELATED', 'ESTABLISHED', 'DNAT'], inv: true }).build({ kind: 'DROP' }));
  }
  const shared = SHARED_CHAINS.map(([t, c]) => (t === 'nat' ? nat : filter).chain(c).rules);
  for (const f of fragments) {
    for (const c of f.chains) nat.adopt(c);
    for (let i = 0; i < shared.length; i++) { const src = f.shared[i]; for (let k = 0; k < src.length; k++) shared[i].push(src[k]); }
  }

  // Tail-call to the nodeports chain.
  if (node.nodePortAddresses.length === 0) {
    const b = rb().comment(NODEPORTS_COMMENT).match({ kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: false });
    if (!localhostNP) b.dst(LOOPBACK, true);
    nat.rule('KUBE-SERVICES', b.jump('KUBE-NODEPORTS'));
  } else {
    for (const ip of nodePortIPs(node)) {
      if (ip >>> 24 === 127 && !localhostNP) continue;
      nat.rule('KUBE-SERVICES', rb().comment(NODEPORTS_COMMENT).dst(cidrOf(ip)).jump('KUBE-NODEPORTS'));
    }
  }
  if (!node.conntrackTCPBeLiberal) {
    filter.rule('KUBE-FORWARD', rb().match({ kind: 'conntrack', states: ['INVALID'], inv: false }).build({ kind: 'DROP' }));
  }
  filter.rule('KUBE-FORWARD', rb().comment('kubernetes forwarding rules').match({ kind: 'mark', value: mark, mask: mark, inv: false }).build({ kind: 'ACCEPT' }));
  filter.rule('KUBE-FORWARD', rb().comment('kubernetes forwarding conntrack rule').match({ kind: 'conntrack', states: ['RELATED', 'ESTABLISHED'], inv: false }).build({ kind: 'ACCEPT' }));

  return { tables: [filter.table(), nat.table()], services, meta: { proxyVersion: 'modern', nodeName: node.nodeName, masqueradeMark: mark } };
}

/**
 * One service port's rules (syncProxyRules' per-service loop body): its own chains and its rules in
 * the SHARED_CHAINS. `svc` is the number its rules carry (their ServiceRef's index); `earlier`, the
 * same service port's previous fragment, lends its chain names.
 */
export function modernServiceFragment(
  ctx: ModernContext, sp: ServicePortInfo, eps: readonly EndpointInfo[], svc: number, earlier?: ServiceFragment,
): ServiceFragment {
  const { node, opts, largeCluster, localhostNP, notLocal } = ctx;
  const detector = node.localTrafficCIDR;
  const proto = sp.protocol.toLowerCase();
  const name = servicePortNameString(sp);
  const sepNames = new Map<string, string>();
  const frag: ServiceFragment = { ref: { name, protocol: proto, key: sp.key }, svc, chains: [], shared: SHARED_CHAINS.map(() => NO_RULES), sepNames, hash: '' };
  const nat = new FragmentSink('nat', frag), filter = new FragmentSink('filter', frag);
  const natServices = nat.chain('KUBE-SERVICES');
  const pnum = ruleProtoNum(proto);
  const cat = categorizeEndpoints(eps, sp, node.nodeName);
  const h = earlier?.ref.name === name && earlier.ref.protocol === proto ? earlier.hash : portProtoHash(name, proto);
  const clusterChain = `KUBE-SVC-${h}`, localChain = `KUBE-SVL-${h}`, extChain = `KUBE-EXT-${h}`, fwChain = `KUBE-FW-${h}`;
  frag.hash = h;
  const sepOf = sepCache(name, proto, sepNames, earlier?.ref.name === name && earlier.ref.protocol === proto ? earlier.sepNames : undefined);
  const usesClusterChain = cat.cluster.length > 0 && usesClusterEndpoints(sp);
  const usesLocalChain = cat.local.length > 0 && usesLocalEndpoints(sp);
  let internalChain = clusterChain, hasInternal = cat.hasAny;
  if (sp.internalPolicyLocal) { internalChain = localChain; if (cat.local.length === 0) hasInternal = false; }
  let externalPolicyChain = clusterChain, hasExternal = cat.hasAny;
  if (sp.externalPolicyLocal) { externalPolicyChain = localChain; if (cat.local.length === 0) hasExternal = false; }
  const usesExtChain = cat.hasAny && externallyAccessible(sp);
  const usesFW = cat.hasAny && sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
  const lbChain = usesFW ? fwChain : extChain;
  let intTarget: 'REJECT' | 'DROP' | null = null, intComment = '';
  let extTarget: 'REJECT' | 'DROP' | null = null, extComment = '';
  if (!cat.hasAny) {
    intTarget = extTarget = 'REJECT';
    intComment = extComment = `${name} has no endpoints`;
  } else {
    if (!hasInternal) { intTarget = 'DROP'; intComment = `${name} has no local endpoints`; }
    if (!hasExternal) { extTarget = 'DROP'; extComment = `${name} has no local endpoints`; }
  }
  const verdict = (t: 'REJECT' | 'DROP') => (t === 'REJECT' ? { kind: 'REJECT' as const, rejectWith: null } : { kind: 'DROP' as const });
  const cip = cidrOf(sp.clusterIP);
  // Match objects shared by this service's rules (the IR never mutates them).
  const L4 = l4Of(pnum), P = protoOf(pnum);
  const cmtCluster: Match = { kind: 'comment', text: `${name} cluster IP` };
  const dstCip: Match = { kind: 'dst', cidr: cip, inv: false };
  const dportSvc: Match = { kind: 'dport', lo: sp.port, hi: sp.port, inv: false };

  // Capture the clusterIP.
  if (hasInternal) {
    natServices.rules.push({ matches: [cmtCluster, L4, P, dstCip, dportSvc], target: { kind: 'jump', chain: internalChain }, svc });
  } else {
    filter.rule('KUBE-SERVICES', rb().comment(intComment).l4proto(pnum).dst(cip).dport(sp.port).build(verdict(intTarget!), svc));
  }
  // Capture externalIPs.
  for (const eip of sp.externalIPs) {
    if (cat.hasAny) nat.rule('KUBE-SERVICES', rb().comment(`${name} external IP`).l4proto(pnum).dst(cidrOf(eip)).dport(sp.port).jump(extChain, svc));
    if (!hasExternal) filter.rule('KUBE-EXTERNAL-SERVICES', rb().comment(extComment).l4proto(pnum).dst(cidrOf(eip)).dport(sp.port).build(verdict(extTarget!), svc));
  }
  // Capture load-balancer ingress.
  for (const lbip of sp.loadBalancerVIPs) {
    if (cat.hasAny) nat.rule('KUBE-SERVICES', rb().comment(`${name} loadbalancer IP`).l4proto(pnum).dst(cidrOf(lbip)).dport(sp.port).jump(lbChain, svc));
    if (usesFW) {
      filter.rule('KUBE-PROXY-FIREWALL', rb().comment(`${name} traffic not accepted by ${fwChain}`).l4proto(pnum).dst(cidrOf(lbip)).dport(sp.port).build({ kind: 'DROP' }, svc));
    }
  }
  if (!hasExternal) {
    for (const lbip of sp.loadBalancerVIPs) {
      filter.rule('KUBE-EXTERNAL-SERVICES', rb().comment(extComment).l4proto(pnum).dst(cidrOf(lbip)).dport(sp.port).build(verdict(extTarget!), svc));
    }
  }
  // Capture nodeports.
  if (sp.nodePort !== 0) {
    if (cat.hasAny) {
      if (localhostNP && opts.nfacct) {
        nat.rule('KUBE-NODEPORTS', rb().comment(name).l4proto(pnum).dst(LOOPBACK).dport(sp.nodePort)
          .match({ kind: 'nfacct', name: 'localhost_nps_accepted_pkts' }).jump(extChain, svc));
      }
      nat.rule('KUBE-NODEPORTS', rb().comment(name).l4proto(pnum).dport(sp.nodePort).jump(extChain, svc));
    }
    if (!hasExternal) {
      filter.rule('KUBE-EXTERNAL-SERVICES', rb().comment(extComment)
        .match({ kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: false })
        .l4proto(pnum).dport(sp.nodePort).build(verdict(extTarget!), svc));
    }
  }
  // Capture healthCheckNodePorts.
  if (sp.healthCheckNodePort !== 0) {
    filter.rule('KUBE-NODEPORTS', rb().comment(`${name} health check node port`).l4proto(IPPROTO_TCP).dport(sp.healthCheckNodePort).build({ kind: 'ACCEPT' }, svc));
  }

  // Internal traffic handling.
  if (hasInternal) {
    const ic = nat.chain(internalChain);
    if (node.masqueradeAll) {
      ic.rules.push({ matches: [cmtCluster, L4, P, dstCip, dportSvc], target: J_MARK_MASQ, svc });
    } else if (notLocal) {
      ic.rules.push({ matches: [cmtCluster, L4, P, dstCip, dportSvc, notLocal], target: J_MARK_MASQ, svc });
    }
  }
  // External traffic handling.
  if (usesExtChain) {
    nat.chain(extChain);
    if (!sp.externalPolicyLocal) {
      nat.rule(extChain, rb().comment(`masquerade traffic for ${name} external destinations`).jump('KUBE-MARK-MASQ', svc));
    } else {
      if (detector) nat.rule(extChain, rb().comment(`pod traffic for ${name} external destinations`).src(detector).jump(clusterChain, svc));
      const srcLocal: Match = { kind: 'addrtype', srcType: 'LOCAL', srcInv: false, dstType: null, dstInv: false };
      nat.rule(extChain, rb().comment(`masquerade LOCAL traffic for ${name} external destinations`).match(srcLocal).jump('KUBE-MARK-MASQ', svc));
      nat.rule(extChain, rb().comment(`route LOCAL traffic for ${name} external destinations`).match(srcLocal).jump(clusterChain, svc));
    }
    if (hasExternal) nat.rule(extChain, rb().jump(externalPolicyChain, svc));
  }
  // Firewall chain.
  if (usesFW) {
    nat.chain(fwChain);
    let allowFromNode = false;
    for (const c of sp.loadBalancerSourceRanges) {
      nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).src(c).jump(extChain, svc));
      if (node.nodeIPs.length > 0 && cidrContains(c, node.nodeIPs[0])) allowFromNode = true;
    }
    if (allowFromNode) {
      for (const lbip of sp.loadBalancerVIPs) nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).src(cidrOf(lbip)).jump(extChain, svc));
    }
    nat.rule(fwChain, rb().comment(`other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`).build(null, svc));
  }
  if (usesClusterChain) { nat.chain(clusterChain); writeEndpointRules(nat, sp, name, sepOf, clusterChain, cat.cluster, largeCluster, false, svc); }
  if (usesLocalChain) { nat.chain(localChain); writeEndpointRules(nat, sp, name, sepOf, localChain, cat.local, largeCluster, false, svc); }
  const cmtName: Match = { kind: 'comment', text: name };
  for (const ep of cat.allReachable) {
    const sep = sepOf(ep);
    const sc = nat.chain(sep);
    const src: Match = { kind: 'src', cidr: cidrOf(ep.ip), inv: false };
    sc.rules.push({ matches: largeCluster ? [src] : [cmtName, src], target: J_MARK_MASQ, svc });
    const dm: Match[] = largeCluster ? [] : [cmtName];
    if (sp.sessionAffinityClientIP) dm.push({ kind: 'recent', name: sep, op: 'set', seconds: 0, reap: false, inv: false });
    dm.push(L4, P);
    sc.rules.push({ matches: dm, target: { kind: 'DNAT', addr: ep.ip, port: ep.port }, svc });
  }
  return frag;
}


const PROB_CACHE = new Map<number, Match>();
/** kube-proxy's precomputedProbabilities: one shared statistic match per (n, era). */
function probabilityMatch(n: number, legacy: boolean): Match {
  const k = legacy ? -n : n;
  let m = PROB_CACHE.get(k);
  if (!m) PROB_CACHE.set(k, (m = statisticRandom(kubeProxyProbability(n, legacy))));
  return m;
}

/** writeServiceToEndpointRules, plus kube-tun's rr scheduler as `-m statistic --mode nth`. */
function writeEndpointRules(
  nat: ChainSink, sp: ServicePortInfo, name: string, sepOf: (e: EndpointInfo) => string, chain: string,
  eps: readonly EndpointInfo[], largeCluster: boolean, legacy: boolean, svc: number,
): void {
  const epComment = (e: EndpointInfo) => (legacy ? name : `${name} -> ${e.endpoint}`);
  if (sp.sessionAffinityClientIP) {
    for (const e of eps) {
      const b = rb();
      if (!largeCluster) b.comment(epComment(e));
      b.match({ kind: 'recent', name: sepOf(e), op: 'rcheck', seconds: sp.stickyMaxAgeSeconds, reap: true, inv: false });
      nat.rule(chain, b.jump(sepOf(e), svc));
    }
  }
  const n = eps.length;
  const rules = nat.chain(chain).rules;
  const legacyComment: Match | null = legacy && !largeCluster ? { kind: 'comment', text: name } : null;
  for (let i = 0; i < n; i++) {
    const e = eps[i];
    const m: Match[] = [];
    if (!largeCluster) m.push(legacyComment ?? { kind: 'comment', text: epComment(e) });
    if (i < n - 1) {
      if (sp.scheduler === 'rr') {
        // Strict rotation per new connection, expressible in iptables: rule i sees the connections
        // rules < i did not take; every (n-i)-th of them, starting with the first, is its own.
        m.push({ kind: 'statistic', mode: 'nth', every: n - i, packet: n - i - 1, inv: false });
      } else {
        m.push(probabilityMatch(n - i, legacy));
      }
    }
    rules.push({ matches: m, target: { kind: 'jump', chain: sepOf(e) }, svc });
  }
}

// ---------------------------------------------------------------------------------------------
// Legacy (v1.10-1.15-era) layout.

function buildLegacy(state: ClusterState, node: NodeSettings, opts: BuildOptions): RuleSet {
  const includeJumps = opts.includeJumpRules !== false;
  const mark = node.masqueradeMark;
  const dropMark = (1 << 15) >>> 0;
  const largeCluster = totalEndpointCount(state) > (opts.largeClusterEndpointsThreshold ?? 1000);
  const clusterCIDR = node.localTrafficCIDR;
  const filter = new TableBuilder('filter');
  const nat = new TableBuilder('nat');
  if (includeJumps) {
    for (const c of BUILTIN_CHAINS.filter) filter.builtin(c);
    for (const c of BUILTIN_CHAINS.nat) nat.builtin(c);
  }
  for (const c of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-FIREWALL']) filter.chain(c);
  for (const c of ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-MARK-DROP']) nat.chain(c);
  if (includeJumps) {
    filter.rule('INPUT', jumpRule([], null, 'KUBE-FIREWALL'));
    filter.rule('INPUT', jumpRule([CT_NEW], 'kubernetes externally-visible service portals', 'KUBE-EXTERNAL-SERVICES'));
    filter.rule('FORWARD', jumpRule([], 'kubernetes forwarding rules', 'KUBE-FORWARD'));
    filter.rule('FORWARD', jumpRule([CT_NEW], 'kubernetes service portals', 'KUBE-SERVICES'));
    filter.rule('OUTPUT', jumpRule([], null, 'KUBE-FIREWALL'));
    filter.rule('OUTPUT', jumpRule([CT_NEW], 'kubernetes service portals', 'KUBE-SERVICES'));
    nat.rule('PREROUTING', jumpRule([], 'kubernetes service portals', 'KUBE-SERVICES'));
    nat.rule('OUTPUT', jumpRule([], 'kubernetes service portals', 'KUBE-SERVICES'));
    nat.rule('POSTROUTING', jumpRule([], 'kubernetes postrouting rules', 'KUBE-POSTROUTING'));
  }
  // kubelet's KUBE-FIREWALL drops what KUBE-MARK-DROP marked.
  filter.rule('KUBE-FIREWALL', rb().comment('kubernetes firewall for dropping marked packets').match({ kind: 'mark', value: dropMark, mask: dropMark, inv: false }).build({ kind: 'DROP' }));
  nat.rule('KUBE-POSTROUTING', rb().comment('kubernetes service traffic requiring SNAT').match({ kind: 'mark', value: mark, mask: mark, inv: false }).build({ kind: 'MASQUERADE', randomFully: false, random: false }));
  nat.rule('KUBE-MARK-MASQ', rb().build({ kind: 'MARK', op: 'setx', value: mark, mask: mark }));
  nat.rule('KUBE-MARK-DROP', rb().build({ kind: 'MARK', op: 'setx', value: dropMark, mask: dropMark }));

  const services: ServiceRef[] = [];
  for (const sp of state.servicePorts) {
    const svc = services.length;
    const proto = sp.protocol.toLowerCase();
    const pnum = ruleProtoNum(proto);
    const name = servicePortNameString(sp, true);
    services.push({ name, protocol: proto, key: sp.key });
    // Legacy kube-proxy used every ready endpoint for everything (no terminating fallback, no iTP).
    const eps = (state.endpoints[sp.key] ?? []).filter((e) => e.ready);
    const hasEndpoints = eps.length > 0;
    const h = portProtoHash(name, proto);
    const svcChain = `KUBE-SVC-${h}`, xlbChain = `KUBE-XLB-${h}`, fwChain = `KUBE-FW-${h}`;
    const sepOf = sepCache(name, proto);
    const cip = cidrOf(sp.clusterIP);
    const onlyLocal = sp.externalPolicyLocal;
    const entry = (comment: string, ip: Cidr) => rb().comment(comment).l4proto(pnum).dst(ip).dport(sp.port);
    if (hasEndpoints) {
      nat.chain(svcChain);
      if (onlyLocal) nat.chain(xlbChain);
      if (node.masqueradeAll) nat.rule('KUBE-SERVICES', entry(`${name} cluster IP`, cip).jump('KUBE-MARK-MASQ', svc));
      else if (clusterCIDR) nat.rule('KUBE-SERVICES', entry(`${name} cluster IP`, cip).src(clusterCIDR, true).jump('KUBE-MARK-MASQ', svc));
      nat.rule('KUBE-SERVICES', entry(`${name} cluster IP`, cip).jump(svcChain, svc));
    } else {
      filter.rule('KUBE-SERVICES', entry(`${name} has no endpoints`, cip).build({ kind: 'REJECT', rejectWith: null }, svc));
    }
    for (const eip of sp.externalIPs) {
      if (hasEndpoints) {
        nat.rule('KUBE-SERVICES', entry(`${name} external IP`, cidrOf(eip)).jump('KUBE-MARK-MASQ', svc));
        // (legacy also had a physdev variant for non-bridged traffic; kube-tun has no bridge)
        nat.rule('KUBE-SERVICES', entry(`${name} external IP`, cidrOf(eip)).jump(svcChain, svc));
      } else {
        filter.rule('KUBE-EXTERNAL-SERVICES', entry(`${name} has no endpoints`, cidrOf(eip)).build({ kind: 'REJECT', rejectWith: null }, svc));
      }
    }
    for (const lbip of sp.loadBalancerVIPs) {
      if (!hasEndpoints) {
        filter.rule('KUBE-EXTERNAL-SERVICES', entry(`${name} has no endpoints`, cidrOf(lbip)).build({ kind: 'REJECT', rejectWith: null }, svc));
        continue;
      }
      nat.chain(fwChain);
      nat.rule('KUBE-SERVICES', entry(`${name} loadbalancer IP`, cidrOf(lbip)).jump(fwChain, svc));
      const chosen = onlyLocal ? xlbChain : svcChain;
      if (!onlyLocal) nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).jump('KUBE-MARK-MASQ', svc));
      if (sp.loadBalancerSourceRanges.length === 0) {
        nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).jump(chosen, svc));
      } else {
        let allowFromNode = false;
        for (const c of sp.loadBalancerSourceRanges) {
          nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).src(c).jump(chosen, svc));
          if (node.nodeIPs.some((a) => cidrContains(c, a))) allowFromNode = true;
        }
        if (allowFromNode) nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).src(cidrOf(lbip)).jump(chosen, svc));
      }
      nat.rule(fwChain, rb().comment(`${name} loadbalancer IP`).jump('KUBE-MARK-DROP', svc));
    }
    if (sp.nodePort !== 0) {
      const np = () => rb().comment(name).l4proto(pnum).dport(sp.nodePort);
      if (hasEndpoints) {
        if (!onlyLocal) {
          nat.rule('KUBE-NODEPORTS', np().jump('KUBE-MARK-MASQ', svc));
          nat.rule('KUBE-NODEPORTS', np().jump(svcChain, svc));
        } else {
          nat.rule('KUBE-NODEPORTS', np().src(LOOPBACK).jump('KUBE-MARK-MASQ', svc));
          nat.rule('KUBE-NODEPORTS', np().jump(xlbChain, svc));
        }
      } else {
        filter.rule('KUBE-EXTERNAL-SERVICES', rb().comment(`${name} has no endpoints`)
          .match({ kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: false })
          .l4proto(pnum).dport(sp.nodePort).build({ kind: 'REJECT', rejectWith: null }, svc));
      }
    }
    if (!hasEndpoints) continue;
    writeEndpointRules(nat, sp, name, sepOf, svcChain, eps, largeCluster, true, svc);
    for (const ep of eps) {
      const sep = sepOf(ep);
      nat.chain(sep);
      const hair = rb();
      if (!largeCluster) hair.comment(name);
      nat.rule(sep, hair.src(cidrOf(ep.ip)).jump('KUBE-MARK-MASQ', svc));
      const d = rb();
      if (!largeCluster) d.comment(name);
      if (sp.sessionAffinityClientIP) d.match({ kind: 'recent', name: sep, op: 'set', seconds: 0, reap: false, inv: false });
      nat.rule(sep, d.l4proto(pnum).build({ kind: 'DNAT', addr: ep.ip, port: ep.port }, svc));
    }
    if (onlyLocal) {
      if (clusterCIDR) {
        nat.rule(xlbChain, rb().comment('Redirect pods trying to reach external loadbalancer VIP to clusterIP').src(clusterCIDR).jump(svcChain, svc));
      }
      const local = eps.filter((e) => e.nodeName === node.nodeName);
      if (local.length === 0) {
        nat.rule(xlbChain, rb().comment(`${name} has no local endpoints`).jump('KUBE-MARK-DROP', svc));
      } else {
        if (sp.sessionAffinityClientIP) {
          for (const e of local) {
            const sep = sepOf(e);
            nat.rule(xlbChain, rb().comment(name).match({ kind: 'recent', name: sep, op: 'rcheck', seconds: sp.stickyMaxAgeSeconds, reap: true, inv: false }).jump(sep, svc));
          }
        }
        local.forEach((e, i) => {
          const b = rb().comment(`Balancing rule ${i} for ${name}`);
          if (i < local.length - 1) {
            if (sp.scheduler === 'rr') b.match({ kind: 'statistic', mode: 'nth', every: local.length - i, packet: local.length - i - 1, inv: false });
            else b.match(probabilityMatch(local.length - i, true));
          }
          nat.rule(xlbChain, b.jump(sepOf(e), svc));
        });
      }
    }
  }
  nat.rule('KUBE-SERVICES', rb().comment(NODEPORTS_COMMENT).match({ kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: false }).jump('KUBE-NODEPORTS'));
  filter.rule('KUBE-FORWARD', rb().comment('kubernetes forwarding rules').match({ kind: 'mark', value: mark, mask: mark, inv: false }).build({ kind: 'ACCEPT' }));
  if (clusterCIDR) {
    filter.rule('KUBE-FORWARD', rb().src(clusterCIDR).comment('kubernetes forwarding conntrack pod source rule').match({ kind: 'conntrack', states: ['RELATED', 'ESTABLISHED'], inv: false }).build({ kind: 'ACCEPT' }));
    filter.rule('KUBE-FORWARD', rb().comment('kubernetes forwarding conntrack pod destination rule').dst(clusterCIDR).match({ kind: 'conntrack', states: ['RELATED', 'ESTABLISHED'], inv: false }).build({ kind: 'ACCEPT' }));
  }
  return { tables: [filter.table(), nat.table()], services, meta: { proxyVersion: 'legacy', nodeName: node.nodeName, masqueradeMark: mark } };
}
