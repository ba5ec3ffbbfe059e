// The compiler of the matcher: the rule IR flattened into typed arrays (one entry per chain, per
// rule and per index slot) that matcher.ts evaluates and introspect.ts describes.
//
// Lookup cost does not grow with the number of services: chains with many rules (KUBE-SERVICES,
// KUBE-NODEPORTS, …) get an index from (chain, destination /32 or any, protocol, port) to the rules
// of that shape; the other rules of the chain stay in a "generic" list, and a packet visits the
// union of its buckets and the generic list in rule order, so first-match semantics are unchanged.
import { Rule, RuleSet, Table, TableName, hasRulePorts } from '../rules/ir';
import { withDefaultJumps } from './default-jumps';
import type { U32Source } from '../../lib/random';
import { RecentTable } from './recent';

export class MatcherError extends Error {
  constructor(message: string) { super(message); this.name = 'MatcherError'; }
}

export interface CompileOptions {
  /** Source of random u32 for `-m statistic --mode random` (default: a crypto-filled pool). */
  random?: U32Source;
  /** The matcher being replaced: its xt_recent tables are carried over by name (as the kernel keeps them across a restore). */
  previous?: { readonly recentTables: readonly RecentTable[] };
  /** Chains with at least this many rules get the (dst, proto, port) index. Default 8. */
  indexMinRules?: number;
  /** Rule and postings slots to allocate beyond the rules (room for an incremental sync before the arrays grow). Default 0. */
  spareRules?: number;
  /** Per xt_recent table capacity. Default 65536. */
  recentMaxEntries?: number;
}

// Rule flags.
export const F_SRC = 1 << 0, F_SRC_INV = 1 << 1, F_DST = 1 << 2, F_DST_INV = 1 << 3, F_PROTO = 1 << 4, F_PROTO_INV = 1 << 5;
export const F_DPORT = 1 << 6, F_DPORT_INV = 1 << 7, F_SPORT = 1 << 8, F_SPORT_INV = 1 << 9, F_MARK = 1 << 10, F_MARK_INV = 1 << 11;
export const F_SRC_LOCAL = 1 << 12, F_SRC_LOCAL_INV = 1 << 13, F_DST_LOCAL = 1 << 14, F_DST_LOCAL_INV = 1 << 15;
export const F_CT = 1 << 16, F_CT_INV = 1 << 17, F_STAT_RANDOM = 1 << 18, F_STAT_NTH = 1 << 19, F_STAT_INV = 1 << 20;
export const F_RECENT = 1 << 21, F_RECENT_INV = 1 << 22, F_RECENT_REAP = 1 << 23;
export const F_SIDE_EFFECTS = F_STAT_RANDOM | F_STAT_NTH | F_RECENT;

// Targets.
export const T_NONE = 0, T_JUMP = 1, T_GOTO = 2, T_RETURN = 3, T_ACCEPT = 4, T_DROP = 5, T_REJECT = 6, T_DNAT = 7, T_MASQ = 8, T_MARK = 9;
// MARK ops: mark = (mark & andMask) ^ xorValue  (covers or/xor/and/set-xmark).

export const R_SET = 0, R_RCHECK = 1, R_UPDATE = 2, R_REMOVE = 3;

// ctstate bits of a NEW packet.
export const CT_BIT: Readonly<Record<string, number>> = { INVALID: 1, NEW: 2, ESTABLISHED: 4, RELATED: 8, UNTRACKED: 16, SNAT: 32, DNAT: 64 };

export const MAX_DEPTH_LIMIT = 64;

/** The rule arrays, grown together (typed arrays cannot grow in place). */
const RULE_FIELDS = [
  'hits', 'rFlags', 'rSrc', 'rSrcMask', 'rDst', 'rDstMask', 'rProto', 'rDportLo', 'rDportHi', 'rSportLo', 'rSportHi',
  'rMarkVal', 'rMarkMask', 'rCtMask', 'rStatProb', 'rNthEveryM1', 'rNthCount', 'rRecent', 'rRecentOp', 'rRecentMs',
  'rTarget', 'rTArg', 'rTArg2', 'rSvc', 'rChain',
] as const;
const CHAIN_FIELDS = ['cStart', 'cEnd', 'cCap', 'cPolicyDrop', 'cIdxGenStart', 'cIdxGenEnd', 'cPostStart', 'cPostCap', 'cLabel'] as const;
type TypedArray = Uint32Array | Int32Array | Uint16Array | Uint8Array | Float64Array;

function grown<T extends TypedArray>(a: T, cap: number): T {
  const b = new (a.constructor as new (n: number) => T)(cap);
  b.set(a);
  return b;
}

/**
 * The compiled rules. Fields are read by the evaluator (Matcher holds one, privately) and by
 * introspect.ts; nothing outside nat/eval uses them. State that changes while packets are
 * evaluated: hits, rNthCount and the xt_recent tables.
 *
 * Each chain is a range [cStart, cEnd) of the rule arrays, inside the room it owns
 * [cStart, cStart + cCap). setChainRules() (incremental.ts) re-lays a chain in its room when the
 * new rules fit (the unchanged head and tail stay or move as blocks, with their counters; the rest
 * is compiled), else at the end of the arrays with some spare room, repointing its range: the old
 * room becomes garbage (`garbageRules`) until the next full compile. The index postings of a
 * chain live in a room of their own the same way. The arrays are fields, not readonly: growth
 * replaces them, and every reader goes through this object (`cr.rFlags[r]`), never a cached array.
 */
export class CompiledRules {
  /** Hit counter per rule (global rule index), like iptables' packet counters for first packets. */
  hits: Uint32Array;
  /** Rules in chains now (garbage not counted). */
  ruleCount: number;
  /** Rule slots handed out (live + garbage): global rule indexes are below this. */
  usedRules: number;
  garbageRules = 0;
  /** Indexed by rule.svc; an incremental sync keeps a service port's number while it exists. */
  readonly services: { name: string; protocol: string; key: string }[];
  /** Time the compilation took. */
  readonly compileMs: number;
  /** The deepest jump nesting seen by the last loop check (the evaluator's stack holds MAX_DEPTH_LIMIT). */
  maxDepth: number;

  // Chains.
  cStart: Int32Array;
  cEnd: Int32Array;
  cPolicyDrop: Uint8Array;
  cCap: Int32Array; // rule slots the chain owns from cStart
  cIdxGenStart: Int32Array; // -1: not indexed
  cIdxGenEnd: Int32Array;
  cPostStart: Int32Array; // the chain's postings room
  cPostCap: Int32Array;
  /**
   * A number per chain above its jump targets' (every jump goes to a lower label, so there is no
   * loop, and the deepest nesting is at most the highest label): the longest jump path below the
   * chain after a full check; checkChanged() keeps it valid by raising only new chains.
   */
  cLabel: Int32Array;
  /** Chains declared since the last loop check (no older rule can jump to them). */
  private readonly freshChains = new Set<number>();
  chainCount = 0;
  readonly chainTable: TableName[] = [];
  readonly chainNames: string[] = [];
  /** The IR rules each chain was compiled from (rule cStart[ci] + k is chainRules[ci][k]). */
  readonly chainRules: (readonly Rule[])[] = [];
  private readonly chainIds = new Map<TableName, Map<string, number>>();

  // Rules.
  rFlags: Uint32Array;
  rSrc: Uint32Array; rSrcMask: Uint32Array;
  rDst: Uint32Array; rDstMask: Uint32Array;
  rProto: Uint8Array;
  rDportLo: Uint16Array; rDportHi: Uint16Array;
  rSportLo: Uint16Array; rSportHi: Uint16Array;
  rMarkVal: Uint32Array; rMarkMask: Uint32Array;
  rCtMask: Uint8Array;
  rStatProb: Uint32Array;
  rNthEveryM1: Uint32Array; rNthCount: Uint32Array;
  rRecent: Int32Array; rRecentOp: Uint8Array; rRecentMs: Float64Array;
  rTarget: Uint8Array;
  rTArg: Int32Array; // chain / DNAT addr (as int) / MARK and-mask
  rTArg2: Int32Array; // DNAT port / MARK xor value / MASQUERADE random-fully
  rSvc: Int32Array;
  rChain: Int32Array;
  readonly recentTables: RecentTable[] = [];
  private readonly recentByName = new Map<string, number>();
  private readonly prevTables = new Map<string, RecentTable>();
  private readonly recentMax: number;
  private readonly minRules: number;

  // Index: open addressing over (chain, dst, proto<<16|port) -> postings range. A slot, once
  // taken, stays taken (an emptied key keeps an empty range) until the next full compile.
  hChain: Int32Array;
  hDst: Uint32Array;
  hPP: Uint32Array;
  hStart: Int32Array;
  hEnd: Int32Array;
  hMask: number;
  private hUsed = 0;
  /** Index keys taken, emptied ones included (those of services gone stay until a full compile). */
  get indexKeys(): number { return this.hUsed; }
  postings: Int32Array;
  private pUsed = 0;
  /** Postings in rooms given up by re-laid chains. */
  garbagePostings = 0;
  private hCount: Int32Array;
  private kSlot = new Int32Array(64);
  private loopState = new Uint8Array(0); private loopDepth = new Int32Array(0); private loopInS = new Uint8Array(0); private nSeen = 0;
  private loopStC = new Int32Array(0); private loopStK = new Int32Array(0); private loopSeen = new Int32Array(0);
  private touched = new Int32Array(64);

  // Hooks (-1: absent).
  readonly natPre: number; readonly natIn: number; readonly natOut: number; readonly natPost: number;
  readonly filIn: number; readonly filFwd: number; readonly filOut: number;

  readonly local: Uint32Array;

  /** The compiler: use compileMatcher(). */
  constructor(rs: RuleSet, localAddresses: readonly number[], opts: CompileOptions) {
    const t0 = performance.now();
    this.services = rs.services.map((s) => ({ name: s.name, protocol: s.protocol, key: s.key }));
    const local = localAddresses.filter((a) => a >>> 24 !== 127);
    this.local = Uint32Array.from(local);
    if (opts.previous) for (const t of opts.previous.recentTables) this.prevTables.set(t.name, t);
    this.recentMax = opts.recentMaxEntries ?? 65536;
    this.minRules = opts.indexMinRules ?? 8;

    const tables = withDefaultJumps(rs.tables);
    // Chain ids, per table.
    const chainList: Table['chains'][number][] = [];
    // With spare room asked for (an incremental sync's matcher), long chains get room to grow in place.
    const roomy = (opts.spareRules ?? 0) > 0;
    const capOf = (n: number) => (roomy && n >= this.minRules ? n + (n >> 3) + 8 : n);
    let R = 0, P = 0;
    for (const t of tables) {
      for (const c of t.chains) {
        chainList.push(c);
        R += capOf(c.rules.length);
        if (c.rules.length >= this.minRules) P += capOf(c.rules.length);
      }
    }
    const C = chainList.length;
    this.cStart = new Int32Array(C); this.cEnd = new Int32Array(C); this.cPolicyDrop = new Uint8Array(C);
    this.cIdxGenStart = new Int32Array(C).fill(-1); this.cIdxGenEnd = new Int32Array(C).fill(-1);
    this.cCap = new Int32Array(C); this.cPostStart = new Int32Array(C); this.cPostCap = new Int32Array(C); this.cLabel = new Int32Array(C);
    for (const t of tables) {
      for (const c of t.chains) {
        if (this.chainId(t.name, c.name) >= 0) throw new MatcherError(`table ${t.name}: chain ${c.name} declared twice`);
        this.declareChain(t.name, c.name, c.policy === 'DROP');
      }
    }
    this.ruleCount = 0;
    this.usedRules = 0;
    R += opts.spareRules ?? 0;
    this.hits = new Uint32Array(R);
    this.rFlags = new Uint32Array(R);
    this.rSrc = new Uint32Array(R); this.rSrcMask = new Uint32Array(R);
    this.rDst = new Uint32Array(R); this.rDstMask = new Uint32Array(R);
    this.rProto = new Uint8Array(R);
    this.rDportLo = new Uint16Array(R); this.rDportHi = new Uint16Array(R);
    this.rSportLo = new Uint16Array(R); this.rSportHi = new Uint16Array(R);
    this.rMarkVal = new Uint32Array(R); this.rMarkMask = new Uint32Array(R);
    this.rCtMask = new Uint8Array(R);
    this.rStatProb = new Uint32Array(R);
    this.rNthEveryM1 = new Uint32Array(R); this.rNthCount = new Uint32Array(R);
    this.rRecent = new Int32Array(R); this.rRecentOp = new Uint8Array(R); this.rRecentMs = new Float64Array(R);
    this.rTarget = new Uint8Array(R); this.rTArg = new Int32Array(R); this.rTArg2 = new Int32Array(R);
    this.rSvc = new Int32Array(R); this.rChain = new Int32Array(R);
    this.hMask = 15;
    this.hChain = new Int32Array(16).fill(-1); this.hDst = new Uint32Array(16); this.hPP = new Uint32Array(16);
    this.hStart = new Int32Array(16); this.hEnd = new Int32Array(16); this.hCount = new Int32Array(16);
    this.postings = new Int32Array(P + (opts.spareRules ?? 0));

    for (let ci = 0; ci < C; ci++) this.layChain(ci, chainList[ci].rules, undefined, 0, capOf(chainList[ci].rules.length));
    this.maxDepth = this.checkLoops();
    for (let ci = 0; ci < C; ci++) this.indexChain(ci);

    const hook = (t: TableName, c: string) => this.chainId(t, c);
    this.natPre = hook('nat', 'PREROUTING'); this.natIn = hook('nat', 'INPUT'); this.natOut = hook('nat', 'OUTPUT'); this.natPost = hook('nat', 'POSTROUTING');
    this.filIn = hook('filter', 'INPUT'); this.filFwd = hook('filter', 'FORWARD'); this.filOut = hook('filter', 'OUTPUT');
    this.compileMs = performance.now() - t0;
  }

  /** The id of chain `name` in `table`, or -1. */
  chainId(table: TableName, name: string): number {
    return this.chainIds.get(table)?.get(name) ?? -1;
  }

  /** A new, empty chain (its id is kept for good: an emptied chain stays declared). */
  declareChain(table: TableName, name: string, policyDrop = false): number {
    let ids = this.chainIds.get(table);
    if (!ids) this.chainIds.set(table, (ids = new Map()));
    const ci = this.chainCount++;
    if (ci >= this.cStart.length) for (const f of CHAIN_FIELDS) (this as any)[f] = grown(this[f], Math.max(16, ci * 2));
    ids.set(name, ci);
    this.chainTable.push(table); this.chainNames.push(name); this.chainRules.push([]);
    this.cStart[ci] = this.cEnd[ci] = this.usedRules;
    this.cCap[ci] = 0; this.cPostStart[ci] = 0; this.cPostCap[ci] = 0; this.cLabel[ci] = 0;
    this.freshChains.add(ci);
    this.cPolicyDrop[ci] = policyDrop ? 1 : 0;
    this.cIdxGenStart[ci] = this.cIdxGenEnd[ci] = -1;
    return ci;
  }

  /**
   * Replaces chain ci's rules (incremental sync). Rules that are the same objects as in the chain
   * now keep their compiled entry, hit counter and nth state; the others are compiled. The caller
   * runs checkChanged over the changed chains afterwards.
   */
  setChainRules(ci: number, rules: readonly Rule[]): void {
    this.unindexChain(ci);
    const n = rules.length, on = this.cEnd[ci] - this.cStart[ci];
    if (n <= this.cCap[ci]) {
      this.relayInPlace(ci, rules);
    } else {
      this.garbageRules += this.cCap[ci];
      this.layChain(ci, rules, this.chainRules[ci], this.cStart[ci], n + (n >> 2) + 2);
    }
    this.ruleCount += n - on;
    this.indexChain(ci);
  }

  /** Chain ci's new rules in its own room: the common head stays, the common tail moves as a block. */
  private relayInPlace(ci: number, rules: readonly Rule[]): void {
    const old = this.chainRules[ci], cs = this.cStart[ci], n = rules.length, on = old.length;
    let p = 0;
    while (p < n && p < on && rules[p] === old[p]) p++;
    let q = 0;
    while (q < n - p && q < on - p && rules[n - 1 - q] === old[on - 1 - q]) q++;
    if (q > 0 && n !== on) for (const f of RULE_FIELDS) this[f].copyWithin(cs + n - q, cs + on - q, cs + on);
    const ids = this.chainIds.get(this.chainTable[ci])!;
    for (let k = p; k < n - q; k++) this.compileRule(cs + k, ci, rules[k], ids);
    this.cEnd[ci] = cs + n;
    this.chainRules[ci] = rules;
  }

  /**
   * Compiles `rules` at the end of the arrays as chain ci, in a room of `cap` slots, copying the
   * entries of `old` rules found again.
   */
  private layChain(ci: number, rules: readonly Rule[], old?: readonly Rule[], oldStart = 0, cap = rules.length): void {
    const n = rules.length;
    this.ensureRules(this.usedRules + cap);
    const ids = this.chainIds.get(this.chainTable[ci])!;
    const at = this.usedRules;
    this.cStart[ci] = at;
    let reuse: Map<Rule, number> | null = null;
    if (old && old.length > 0) {
      // Unchanged head and tail runs are copied as blocks; the middle by identity.
      let p = 0;
      while (p < n && p < old.length && rules[p] === old[p]) p++;
      let q = 0;
      while (q < n - p && q < old.length - p && rules[n - 1 - q] === old[old.length - 1 - q]) q++;
      if (p > 0) this.copyRules(oldStart, at, p, ci);
      if (q > 0) this.copyRules(oldStart + old.length - q, at + n - q, q, ci);
      if (p + q < n && p + q < old.length) {
        reuse = new Map();
        for (let k = p; k < old.length - q; k++) reuse.set(old[k], oldStart + k);
      }
      for (let k = p; k < n - q; k++) {
        const from = reuse?.get(rules[k]);
        if (from !== undefined) this.copyRules(from, at + k, 1, ci);
        else this.compileRule(at + k, ci, rules[k], ids);
      }
    } else {
      for (let k = 0; k < n; k++) this.compileRule(at + k, ci, rules[k], ids);
    }
    this.usedRules = at + cap;
    if (!old) this.ruleCount += n;
    this.cStart[ci] = at;
    this.cEnd[ci] = at + n;
    this.cCap[ci] = cap;
    this.chainRules[ci] = rules;
  }

  private copyRules(from: number, to: number, n: number, ci: number): void {
    for (const f of RULE_FIELDS) this[f].copyWithin(to, from, from + n);
    this.rChain.fill(ci, to, to + n);
  }

  private ensureRules(n: number): void {
    const cap = this.rFlags.length;
    if (n <= cap) return;
    const next = Math.max(n, cap * 2, 64);
    for (const f of RULE_FIELDS) (this as any)[f] = grown(this[f], next);
  }

  private compileRule(r: number, ci: number, rule: Rule, chainIds: Map<string, number>): void {
    const table = this.chainTable[ci];
    // A slot may hold an earlier compile (after growth it is zero): every field is written.
    this.rSrc[r] = 0; this.rSrcMask[r] = 0; this.rDst[r] = 0; this.rDstMask[r] = 0; this.rProto[r] = 0;
    this.rDportLo[r] = 0; this.rDportHi[r] = 0; this.rSportLo[r] = 0; this.rSportHi[r] = 0;
    this.rMarkVal[r] = 0; this.rMarkMask[r] = 0; this.rCtMask[r] = 0; this.rStatProb[r] = 0;
    this.rNthEveryM1[r] = 0; this.rNthCount[r] = 0; this.rRecent[r] = -1; this.rRecentOp[r] = 0; this.rRecentMs[r] = 0;
    this.rTArg[r] = 0; this.rTArg2[r] = 0; this.hits[r] = 0;
    let f = 0;
    let seen = 0; // bit per match kind already present
    for (const m of rule.matches) {
      switch (m.kind) {
        case 'src': if (seen & 1) throw this.dup(r, ci, '-s'); seen |= 1; f |= F_SRC | (m.inv ? F_SRC_INV : 0); this.rSrc[r] = m.cidr.addr; this.rSrcMask[r] = m.cidr.mask; break;
        case 'dst': if (seen & 2) throw this.dup(r, ci, '-d'); seen |= 2; f |= F_DST | (m.inv ? F_DST_INV : 0); this.rDst[r] = m.cidr.addr; this.rDstMask[r] = m.cidr.mask; break;
        case 'proto': if (seen & 4) throw this.dup(r, ci, '-p'); seen |= 4; f |= F_PROTO | (m.inv ? F_PROTO_INV : 0); this.rProto[r] = m.proto; break;
        case 'l4': case 'comment': case 'nfacct': break;
        case 'dport': if (seen & 8) throw this.dup(r, ci, '--dport'); seen |= 8; f |= F_DPORT | (m.inv ? F_DPORT_INV : 0); this.rDportLo[r] = m.lo; this.rDportHi[r] = m.hi; break;
        case 'sport': if (seen & 16) throw this.dup(r, ci, '--sport'); seen |= 16; f |= F_SPORT | (m.inv ? F_SPORT_INV : 0); this.rSportLo[r] = m.lo; this.rSportHi[r] = m.hi; break;
        case 'mark': if (seen & 32) throw this.dup(r, ci, '-m mark'); seen |= 32; f |= F_MARK | (m.inv ? F_MARK_INV : 0); this.rMarkVal[r] = m.value; this.rMarkMask[r] = m.mask; break;
        case 'addrtype':
          if (m.srcType) { if (seen & 64) throw this.dup(r, ci, '--src-type'); seen |= 64; f |= F_SRC_LOCAL | (m.srcInv ? F_SRC_LOCAL_INV : 0); }
          if (m.dstType) { if (seen & 128) throw this.dup(r, ci, '--dst-type'); seen |= 128; f |= F_DST_LOCAL | (m.dstInv ? F_DST_LOCAL_INV : 0); }
          break;
        case 'conntrack': {
          if (seen & 256) throw this.dup(r, ci, '--ctstate'); seen |= 256;
          let mask = 0;
          for (const s of m.states) mask |= CT_BIT[s];
          f |= F_CT | (m.inv ? F_CT_INV : 0);
          this.rCtMask[r] = mask;
          break;
        }
        case 'statistic':
          if (seen & 512) throw this.dup(r, ci, '-m statistic'); seen |= 512;
          if (m.mode === 'random') { f |= F_STAT_RANDOM; this.rStatProb[r] = m.probability; }
          else {
            if (m.every < 1 || m.packet > m.every - 1) throw new MatcherError(`${this.where(r, ci)}: statistic nth needs --packet < --every`);
            f |= F_STAT_NTH; this.rNthEveryM1[r] = m.every - 1; this.rNthCount[r] = m.packet;
          }
          if (m.inv) f |= F_STAT_INV;
          break;
        case 'recent': {
          if (seen & 1024) throw this.dup(r, ci, '-m recent'); seen |= 1024;
          let idx = this.recentByName.get(m.name);
          if (idx === undefined) {
            idx = this.recentTables.length;
            this.recentTables.push(this.prevTables.get(m.name) ?? new RecentTable(m.name, this.recentMax));
            this.recentByName.set(m.name, idx);
          }
          f |= F_RECENT | (m.inv ? F_RECENT_INV : 0) | (m.reap ? F_RECENT_REAP : 0);
          this.rRecent[r] = idx;
          this.rRecentOp[r] = m.op === 'set' ? R_SET : m.op === 'rcheck' ? R_RCHECK : m.op === 'update' ? R_UPDATE : R_REMOVE;
          this.rRecentMs[r] = m.seconds * 1000;
          break;
        }
      }
    }
    this.rFlags[r] = f;
    this.rSvc[r] = rule.svc;
    this.rChain[r] = ci;
    const t = rule.target;
    if (!t) { this.rTarget[r] = T_NONE; return; }
    switch (t.kind) {
      case 'jump': case 'goto': {
        const id = chainIds.get(t.chain);
        if (id === undefined) throw new MatcherError(`${this.where(r, ci)}: -${t.kind === 'jump' ? 'j' : 'g'} ${t.chain}: no such chain in table ${table}`);
        this.rTarget[r] = t.kind === 'jump' ? T_JUMP : T_GOTO;
        this.rTArg[r] = id;
        return;
      }
      case 'RETURN': this.rTarget[r] = T_RETURN; return;
      case 'ACCEPT': this.rTarget[r] = T_ACCEPT; return;
      case 'DROP': this.rTarget[r] = T_DROP; return;
      case 'REJECT': this.rTarget[r] = T_REJECT; return;
      case 'DNAT':
        if (table !== 'nat') throw new MatcherError(`${this.where(r, ci)}: DNAT is only valid in the nat table`);
        this.rTarget[r] = T_DNAT; this.rTArg[r] = t.addr | 0; this.rTArg2[r] = t.port;
        return;
      case 'MASQUERADE':
        if (table !== 'nat') throw new MatcherError(`${this.where(r, ci)}: MASQUERADE is only valid in the nat table`);
        this.rTarget[r] = T_MASQ; this.rTArg2[r] = t.randomFully ? 1 : 0;
        return;
      case 'MARK': {
        let and: number, xor: number;
        switch (t.op) {
          case 'or': and = ~t.value; xor = t.value; break;
          case 'xor': and = 0xffffffff; xor = t.value; break;
          case 'and': and = t.value; xor = 0; break;
          default: and = ~t.mask; xor = t.value;
        }
        this.rTarget[r] = T_MARK; this.rTArg[r] = and | 0; this.rTArg2[r] = xor | 0;
        return;
      }
    }
  }

  private where(r: number, ci: number): string {
    return `${this.chainTable[ci]} ${this.chainNames[ci]} rule ${r - this.cStart[ci] + 1}`;
  }
  private dup(r: number, ci: number, k: string): MatcherError {
    return new MatcherError(`${this.where(r, ci)}: more than one ${k} match is not supported`);
  }

  /** "table/chain" of a chain id. */
  chainName(ci: number): string { return `${this.chainTable[ci]}/${this.chainNames[ci]}`; }

  /** Rejects jump loops (the kernel refuses them too); returns the deepest jump nesting; sets every label. */
  checkLoops(): number {
    const C = this.chainCount;
    const max = this.withScratch(() => this.dfs(null, null));
    this.cLabel.set(this.loopDepth.subarray(0, C));
    this.freshChains.clear();
    if (max > MAX_DEPTH_LIMIT) throw new MatcherError(`jump nesting ${max} deeper than ${MAX_DEPTH_LIMIT}`);
    return max;
  }

  /**
   * The loop check after setChainRules on `roots` (an incremental sync), in time proportional to
   * their rules: a changed chain's new label is computed from its targets' (descending only into
   * other changed chains); when an older chain would have to rise above its label, an older rule
   * jumping to it might now close a loop, so everything is checked instead.
   */
  checkChanged(roots: readonly number[]): void {
    let full = false, max = 0;
    this.withScratch(() => {
      const inS = this.loopInS;
      for (const c of roots) inS[c] = 1;
      try {
        max = this.dfs(roots, inS);
        for (const c of roots) {
          const d = this.loopDepth[c];
          if (d > this.cLabel[c] && !this.freshChains.has(c)) full = true;
          if (d > this.cLabel[c]) this.cLabel[c] = d;
        }
      } finally {
        for (const c of roots) inS[c] = 0;
      }
      return 0;
    });
    this.freshChains.clear();
    if (full || max > MAX_DEPTH_LIMIT) this.maxDepth = this.checkLoops();
    else if (max > this.maxDepth) this.maxDepth = max;
  }

  /** Runs f with the DFS scratch arrays sized, resetting the visit marks it leaves. */
  private withScratch(f: () => number): number {
    const C = this.chainCount;
    // Kept between calls (an incremental sync checks a few chains of many): only the chains a
    // call visits are reset at the end.
    if (this.loopState.length < C + 1) {
      const n = C * 2 + 2;
      this.loopState = new Uint8Array(n); this.loopDepth = new Int32Array(n); this.loopInS = new Uint8Array(n);
      this.loopStC = new Int32Array(n); this.loopStK = new Int32Array(n); this.loopSeen = new Int32Array(n);
    }
    this.nSeen = 0;
    try {
      return f();
    } finally {
      for (let i = 0; i < this.nSeen; i++) this.loopState[this.loopSeen[i]] = 0;
    }
  }

  /**
   * Depth-first over the jump graph from `roots` (null: every chain), descending only into chains
   * marked in `inS` when given (the others count with their label); throws on a loop; fills
   * loopDepth for the chains visited and returns the deepest.
   */
  private dfs(roots: readonly number[] | null, inS: Uint8Array | null): number {
    const C = this.chainCount;
    const state = this.loopState, depth = this.loopDepth, stC = this.loopStC, stK = this.loopStK, seen = this.loopSeen;
    let max = 0;
    const R = roots === null ? C : roots.length;
    for (let i = 0; i < R; i++) {
      const root = roots === null ? i : roots[i];
      if (state[root] !== 0) continue;
      let sp = 0;
      stC[0] = root; stK[0] = this.cStart[root]; state[root] = 1; seen[this.nSeen++] = root;
      while (sp >= 0) {
        const c = stC[sp];
        let k = stK[sp];
        let pushed = false;
        while (k < this.cEnd[c]) {
          const tk = this.rTarget[k];
          k++;
          if (tk !== T_JUMP && tk !== T_GOTO) continue;
          const n = this.rTArg[k - 1];
          if (inS !== null && inS[n] === 0) continue;
          if (state[n] === 1) throw new MatcherError(`jump loop through ${this.chainName(n)}`);
          if (state[n] === 0) {
            stK[sp] = k;
            sp++;
            stC[sp] = n; stK[sp] = this.cStart[n]; state[n] = 1; seen[this.nSeen++] = n;
            pushed = true;
            break;
          }
        }
        if (pushed) continue;
        let d = 0;
        for (let j = this.cStart[c]; j < this.cEnd[c]; j++) {
          const tk = this.rTarget[j];
          if (tk !== T_JUMP && tk !== T_GOTO) continue;
          const n = this.rTArg[j];
          // A changed chain ends up with max(its label, its depth) (checkChanged): count that.
          d = Math.max(d, (inS === null ? depth[n] : inS[n] === 0 ? this.cLabel[n] : Math.max(depth[n], this.cLabel[n])) + 1);
        }
        depth[c] = d;
        if (d > max) max = d;
        state[c] = 2;
        sp--;
      }
    }
    return max;
  }

  private indexable(k: number): boolean {
    const f = this.rFlags[k];
    return (f & F_PROTO) !== 0 && (f & F_PROTO_INV) === 0 && hasRulePorts(this.rProto[k])
      && (f & F_DPORT) !== 0 && (f & F_DPORT_INV) === 0 && this.rDportLo[k] === this.rDportHi[k]
      && ((f & F_DST) === 0 || ((f & F_DST_INV) === 0 && this.rDstMask[k] === 0xffffffff));
  }
  private keyDst(k: number): number { return (this.rFlags[k] & F_DST) !== 0 ? this.rDst[k] : 0; }
  private keyPP(k: number): number { return ((this.rProto[k] << 16) | this.rDportLo[k]) >>> 0; }

  /** The slot of (ci, dst, pp), or -1. */
  findSlot(ci: number, dst: number, pp: number): number {
    let s = this.slot(ci, dst, pp);
    for (;;) {
      const c = this.hChain[s];
      if (c === -1) return -1;
      if (c === ci && this.hDst[s] === dst && this.hPP[s] === pp) return s;
      s = (s + 1) & this.hMask;
    }
  }

  private insertSlot(ci: number, dst: number, pp: number): number {
    let s = this.slot(ci, dst, pp);
    for (;;) {
      const c = this.hChain[s];
      if (c === -1) break;
      if (c === ci && this.hDst[s] === dst && this.hPP[s] === pp) return s;
      s = (s + 1) & this.hMask;
    }
    this.hChain[s] = ci; this.hDst[s] = dst; this.hPP[s] = pp; this.hStart[s] = 0; this.hEnd[s] = 0; this.hCount[s] = 0;
    this.hUsed++;
    return s;
  }

  /** Room for `more` new keys at load <= 1/2 (a rehash keeps every slot's range). */
  private ensureSlots(more: number): void {
    if ((this.hUsed + more) * 2 <= this.hMask + 1) return;
    let cap = this.hMask + 1;
    while ((this.hUsed + more) * 2 > cap) cap <<= 1;
    const oc = this.hChain, od = this.hDst, op = this.hPP, os = this.hStart, oe = this.hEnd;
    this.hMask = cap - 1;
    this.hChain = new Int32Array(cap).fill(-1); this.hDst = new Uint32Array(cap); this.hPP = new Uint32Array(cap);
    this.hStart = new Int32Array(cap); this.hEnd = new Int32Array(cap); this.hCount = new Int32Array(cap);
    for (let i = 0; i < oc.length; i++) {
      if (oc[i] === -1) continue;
      let s = this.slot(oc[i], od[i], op[i]);
      while (this.hChain[s] !== -1) s = (s + 1) & this.hMask;
      this.hChain[s] = oc[i]; this.hDst[s] = od[i]; this.hPP[s] = op[i]; this.hStart[s] = os[i]; this.hEnd[s] = oe[i];
    }
  }

  /** Empties chain ci's index entries (its keys stay, with empty ranges), before its rules change. */
  private unindexChain(ci: number): void {
    if (this.cIdxGenStart[ci] < 0) return;
    for (let k = this.cStart[ci]; k < this.cEnd[ci]; k++) {
      if (!this.indexable(k)) continue;
      const s = this.findSlot(ci, this.keyDst(k), this.keyPP(k));
      if (s >= 0) { this.hStart[s] = 0; this.hEnd[s] = 0; }
    }
    this.cIdxGenStart[ci] = this.cIdxGenEnd[ci] = -1;
  }

  /**
   * Builds chain ci's index entries when it is long enough: its generic postings and one bucket
   * per (dst, proto, port), both in rule order, in the chain's postings room.
   */
  private indexChain(ci: number): void {
    const cs = this.cStart[ci], n = this.cEnd[ci] - cs;
    if (n < this.minRules) { this.cIdxGenStart[ci] = this.cIdxGenEnd[ci] = -1; return; }
    this.ensureSlots(n);
    if (this.kSlot.length < n) { this.kSlot = new Int32Array(n * 2); this.touched = new Int32Array(n * 2); }
    const kSlot = this.kSlot, touched = this.touched;
    let generic = 0, nt = 0;
    for (let i = 0; i < n; i++) {
      const k = cs + i;
      if (!this.indexable(k)) { kSlot[i] = -1; generic++; continue; }
      const s = this.insertSlot(ci, this.keyDst(k), this.keyPP(k));
      kSlot[i] = s;
      if (this.hCount[s]++ === 0) touched[nt++] = s;
    }
    if (n > this.cPostCap[ci]) {
      this.garbagePostings += this.cPostCap[ci];
      const cap = this.cPostCap[ci] === 0 ? this.cCap[ci] : n + (n >> 2) + 2;
      if (this.pUsed + cap > this.postings.length) this.postings = grown(this.postings, Math.max(this.pUsed + cap, this.postings.length * 2));
      this.cPostStart[ci] = this.pUsed; this.cPostCap[ci] = cap;
      this.pUsed += cap;
    }
    const post = this.postings;
    let g = this.cPostStart[ci];
    this.cIdxGenStart[ci] = g; this.cIdxGenEnd[ci] = g + generic;
    let at = g + generic;
    for (let t = 0; t < nt; t++) {
      const s = touched[t];
      this.hStart[s] = at; this.hEnd[s] = at;
      at += this.hCount[s];
      this.hCount[s] = 0;
    }
    for (let i = 0; i < n; i++) {
      const s = kSlot[i];
      if (s < 0) post[g++] = cs + i;
      else post[this.hEnd[s]++] = cs + i;
    }
  }

  /** The index slot where (chain, dst, proto<<16|port) is looked up first (then linear probing). */
  slot(ci: number, dst: number, pp: number): number {
    let h = Math.imul(dst ^ Math.imul(pp, 0x9e3779b1) ^ Math.imul(ci + 1, 0x85ebca77), 0xc2b2ae3d);
    h ^= h >>> 15;
    h = Math.imul(h, 0x27d4eb2f);
    h ^= h >>> 13;
    return h & this.hMask;
  }
}
