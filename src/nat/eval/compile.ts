// The compiler of the matcher: the rule IR flattened into typed arrays (one entry per chain, per
// rule and per index slot) that matcher.ts evaluates and introspect.ts describes.
//
// Lookup cost does not grow with the number of services: chains with many rules (KUBE-SERVICES,
// KUBE-NODEPORTS, …) get an index from (chain, destination /32 or any, protocol, port) to the rules
// of that shape; the other rules of the chain stay in a "generic" list, and a packet visits the
// union of its buckets and the generic list in rule order, so first-match semantics are unchanged.
import { BUILTIN_CHAINS, Match, Rule, RuleSet, Table, TableName, hasRulePorts } from '../rules/ir';
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

const MAX_DEPTH_LIMIT = 64;

/**
 * The compiled rules. Fields are read by the evaluator (Matcher holds one, privately) and by
 * introspect.ts; nothing outside nat/eval uses them. State that changes while packets are
 * evaluated: hits, rNthCount and the xt_recent tables.
 */
export class CompiledRules {
  /** Hit counter per rule (global rule index), like iptables' packet counters for first packets. */
  readonly hits: Uint32Array;
  readonly ruleCount: number;
  readonly services: readonly { name: string; protocol: string; key: string }[];
  /** Time the compilation took. */
  readonly compileMs: number;
  /** The deepest jump nesting (the evaluator's stack depth). */
  readonly maxDepth: number;

  // Chains.
  readonly cStart: Int32Array;
  readonly cEnd: Int32Array;
  readonly cPolicyDrop: Uint8Array;
  readonly cIdxGenStart: Int32Array; // -1: not indexed
  readonly cIdxGenEnd: Int32Array;
  readonly chainTable: TableName[];
  readonly chainNames: string[];
  readonly tables: Table[];

  // Rules.
  readonly rFlags: Uint32Array;
  readonly rSrc: Uint32Array; readonly rSrcMask: Uint32Array;
  readonly rDst: Uint32Array; readonly rDstMask: Uint32Array;
  readonly rProto: Uint8Array;
  readonly rDportLo: Uint16Array; readonly rDportHi: Uint16Array;
  readonly rSportLo: Uint16Array; readonly rSportHi: Uint16Array;
  readonly rMarkVal: Uint32Array; readonly rMarkMask: Uint32Array;
  readonly rCtMask: Uint8Array;
  readonly rStatProb: Uint32Array;
  readonly rNthEveryM1: Uint32Array; readonly rNthCount: Uint32Array;
  readonly rRecent: Int32Array; readonly rRecentOp: Uint8Array; readonly rRecentMs: Float64Array;
  readonly rTarget: Uint8Array;
  readonly rTArg: Int32Array; // chain / DNAT addr (as int) / MARK and-mask
  readonly rTArg2: Int32Array; // DNAT port / MARK xor value / MASQUERADE random-fully
  readonly rSvc: Int32Array;
  readonly rChain: Int32Array;
  readonly recentTables: RecentTable[];

  // Index: open addressing over (chain, dst, proto<<16|port) -> postings range.
  readonly hChain: Int32Array;
  readonly hDst: Uint32Array;
  readonly hPP: Uint32Array;
  readonly hStart: Int32Array;
  readonly hEnd: Int32Array;
  readonly hMask: number;
  readonly postings: Int32Array;

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

    const tables = withDefaultJumps(rs.tables);
    this.tables = tables;
    // Chain ids, per table.
    const chainIds = new Map<TableName, Map<string, number>>();
    const chainList: Table['chains'][number][] = [];
    const chainTable: TableName[] = [];
    for (const t of tables) {
      let ids = chainIds.get(t.name);
      if (!ids) chainIds.set(t.name, (ids = new Map()));
      for (const c of t.chains) {
        if (ids.has(c.name)) throw new MatcherError(`table ${t.name}: chain ${c.name} declared twice`);
        ids.set(c.name, chainList.length);
        chainList.push(c);
        chainTable.push(t.name);
      }
    }
    const C = chainList.length;
    let R = 0;
    for (const c of chainList) R += c.rules.length;
    this.ruleCount = R;
    this.cStart = new Int32Array(C); this.cEnd = new Int32Array(C); this.cPolicyDrop = new Uint8Array(C);
    this.cIdxGenStart = new Int32Array(C).fill(-1); this.cIdxGenEnd = new Int32Array(C).fill(-1);
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
    this.rRecent = new Int32Array(R).fill(-1); this.rRecentOp = new Uint8Array(R); this.rRecentMs = new Float64Array(R);
    this.rTarget = new Uint8Array(R); this.rTArg = new Int32Array(R); this.rTArg2 = new Int32Array(R);
    this.rSvc = new Int32Array(R).fill(-1); this.rChain = new Int32Array(R);

    const recentByName = new Map<string, number>();
    this.recentTables = [];
    const prevTables = new Map<string, RecentTable>();
    if (opts.previous) for (const t of opts.previous.recentTables) prevTables.set(t.name, t);
    const recentMax = opts.recentMaxEntries ?? 65536;

    this.chainTable = chainTable;
    this.chainNames = chainList.map((c) => c.name);
    let r = 0;
    for (let ci = 0; ci < C; ci++) {
      const c = chainList[ci];
      const ids = chainIds.get(chainTable[ci])!;
      this.cStart[ci] = r;
      this.cPolicyDrop[ci] = c.policy === 'DROP' ? 1 : 0;
      const rules = c.rules;
      for (let k = 0; k < rules.length; k++) {
        this.compileRule(r, ci, rules[k], ids, recentByName, prevTables, recentMax);
        r++;
      }
      this.cEnd[ci] = r;
    }
    this.maxDepth = this.checkLoops(C);

    // Index long chains.
    const minRules = opts.indexMinRules ?? 8;
    const groups = new Map<string, number[]>();
    const generic: number[] = [];
    const keyParts: [number, number, number][] = [];
    for (let ci = 0; ci < C; ci++) {
      if (this.cEnd[ci] - this.cStart[ci] < minRules) continue;
      this.cIdxGenStart[ci] = generic.length;
      for (let k = this.cStart[ci]; k < this.cEnd[ci]; k++) {
        const f = this.rFlags[k];
        const p = this.rProto[k];
        const indexable = (f & F_PROTO) !== 0 && (f & F_PROTO_INV) === 0 && hasRulePorts(p)
          && (f & F_DPORT) !== 0 && (f & F_DPORT_INV) === 0 && this.rDportLo[k] === this.rDportHi[k]
          && ((f & F_DST) === 0 || ((f & F_DST_INV) === 0 && this.rDstMask[k] === 0xffffffff));
        if (!indexable) { generic.push(k); continue; }
        const dst = (f & F_DST) !== 0 ? this.rDst[k] : 0;
        const pp = ((p << 16) | this.rDportLo[k]) >>> 0;
        const key = `${ci}/${dst}/${pp}`;
        let g = groups.get(key);
        if (!g) { groups.set(key, (g = [])); keyParts.push([ci, dst, pp]); }
        g.push(k);
      }
      this.cIdxGenEnd[ci] = generic.length;
    }
    let cap = 16;
    while (cap < groups.size * 2) cap <<= 1;
    this.hMask = cap - 1;
    this.hChain = new Int32Array(cap).fill(-1); this.hDst = new Uint32Array(cap); this.hPP = new Uint32Array(cap);
    this.hStart = new Int32Array(cap); this.hEnd = new Int32Array(cap);
    let total = generic.length;
    for (const g of groups.values()) total += g.length;
    this.postings = new Int32Array(total);
    this.postings.set(generic, 0);
    let at = generic.length;
    for (const [ci, dst, pp] of keyParts) {
      const g = groups.get(`${ci}/${dst}/${pp}`)!;
      let s = this.slot(ci, dst, pp);
      while (this.hChain[s] !== -1) s = (s + 1) & this.hMask;
      this.hChain[s] = ci; this.hDst[s] = dst; this.hPP[s] = pp;
      this.hStart[s] = at; this.hEnd[s] = at + g.length;
      for (const k of g) this.postings[at++] = k;
    }

    const hook = (t: TableName, c: string) => chainIds.get(t)?.get(c) ?? -1;
    this.natPre = hook('nat', 'PREROUTING'); this.natIn = hook('nat', 'INPUT'); this.natOut = hook('nat', 'OUTPUT'); this.natPost = hook('nat', 'POSTROUTING');
    this.filIn = hook('filter', 'INPUT'); this.filFwd = hook('filter', 'FORWARD'); this.filOut = hook('filter', 'OUTPUT');
    this.compileMs = performance.now() - t0;
  }

  private compileRule(
    r: number, ci: number, rule: Rule, chainIds: Map<string, number>,
    recentByName: Map<string, number>, prevTables: Map<string, RecentTable>, recentMax: number,
  ): void {
    const table = this.chainTable[ci];
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
          let idx = recentByName.get(m.name);
          if (idx === undefined) {
            idx = this.recentTables.length;
            this.recentTables.push(prevTables.get(m.name) ?? new RecentTable(m.name, recentMax));
            recentByName.set(m.name, idx);
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

  /** Rejects jump loops (the kernel refuses them too); returns the deepest jump nesting. */
  private checkLoops(C: number): number {
    const state = new Uint8Array(C); // 0 new, 1 on the DFS path, 2 done
    const depth = new Int32Array(C);
    const stC = new Int32Array(C + 1), stK = new Int32Array(C + 1);
    let max = 0;
    for (let root = 0; root < C; root++) {
      if (state[root] !== 0) continue;
      let sp = 0;
      stC[0] = root; stK[0] = this.cStart[root]; state[root] = 1;
      while (sp >= 0) {
        const c = stC[sp];
        let k = stK[sp];
        let pushed = false;
        while (k < this.cEnd[c]) {
          const tk = this.rTarget[k];
          k++;
          if (tk !== T_JUMP && tk !== T_GOTO) continue;
          const n = this.rTArg[k - 1];
          if (state[n] === 1) throw new MatcherError(`jump loop through ${this.chainName(n)}`);
          if (state[n] === 0) {
            stK[sp] = k;
            sp++;
            stC[sp] = n; stK[sp] = this.cStart[n]; state[n] = 1;
            pushed = true;
            break;
          }
        }
        if (pushed) continue;
        let d = 0;
        for (let j = this.cStart[c]; j < this.cEnd[c]; j++) {
          const tk = this.rTarget[j];
          if (tk === T_JUMP || tk === T_GOTO) d = Math.max(d, depth[this.rTArg[j]] + 1);
        }
        depth[c] = d;
        if (d > max) max = d;
        state[c] = 2;
        sp--;
      }
    }
    if (max > MAX_DEPTH_LIMIT) throw new MatcherError(`jump nesting ${max} deeper than ${MAX_DEPTH_LIMIT}`);
    return max;
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

/**
 * When a table has no builtin chains (a kube-proxy restore buffer, or buildRules with
 * includeJumpRules: false), add the jump rules kube-proxy ensures at a full sync, so the hooks
 * reach its chains.
 */
export function withDefaultJumps(tables: readonly Table[]): Table[] {
  return tables.map((t) => {
    if (t.chains.some((c) => c.builtin)) return t;
    const has = (n: string) => t.chains.some((c) => c.name === n);
    const j = (chain: string, extra: Match[] = []): Rule => ({ matches: extra, target: { kind: 'jump', chain }, svc: -1 });
    const ctNew: Match = { kind: 'conntrack', states: ['NEW'], inv: false };
    // The table's built-in chains (all of them, in their order), with these rules.
    const withBuiltins = (rules: Readonly<Record<string, Rule[]>>): Table => ({ name: t.name, chains: [
      ...BUILTIN_CHAINS[t.name].map((name) => ({ name, builtin: true, policy: 'ACCEPT' as const, rules: rules[name] ?? [] })), ...t.chains,
    ] });
    if (t.name === 'nat') {
      const svc = has('KUBE-SERVICES') ? [j('KUBE-SERVICES')] : [];
      return withBuiltins({ PREROUTING: svc, OUTPUT: svc, POSTROUTING: has('KUBE-POSTROUTING') ? [j('KUBE-POSTROUTING')] : [] });
    }
    if (t.name === 'filter') {
      const input: Rule[] = [], fwd: Rule[] = [], output: Rule[] = [];
      if (has('KUBE-FIREWALL')) { input.push(j('KUBE-FIREWALL')); output.push(j('KUBE-FIREWALL')); }
      if (has('KUBE-PROXY-FIREWALL')) { input.push(j('KUBE-PROXY-FIREWALL', [ctNew])); fwd.push(j('KUBE-PROXY-FIREWALL', [ctNew])); output.push(j('KUBE-PROXY-FIREWALL', [ctNew])); }
      if (has('KUBE-NODEPORTS')) input.push(j('KUBE-NODEPORTS'));
      if (has('KUBE-FORWARD')) fwd.push(j('KUBE-FORWARD'));
      if (has('KUBE-SERVICES')) { fwd.push(j('KUBE-SERVICES', [ctNew])); output.push(j('KUBE-SERVICES', [ctNew])); }
      if (has('KUBE-EXTERNAL-SERVICES')) { input.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); fwd.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); }
      return withBuiltins({ INPUT: input, FORWARD: fwd, OUTPUT: output });
    }
    return t;
  });
}
