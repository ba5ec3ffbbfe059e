// Incremental sync: a change to some Services rebuilds only their service ports' rules and
// patches the compiled matcher in place, instead of buildRules + compileMatcher over everything.
//
// The rule set is kept as kube-proxy lays it out (rules/build.ts assembleModern): a fixed head,
// one fragment per service port (its own KUBE-SVC/SVL/EXT/FW/SEP chains, and its rules in the six
// shared chains KUBE-SERVICES, KUBE-NODEPORTS, …), a fixed tail. update() rebuilds the fragments
// of the changed Services, compares them with the ones they replace, and hands the compiled rules
// (compile.ts) only what differs: a changed own chain is compiled at the end of the rule arrays
// and its range repointed; a shared chain is re-laid only when a service's part of it changed
// (a service added or removed, endpoints 0 <-> n, ports, policies), its unchanged rules copied,
// not compiled. Old ranges stay as garbage, and a full compile compacts them once they outweigh
// the live rules.
//
// The matcher: update() patches the one it owns (the same object as before, with the same
// xt_recent tables, nth counters and hit counters of every rule it kept; a changed rule's counter
// starts at 0, as after an iptables-restore of its chain). Patching runs between two batches on
// the thread that calls match(), so a packet sees the rules either before or after an update.
// full() (and compaction) compiles a new Matcher that takes over the xt_recent tables and the
// counters of unchanged chains: the caller assigns SyncResult.matcher after every call.
//
// A service port keeps its number (Rule.svc, NatDecision.serviceRef, Matcher.services) while it
// exists, so conntrack entries and metrics that hold a serviceRef stay right across updates; the
// numbers are not the positions a full buildRules gives (rules() lists them by number; the text
// it renders is the same as a full build's).
//
// The node's settings are fixed for an IncrementalProxier: when they change (the config file, the
// node's addresses), make a new one, with `previous: oldMatcher` among its options so that the
// xt_recent tables carry over.
import { performance } from 'node:perf_hooks';
import {
  BuildOptions, ModernContext, SHARED_CHAINS, ServiceFragment, assembleModern, buildRules, modernContext, modernServiceFragment,
} from '../rules/build';
import { Chain, Rule, RuleSet, ServiceRef, countRules } from '../rules/ir';
import { ClusterState, EndpointInfo, NodeSettings, ServicePortInfo } from '../model/state';
import { CompileOptions, CompiledRules } from './compile';
import { Matcher, compileMatcher } from './matcher';

export interface IncrementalOptions extends CompileOptions, Omit<BuildOptions, 'proxyVersion'> {
  /** 'legacy' rebuilds everything on every call (its layout is not split per service). Default 'modern'. */
  proxyVersion?: 'modern' | 'legacy';
  /** Compact (full compile) once garbage rules exceed this fraction of the live ones. Default 0.5. */
  garbageRatio?: number;
}

export interface SyncResult {
  /** The matcher to use from now on: after update(), the same object as before, patched. */
  matcher: Matcher;
  /** Whether everything was rebuilt (full(), 'all', a compaction, or a change that touches every service). */
  full: boolean;
  /** Service ports whose rules were rebuilt. */
  rebuiltServices: number;
  /** Time the call took. */
  ms: number;
  /**
   * DNAT destinations (addr, port) no rule targets any more since the last call: the endpoints
   * whose UDP conntrack entries kube-proxy flushes (deleteEndpointConnections).
   */
  goneTargets: { addr: number; port: number }[];
}

interface Entry {
  readonly frag: ServiceFragment;
  /** What it was built from (resync compares them). */
  readonly sp: ServicePortInfo;
  readonly eps: readonly EndpointInfo[];
}

const NO_SERVICE: ServiceRef = { name: '', protocol: '', key: '' };

export class IncrementalProxier {
  private m: Matcher | null = null;
  private state: ClusterState | null = null;
  private ctx: ModernContext | null = null;
  /** Fragments by service port key. */
  private readonly entries = new Map<string, Entry>();
  /** Service port keys by "namespace/name". */
  private readonly byService = new Map<string, string[]>();
  private readonly slots = new Map<string, number>();
  private readonly freeSlots: number[] = [];
  /** By slot (NO_SERVICE when free). */
  private readonly services: ServiceRef[] = [];
  private totalEndpoints = 0;
  /** Each shared chain's rules after the services' (the head before them is empty). */
  private tails: Rule[][] = [];
  private cached: RuleSet | null = null;
  /** How many DNAT rules target addr * 65536 + port; and the targets that dropped to none since the last result. */
  private readonly targets = new Map<number, number>();
  private readonly gone = new Set<number>();

  constructor(private readonly node: NodeSettings, private readonly opts: IncrementalOptions = {}) {}

  /** The current matcher (throws before the first full()). */
  get matcher(): Matcher {
    if (!this.m) throw new Error('IncrementalProxier: full() has not run');
    return this.m;
  }

  /** The first sync, or when everything may have changed: every fragment rebuilt, a new matcher compiled. */
  full(state: ClusterState): SyncResult {
    const t0 = performance.now();
    if (this.opts.proxyVersion === 'legacy') {
      this.state = state;
      this.m = compileMatcher(buildRules(state, this.node, this.opts), this.node, { ...this.opts, previous: this.m ?? this.opts.previous });
      return this.result(true, state.servicePorts.length, t0);
    }
    const large = this.largeCluster(countEndpoints(state));
    this.ctx = modernContext(this.node, this.opts, large);
    const seen = new Set<string>();
    this.byService.clear();
    for (const sp of state.servicePorts) {
      seen.add(sp.key);
      this.put(sp, state, this.slotOf(sp.key));
      this.index(sp.namespace + '/' + sp.name, sp.key);
    }
    for (const key of [...this.entries.keys()]) if (!seen.has(key)) this.drop(key);
    this.state = state;
    this.cached = null;
    this.recompile(null);
    return this.result(true, state.servicePorts.length, t0);
  }

  /**
   * Applies `state`, in which only the Services named in `changed` ("namespace/name") or their
   * endpoints may differ from the last state given. 'all': full().
   */
  update(state: ClusterState, changed: ReadonlySet<string> | 'all'): SyncResult {
    if (changed === 'all' || !this.m || !this.state || this.opts.proxyVersion === 'legacy') return this.full(state);
    const t0 = performance.now();
    const next = new Map<string, ServicePortInfo>();
    for (const sp of portsOf(state, changed)) next.set(sp.key, sp);
    const keys = new Set<string>();
    for (const name of changed) for (const k of this.byService.get(name) ?? []) keys.add(k);
    for (const k of next.keys()) keys.add(k);
    let total = this.totalEndpoints;
    for (const k of keys) total += (next.has(k) ? state.endpoints[k]?.length ?? 0 : 0) - (this.entries.get(k)?.eps.length ?? 0);
    // Per-endpoint comments depend on the total: crossing the threshold changes every service.
    if (this.largeCluster(total) !== this.ctx!.largeCluster || keys.size * 4 > state.servicePorts.length + 16) return this.full(state);

    const cr = this.m.compiled;
    // Bookkeeping and matcher change together: if anything throws half-way (a caller that left a
    // Service out of `changed`, an internal error), the next call rebuilds everything.
    this.state = null;
    const dirtyShared = new Set<number>();
    const chains = new Map<string, readonly Rule[]>(); // own chains to (re)set, by name
    for (const name of changed) this.byService.delete(name);
    for (const sp of next.values()) this.index(sp.namespace + '/' + sp.name, sp.key);
    for (const key of keys) {
      const old = this.entries.get(key);
      const sp = next.get(key);
      if (!sp) {
        for (const c of old!.frag.chains) chains.set(c.name, []);
        old!.frag.shared.forEach((r, i) => { if (r.length > 0) dirtyShared.add(i); });
        cr.services[this.slots.get(key)!] = { ...NO_SERVICE };
        this.drop(key);
        continue;
      }
      const slot = this.slotOf(key);
      const e = this.put(sp, state, slot);
      cr.services[slot] = { ...e.frag.ref };
      if (!old) {
        for (const c of e.frag.chains) chains.set(c.name, c.rules);
        e.frag.shared.forEach((r, i) => { if (r.length > 0) dirtyShared.add(i); });
        continue;
      }
      reconcile(old.frag, e.frag, chains, dirtyShared);
    }
    const dirty = [...dirtyShared];
    const lists = this.sharedRules(state, dirty);
    // Apply: declare new chains first (jumps resolve by id), then rules.
    const roots: number[] = [];
    for (const name of chains.keys()) if (cr.chainId('nat', name) < 0) cr.declareChain('nat', name);
    for (const [name, rules] of chains) { const ci = cr.chainId('nat', name); cr.setChainRules(ci, rules); roots.push(ci); }
    dirty.forEach((i, k) => {
      const [t, name] = SHARED_CHAINS[i];
      const ci = cr.chainId(t, name);
      cr.setChainRules(ci, lists[k]);
      roots.push(ci);
    });
    cr.checkChanged(roots);
    this.state = state;
    this.cached = null;
    const ratio = this.opts.garbageRatio ?? 0.5;
    // Compaction: rooms left behind, or index keys of services long gone, outweigh what is live.
    if (cr.garbageRules > cr.ruleCount * ratio || cr.garbagePostings > cr.ruleCount * ratio || cr.indexKeys > 2 * cr.ruleCount + 1024) {
      this.recompile(cr);
      return this.result(true, keys.size, t0);
    }
    return this.result(false, keys.size, t0);
  }

  /**
   * A periodic resync (kube-proxy's --sync-period): finds the Services whose ports or endpoints
   * differ from what the rules were built from, and updates those (nothing, when nothing changed).
   */
  resync(state: ClusterState): SyncResult {
    if (!this.m || !this.state) return this.full(state);
    const changed = new Set<string>();
    const seen = new Set<string>();
    for (const sp of state.servicePorts) {
      seen.add(sp.key);
      const e = this.entries.get(sp.key);
      if (!e || !same(e.sp, sp, 'source') || !same(e.eps, state.endpoints[sp.key] ?? [])) changed.add(sp.namespace + '/' + sp.name);
    }
    for (const [key, e] of this.entries) if (!seen.has(key)) changed.add(e.sp.namespace + '/' + e.sp.name);
    return this.update(state, changed);
  }

  /** Whether some DNAT rule now targets addr:port (what a conntrack entry's reply source says). */
  isDnatTarget(addr: number, port: number): boolean {
    if (this.opts.proxyVersion === 'legacy') throw new Error('IncrementalProxier: isDnatTarget needs the modern layout');
    return this.targets.has((addr >>> 0) * 65536 + port);
  }

  /** The rule set the matcher runs (renderIptablesSave of it equals a full build's text). */
  rules(): RuleSet {
    if (!this.state) throw new Error('IncrementalProxier: no rules: full() has not run, or the last update failed');
    if (this.opts.proxyVersion === 'legacy') return buildRules(this.state, this.node, this.opts);
    if (!this.cached) {
      const frags = this.state.servicePorts.map((sp) => this.entryOf(sp.key).frag);
      this.cached = assembleModern(this.ctx!, frags, this.services.slice());
    }
    return this.cached;
  }

  // -------------------------------------------------------------------------------------------

  private result(full: boolean, rebuiltServices: number, t0: number): SyncResult {
    const goneTargets = [...this.gone].map((k) => ({ addr: Math.floor(k / 65536) >>> 0, port: k % 65536 }));
    this.gone.clear();
    return { matcher: this.m!, full, rebuiltServices, ms: performance.now() - t0, goneTargets };
  }

  /** Counts (delta +1) or discounts (-1) the DNAT targets of a fragment's own chains. */
  private countTargets(f: ServiceFragment, delta: 1 | -1): void {
    for (const c of f.chains) {
      for (const r of c.rules) {
        const t = r.target;
        if (t?.kind !== 'DNAT') continue;
        const k = (t.addr >>> 0) * 65536 + t.port;
        const n = (this.targets.get(k) ?? 0) + delta;
        if (n > 0) { this.targets.set(k, n); if (delta > 0) this.gone.delete(k); } else { this.targets.delete(k); this.gone.add(k); }
      }
    }
  }

  private largeCluster(total: number): boolean {
    return total > (this.opts.largeClusterEndpointsThreshold ?? 1000);
  }

  /** Compiles the whole rule set into a new matcher, keeping what `prev` (the compaction's source) counted. */
  private recompile(prev: CompiledRules | null): void {
    const rs = this.rules();
    // Room for re-laid chains before the arrays grow (about 80 bytes a rule over all its arrays).
    const spareRules = 1024 + (countRules(rs) >> 3);
    const m = compileMatcher(rs, this.node, { ...this.opts, previous: this.m ?? this.opts.previous, spareRules });
    if (prev) carryCounters(prev, m.compiled);
    this.m = m;
    // The shared chains' tails: what follows the services' rules.
    this.tails = SHARED_CHAINS.map(([t, name], i) => {
      let n = 0;
      for (const sp of this.state!.servicePorts) n += this.entries.get(sp.key)!.frag.shared[i].length;
      const ci = m.compiled.chainId(t, name);
      return ci < 0 ? [] : m.compiled.chainRules[ci].slice(n);
    });
  }

  /** Shared chains `which` (SHARED_CHAINS indexes): the services' rules in the state's order, then the tail. */
  private sharedRules(state: ClusterState, which: readonly number[]): Rule[][] {
    const outs = which.map((): Rule[] => []);
    if (which.length === 0) return outs;
    for (const sp of state.servicePorts) {
      const shared = this.entryOf(sp.key).frag.shared;
      for (let j = 0; j < which.length; j++) {
        const r = shared[which[j]], out = outs[j];
        for (let k = 0; k < r.length; k++) out.push(r[k]);
      }
    }
    which.forEach((i, j) => { for (const r of this.tails[i]) outs[j].push(r); });
    return outs;
  }

  private entryOf(key: string): Entry {
    const e = this.entries.get(key);
    if (!e) throw new Error(`IncrementalProxier: service port ${key} is new but its Service was not among the changed ones`);
    return e;
  }

  private put(sp: ServicePortInfo, state: ClusterState, slot: number): Entry {
    const eps: readonly EndpointInfo[] = state.endpoints[sp.key] ?? [];
    const old = this.entries.get(sp.key);
    if (old) { this.totalEndpoints -= old.eps.length; this.countTargets(old.frag, -1); }
    const e = { frag: modernServiceFragment(this.ctx!, sp, eps, slot, old?.frag), sp, eps };
    this.countTargets(e.frag, 1);
    this.entries.set(sp.key, e);
    this.totalEndpoints += eps.length;
    this.services[slot] = e.frag.ref;
    return e;
  }

  private drop(key: string): void {
    const e = this.entries.get(key)!;
    this.totalEndpoints -= e.eps.length;
    this.countTargets(e.frag, -1);
    this.entries.delete(key);
    const slot = this.slots.get(key)!;
    this.slots.delete(key);
    this.services[slot] = NO_SERVICE;
    this.freeSlots.push(slot);
  }

  private slotOf(key: string): number {
    let s = this.slots.get(key);
    if (s === undefined) {
      s = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.services.length;
      this.slots.set(key, s);
    }
    return s;
  }

  private index(service: string, key: string): void {
    const l = this.byService.get(service);
    if (l) l.push(key); else this.byService.set(service, [key]);
  }
}

function countEndpoints(state: ClusterState): number {
  let n = 0;
  for (const sp of state.servicePorts) n += state.endpoints[sp.key]?.length ?? 0;
  return n;
}

/** The service ports of the Services named in `changed` ("namespace/name"), in the state's order. */
function portsOf(state: ClusterState, changed: ReadonlySet<string>): ServicePortInfo[] {
  const out: ServicePortInfo[] = [];
  if (changed.size <= 16) {
    const names = [...changed].map((s) => { const i = s.indexOf('/'); return [s.slice(0, i), s.slice(i + 1)]; });
    for (const sp of state.servicePorts) {
      for (const [ns, n] of names) if (sp.name === n && sp.namespace === ns) { out.push(sp); break; }
    }
  } else {
    for (const sp of state.servicePorts) if (changed.has(sp.namespace + '/' + sp.name)) out.push(sp);
  }
  return out;
}

/**
 * Compares a service port's new fragment with its old one: chains and shared parts that did not
 * change take the old objects back (so the compiled entries behind them are kept); the others are
 * listed in `chains` (name -> new rules, [] for a chain gone) and `dirtyShared`.
 */
function reconcile(old: ServiceFragment, next: ServiceFragment, chains: Map<string, readonly Rule[]>, dirtyShared: Set<number>): void {
  const oldChains = new Map<string, Chain>();
  for (const c of old.chains) oldChains.set(c.name, c);
  for (let k = 0; k < next.chains.length; k++) {
    const c = next.chains[k];
    const o = oldChains.get(c.name);
    oldChains.delete(c.name);
    if (o && sameRules(o.rules, c.rules)) next.chains[k] = o;
    else chains.set(c.name, c.rules);
  }
  for (const name of oldChains.keys()) chains.set(name, []);
  for (let i = 0; i < next.shared.length; i++) {
    if (sameRules(old.shared[i], next.shared[i])) next.shared[i] = old.shared[i];
    else dirtyShared.add(i);
  }
}

function sameRules(a: readonly Rule[], b: readonly Rule[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false;
  return true;
}

/** Structural equality of plain data (objects, arrays, strings, numbers, booleans, null), `skip` left out. */
function same(a: unknown, b: unknown, skip?: string): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false;
    return true;
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) if (k !== skip && !same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  return true;
}

/** Hit and nth counters of the rules `to` compiled again (same chain, same place, same rule) from `from`. */
function carryCounters(from: CompiledRules, to: CompiledRules): void {
  for (let ci = 0; ci < to.chainCount; ci++) {
    const fi = from.chainId(to.chainTable[ci], to.chainNames[ci]);
    if (fi < 0) continue;
    const a = from.chainRules[fi], b = to.chainRules[ci];
    if (a.length !== b.length) continue;
    const fs = from.cStart[fi], ts = to.cStart[ci];
    for (let k = 0; k < b.length; k++) {
      if (a !== b && a[k] !== b[k] && !same(a[k], b[k])) continue;
      to.hits[ts + k] = from.hits[fs + k];
      to.rNthCount[ts + k] = from.rNthCount[fs + k];
    }
  }
}
