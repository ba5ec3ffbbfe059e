// The compiled matcher: the rule IR flattened into typed arrays and evaluated the way netfilter
// evaluates the first packet of a connection (nat PREROUTING -> filter FORWARD -> nat POSTROUTING
// when routed through the node, nat PREROUTING -> filter INPUT -> nat INPUT when routed to it,
// nat OUTPUT -> filter OUTPUT -> nat POSTROUTING from it, and then filter INPUT as well when that
// goes to the node itself, through lo), first match wins, jumps/gotos/RETURN, `-m statistic`
// (random and nth, as xt_statistic), `-m recent` (xt_recent), MARK bits, DNAT, MASQUERADE.
//
// Lookup cost does not grow with the number of services: chains with many rules (KUBE-SERVICES,
// KUBE-NODEPORTS, …) get an index from (chain, destination /32 or any, protocol, port) to the rules
// of that shape; the other rules of the chain stay in a "generic" list, and a packet visits the
// union of its buckets and the generic list in rule order, so first-match semantics are unchanged.
//
// A Matcher is immutable as far as rules go (state: hit counters, xt_recent tables and nth
// counters). Swap a new one in with one assignment (MatcherHandle), the userspace equivalent of one
// iptables-restore transaction. match() allocates nothing.
import { formatIPv4 } from '../ip';
import { Match, Rule, RuleSet, Table, TableName } from '../rules/ir';
import { U32Source, RandomPool } from '../../lib/random';
import { RecentTable } from './recent';
import { renderRule } from '../rules/render';

export const NAT_NONE = 0;
export const NAT_DNAT = 1;
export const NAT_DROP = 2;
export const NAT_REJECT = 3;
export const NAT_ACTION_NAMES = ['NONE', 'DNAT', 'DROP', 'REJECT'] as const;

/** Reusable out-object of Matcher.match(). */
export class NatDecision {
  /** NAT_NONE | NAT_DNAT | NAT_DROP | NAT_REJECT */
  action = NAT_NONE;
  /** DNAT destination (u32) and port (the original port when the DNAT gave none). */
  addr = 0;
  port = 0;
  /** KUBE-POSTROUTING reached MASQUERADE: SNAT to the outgoing address. */
  masquerade = false;
  /** Whether that MASQUERADE had --random-fully. */
  randomFully = false;
  /** Global index of the rule that decided (the DNAT rule of a KUBE-SEP chain, the DROP/REJECT rule); -1 = none. */
  ruleRef = -1;
  /** Index into Matcher.services of that rule's service port; -1 = none. */
  serviceRef = -1;
  reset(): void {
    this.action = NAT_NONE; this.addr = 0; this.port = 0; this.masquerade = false; this.randomFully = false;
    this.ruleRef = -1; this.serviceRef = -1;
  }
}

export class MatcherError extends Error {
  constructor(message: string) { super(message); this.name = 'MatcherError'; }
}

export interface CompileOptions {
  /** Source of random u32 for `-m statistic --mode random` (default: a crypto-filled pool). */
  random?: U32Source;
  /** The matcher being replaced: its xt_recent tables are carried over by name (as the kernel keeps them across a restore). */
  previous?: Matcher;
  /** Chains with at least this many rules get the (dst, proto, port) index. Default 8. */
  indexMinRules?: number;
  /** Per xt_recent table capacity. Default 65536. */
  recentMaxEntries?: number;
}

export interface RuleDescription {
  table: TableName;
  chain: string;
  /** 1-based position in the chain, as `iptables -L --line-numbers` and TRACE show it. */
  ruleNum: number;
  text: string;
}

// Rule flags.
const F_SRC = 1 << 0, F_SRC_INV = 1 << 1, F_DST = 1 << 2, F_DST_INV = 1 << 3, F_PROTO = 1 << 4, F_PROTO_INV = 1 << 5;
const F_DPORT = 1 << 6, F_DPORT_INV = 1 << 7, F_SPORT = 1 << 8, F_SPORT_INV = 1 << 9, F_MARK = 1 << 10, F_MARK_INV = 1 << 11;
const F_SRC_LOCAL = 1 << 12, F_SRC_LOCAL_INV = 1 << 13, F_DST_LOCAL = 1 << 14, F_DST_LOCAL_INV = 1 << 15;
const F_CT = 1 << 16, F_CT_INV = 1 << 17, F_STAT_RANDOM = 1 << 18, F_STAT_NTH = 1 << 19, F_STAT_INV = 1 << 20;
const F_RECENT = 1 << 21, F_RECENT_INV = 1 << 22, F_RECENT_REAP = 1 << 23;
const F_SIDE_EFFECTS = F_STAT_RANDOM | F_STAT_NTH | F_RECENT;

// Targets.
const T_NONE = 0, T_JUMP = 1, T_GOTO = 2, T_RETURN = 3, T_ACCEPT = 4, T_DROP = 5, T_REJECT = 6, T_DNAT = 7, T_MASQ = 8, T_MARK = 9;
// MARK ops: mark = (mark & andMask) ^ xorValue  (covers or/xor/and/set-xmark).

const R_SET = 0, R_RCHECK = 1, R_UPDATE = 2, R_REMOVE = 3;

// ctstate bits of a NEW packet.
const CT_BIT: Readonly<Record<string, number>> = { INVALID: 1, NEW: 2, ESTABLISHED: 4, RELATED: 8, UNTRACKED: 16, SNAT: 32, DNAT: 64 };

// Hook verdicts.
const V_ACCEPT = 1, V_DROP = 2, V_REJECT = 3;

const MAX_DEPTH_LIMIT = 64;

export class Matcher {
  /** Hit counter per rule (global rule index), like iptables' packet counters for first packets. */
  readonly hits: Uint32Array;
  readonly ruleCount: number;
  readonly services: readonly { name: string; protocol: string; key: string }[];
  readonly compileMs: number;

  // Chains.
  private readonly cStart: Int32Array;
  private readonly cEnd: Int32Array;
  private readonly cPolicyDrop: Uint8Array;
  private readonly cIdxGenStart: Int32Array; // -1: not indexed
  private readonly cIdxGenEnd: Int32Array;
  private readonly chainTable: TableName[];
  private readonly chainNames: string[];
  private readonly tables: Table[];

  // Rules.
  private readonly rFlags: Uint32Array;
  private readonly rSrc: Uint32Array; private readonly rSrcMask: Uint32Array;
  private readonly rDst: Uint32Array; private readonly rDstMask: Uint32Array;
  private readonly rProto: Uint8Array;
  private readonly rDportLo: Uint16Array; private readonly rDportHi: Uint16Array;
  private readonly rSportLo: Uint16Array; private readonly rSportHi: Uint16Array;
  private readonly rMarkVal: Uint32Array; private readonly rMarkMask: Uint32Array;
  private readonly rCtMask: Uint8Array;
  private readonly rStatProb: Uint32Array;
  private readonly rNthEveryM1: Uint32Array; private readonly rNthCount: Uint32Array;
  private readonly rRecent: Int32Array; private readonly rRecentOp: Uint8Array; private readonly rRecentMs: Float64Array;
  private readonly rTarget: Uint8Array;
  private readonly rTArg: Int32Array; // chain / DNAT addr (as int) / MARK and-mask
  private readonly rTArg2: Int32Array; // DNAT port / MARK xor value / MASQUERADE random-fully
  private readonly rSvc: Int32Array;
  private readonly rChain: Int32Array;
  private readonly recentTables: RecentTable[];

  // Index: open addressing over (chain, dst, proto<<16|port) -> postings range.
  private readonly hChain: Int32Array;
  private readonly hDst: Uint32Array;
  private readonly hPP: Uint32Array;
  private readonly hStart: Int32Array;
  private readonly hEnd: Int32Array;
  private readonly hMask: number;
  private readonly postings: Int32Array;

  // Hooks (-1: absent).
  private readonly natPre: number; private readonly natIn: number; private readonly natOut: number; private readonly natPost: number;
  private readonly filIn: number; private readonly filFwd: number; private readonly filOut: number;

  private readonly local: Uint32Array;
  private readonly rng: U32Source;

  // Evaluation stack and packet registers (reused; match() is not reentrant).
  private readonly sChain: Int32Array; private readonly sMode: Uint8Array;
  private readonly sP0: Int32Array; private readonly sE0: Int32Array;
  private readonly sP1: Int32Array; private readonly sE1: Int32Array;
  private readonly sP2: Int32Array; private readonly sE2: Int32Array;
  private readonly maxDepth: number;
  private pProto = 0; private pSrc = 0; private pDst = 0; private pSport = 0; private pDport = 0;
  private pMark = 0; private pCt = 0; private pNow = 0;
  private dnat = false; private dnatAddr = 0; private dnatPort = 0; private masq = false; private masqFully = false;
  private lastRule = -1;

  /** Use compileMatcher(). */
  constructor(rs: RuleSet, localAddresses: readonly number[], opts: CompileOptions) {
    const t0 = performance.now();
    this.rng = opts.random ?? new RandomPool();
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
    const prevTables = opts.previous ? opts.previous.recentTablesByName() : new Map<string, RecentTable>();
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
    const D = this.maxDepth + 2;
    this.sChain = new Int32Array(D); this.sMode = new Uint8Array(D);
    this.sP0 = new Int32Array(D); this.sE0 = new Int32Array(D);
    this.sP1 = new Int32Array(D); this.sE1 = new Int32Array(D);
    this.sP2 = new Int32Array(D); this.sE2 = new Int32Array(D);

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
        const indexable = (f & F_PROTO) !== 0 && (f & F_PROTO_INV) === 0 && (p === 6 || p === 17 || p === 132)
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

  /** @internal */
  recentTablesByName(): Map<string, RecentTable> {
    const m = new Map<string, RecentTable>();
    for (const t of this.recentTables) m.set(t.name, t);
    return m;
  }

  /** @internal */
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

  private slot(ci: number, dst: number, pp: number): number {
    let h = Math.imul(dst ^ Math.imul(pp, 0x9e3779b1) ^ Math.imul(ci + 1, 0x85ebca77), 0xc2b2ae3d);
    h ^= h >>> 15;
    h = Math.imul(h, 0x27d4eb2f);
    h ^= h >>> 13;
    return h & this.hMask;
  }

  private isLocal(a: number): boolean {
    if (a >>> 24 === 127) return true;
    const l = this.local;
    for (let i = 0; i < l.length; i++) if (l[i] === a) return true;
    return false;
  }

  /**
   * Decides a NEW connection (called on a conntrack miss). proto: IP protocol number; addresses
   * u32; nowMs: monotonic milliseconds (xt_recent timestamps). Fills `out`; allocates nothing.
   * A packet whose source is a local address (node IPs, tunnel address, 127/8) is locally
   * generated, others are routed. The hooks, in the kernel's order, with "local" decided on the
   * destination after DNAT:
   * - routed, not local:     nat PREROUTING -> filter FORWARD -> nat POSTROUTING
   * - routed, local:         nat PREROUTING -> filter INPUT -> nat INPUT
   * - from the node:         nat OUTPUT -> filter OUTPUT -> nat POSTROUTING
   * - from the node, local:  the same, then (looped through lo) filter INPUT; nat PREROUTING and
   *   nat INPUT rules do not run for it (its NAT is already set up), it is still ctstate NEW and
   *   keeps its mark.
   */
  match(proto: number, src: number, dst: number, sport: number, dport: number, nowMs: number, out: NatDecision): void {
    out.reset();
    this.pProto = proto; this.pSrc = src >>> 0; this.pDst = dst >>> 0; this.pSport = sport; this.pDport = dport;
    this.pMark = 0; this.pNow = nowMs; this.pCt = CT_BIT.NEW;
    this.dnat = false; this.masq = false; this.masqFully = false; this.lastRule = -1;
    const fromLocal = this.isLocal(this.pSrc);
    let v = this.runHook(fromLocal ? this.natOut : this.natPre);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    if (this.dnat) {
      const natRule = this.lastRule;
      this.pDst = this.dnatAddr;
      if (this.dnatPort !== 0) this.pDport = this.dnatPort;
      this.pCt |= CT_BIT.DNAT;
      out.action = NAT_DNAT; out.addr = this.pDst; out.port = this.pDport;
      out.ruleRef = natRule; out.serviceRef = this.rSvc[natRule];
    }
    const toLocal = this.isLocal(this.pDst);
    this.lastRule = -1;
    v = this.runHook(fromLocal ? this.filOut : toLocal ? this.filIn : this.filFwd);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    // The source NAT hook: nat INPUT for a routed packet delivered here, else nat POSTROUTING.
    this.masq = false;
    this.dnat = false;
    this.lastRule = -1;
    v = this.runHook(!fromLocal && toLocal ? this.natIn : this.natPost);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    out.masquerade = this.masq;
    out.randomFully = this.masqFully;
    if (fromLocal && toLocal) {
      // Back in through lo.
      this.lastRule = -1;
      v = this.runHook(this.filIn);
      if (v !== V_ACCEPT) { this.decide(out, v); return; }
    }
  }

  private decide(out: NatDecision, v: number): void {
    out.action = v === V_DROP ? NAT_DROP : NAT_REJECT;
    out.addr = 0; out.port = 0; out.masquerade = false; out.randomFully = false;
    out.ruleRef = this.lastRule;
    out.serviceRef = this.lastRule >= 0 ? this.rSvc[this.lastRule] : -1;
  }

  private enter(d: number, ci: number): void {
    this.sChain[d] = ci;
    const gs = this.cIdxGenStart[ci];
    if (gs < 0) {
      this.sMode[d] = 0; this.sP0[d] = this.cStart[ci]; this.sE0[d] = this.cEnd[ci];
      return;
    }
    this.sMode[d] = 1;
    this.sP0[d] = gs; this.sE0[d] = this.cIdxGenEnd[ci];
    const pp = ((this.pProto << 16) | this.pDport) >>> 0;
    let s = this.find(ci, this.pDst, pp);
    if (s >= 0) { this.sP1[d] = this.hStart[s]; this.sE1[d] = this.hEnd[s]; } else { this.sP1[d] = 0; this.sE1[d] = 0; }
    s = this.pDst === 0 ? -1 : this.find(ci, 0, pp);
    if (s >= 0) { this.sP2[d] = this.hStart[s]; this.sE2[d] = this.hEnd[s]; } else { this.sP2[d] = 0; this.sE2[d] = 0; }
  }

  private find(ci: number, dst: number, pp: number): number {
    let s = this.slot(ci, dst, pp);
    const hc = this.hChain;
    for (;;) {
      const c = hc[s];
      if (c === -1) return -1;
      if (c === ci && this.hDst[s] === dst && this.hPP[s] === pp) return s;
      s = (s + 1) & this.hMask;
    }
  }

  /** Next candidate rule of frame d, or -1. */
  private next(d: number): number {
    if (this.sMode[d] === 0) {
      const p = this.sP0[d];
      if (p >= this.sE0[d]) return -1;
      this.sP0[d] = p + 1;
      return p;
    }
    const post = this.postings;
    const a = this.sP0[d] < this.sE0[d] ? post[this.sP0[d]] : 0x7fffffff;
    const b = this.sP1[d] < this.sE1[d] ? post[this.sP1[d]] : 0x7fffffff;
    const c = this.sP2[d] < this.sE2[d] ? post[this.sP2[d]] : 0x7fffffff;
    if (a <= b && a <= c) {
      if (a === 0x7fffffff) return -1;
      this.sP0[d]++;
      return a;
    }
    if (b <= c) { this.sP1[d]++; return b; }
    this.sP2[d]++;
    return c;
  }

  private runHook(ci: number): number {
    if (ci < 0) return V_ACCEPT;
    const policy = this.cPolicyDrop[ci] === 1 ? V_DROP : V_ACCEPT;
    let d = 0;
    this.enter(0, ci);
    for (;;) {
      const r = this.next(d);
      if (r < 0) {
        if (d === 0) return policy;
        d--;
        continue;
      }
      if (!this.ruleMatches(r)) continue;
      this.hits[r]++;
      switch (this.rTarget[r]) {
        case T_NONE: break;
        case T_JUMP:
          d++;
          this.enter(d, this.rTArg[r]);
          break;
        case T_GOTO:
          this.enter(d, this.rTArg[r]);
          break;
        case T_RETURN:
          if (d === 0) return policy;
          d--;
          break;
        case T_ACCEPT: return V_ACCEPT;
        case T_DROP: this.lastRule = r; return V_DROP;
        case T_REJECT: this.lastRule = r; return V_REJECT;
        case T_DNAT:
          this.dnat = true; this.dnatAddr = this.rTArg[r] >>> 0; this.dnatPort = this.rTArg2[r]; this.lastRule = r;
          return V_ACCEPT;
        case T_MASQ:
          this.masq = true; this.masqFully = this.rTArg2[r] === 1;
          return V_ACCEPT;
        case T_MARK:
          this.pMark = ((this.pMark & this.rTArg[r]) ^ this.rTArg2[r]) >>> 0;
          break;
      }
    }
  }

  private ruleMatches(r: number): boolean {
    const f = this.rFlags[r];
    if (f === 0) return true;
    if ((f & F_PROTO) !== 0 && (this.pProto === this.rProto[r]) === ((f & F_PROTO_INV) !== 0)) return false;
    if ((f & F_DST) !== 0 && (((this.pDst & this.rDstMask[r]) >>> 0) === this.rDst[r]) === ((f & F_DST_INV) !== 0)) return false;
    if ((f & F_SRC) !== 0 && (((this.pSrc & this.rSrcMask[r]) >>> 0) === this.rSrc[r]) === ((f & F_SRC_INV) !== 0)) return false;
    if ((f & F_DPORT) !== 0 && (this.pDport >= this.rDportLo[r] && this.pDport <= this.rDportHi[r]) === ((f & F_DPORT_INV) !== 0)) return false;
    if ((f & F_SPORT) !== 0 && (this.pSport >= this.rSportLo[r] && this.pSport <= this.rSportHi[r]) === ((f & F_SPORT_INV) !== 0)) return false;
    if ((f & F_MARK) !== 0 && (((this.pMark & this.rMarkMask[r]) >>> 0) === this.rMarkVal[r]) === ((f & F_MARK_INV) !== 0)) return false;
    if ((f & F_DST_LOCAL) !== 0 && this.isLocal(this.pDst) === ((f & F_DST_LOCAL_INV) !== 0)) return false;
    if ((f & F_SRC_LOCAL) !== 0 && this.isLocal(this.pSrc) === ((f & F_SRC_LOCAL_INV) !== 0)) return false;
    if ((f & F_CT) !== 0 && ((this.rCtMask[r] & this.pCt) !== 0) === ((f & F_CT_INV) !== 0)) return false;
    if ((f & F_SIDE_EFFECTS) === 0) return true;
    // Matches with side effects last (kube-proxy never puts a pure match after them).
    if ((f & F_STAT_RANDOM) !== 0) {
      const hit = ((this.rng.nextU32() & 0x7fffffff) >>> 0) < this.rStatProb[r];
      if (hit === ((f & F_STAT_INV) !== 0)) return false;
    } else if ((f & F_STAT_NTH) !== 0) {
      const o = this.rNthCount[r];
      const n = o === this.rNthEveryM1[r] ? 0 : o + 1;
      this.rNthCount[r] = n;
      if ((n === 0) === ((f & F_STAT_INV) !== 0)) return false;
    }
    if ((f & F_RECENT) !== 0) {
      const t = this.recentTables[this.rRecent[r]];
      const op = this.rRecentOp[r];
      let hit: boolean;
      if (op === R_SET) {
        t.set(this.pSrc, this.pNow);
        hit = true;
      } else {
        const s = t.find(this.pSrc);
        hit = s >= 0;
        if (hit && op !== R_REMOVE) {
          const ms = this.rRecentMs[r];
          if (ms > 0 && this.pNow - t.stampAt(s) > ms) {
            hit = false;
            if ((f & F_RECENT_REAP) !== 0) t.removeSlot(s);
          } else if (op === R_UPDATE) {
            t.touch(s, this.pNow);
          }
        } else if (hit && op === R_REMOVE) {
          t.removeSlot(s);
        }
      }
      if (hit === ((f & F_RECENT_INV) !== 0)) return false;
    }
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Introspection (not for the hot path).

  describeRule(ref: number): RuleDescription | null {
    if (ref < 0 || ref >= this.ruleCount) return null;
    const ci = this.rChain[ref];
    return { table: this.chainTable[ci], chain: this.chainNames[ci], ruleNum: ref - this.cStart[ci] + 1, text: renderRule(this.chainNames[ci], this.ruleAt(ref), { format: 'iptables-save' }) };
  }

  /** The IR rule behind a global rule index. */
  ruleAt(ref: number): Rule {
    const ci = this.rChain[ref];
    let seen = 0;
    for (const t of this.tables) {
      if (t.name !== this.chainTable[ci]) { for (const c of t.chains) seen += c.rules.length; continue; }
      for (const c of t.chains) {
        if (ref < seen + c.rules.length) return c.rules[ref - seen];
        seen += c.rules.length;
      }
    }
    throw new RangeError(`rule ${ref}`);
  }

  serviceName(ref: number): string | null {
    return ref >= 0 && ref < this.services.length ? `${this.services[ref].name}/${this.services[ref].protocol}` : null;
  }

  /** Rules with non-zero hit counters, for metrics and `kube-tun rules --counters`. */
  counters(): { table: TableName; chain: string; ruleNum: number; hits: number }[] {
    const out: { table: TableName; chain: string; ruleNum: number; hits: number }[] = [];
    for (let k = 0; k < this.ruleCount; k++) {
      if (this.hits[k] === 0) continue;
      const ci = this.rChain[k];
      out.push({ table: this.chainTable[ci], chain: this.chainNames[ci], ruleNum: k - this.cStart[ci] + 1, hits: this.hits[k] });
    }
    return out;
  }

  describe(): string {
    let indexed = 0, generic = 0;
    for (let c = 0; c < this.cStart.length; c++) if (this.cIdxGenStart[c] >= 0) { indexed++; generic += this.cIdxGenEnd[c] - this.cIdxGenStart[c]; }
    const local = Array.from(this.local, formatIPv4).join(', ');
    return `${this.ruleCount} rules in ${this.cStart.length} chains (${indexed} indexed, ${generic} unindexed rules in them, `
      + `${this.hMask + 1} index slots), ${this.services.length} service ports, ${this.recentTables.length} recent tables, `
      + `local addresses [${local}] + 127.0.0.0/8, max jump depth ${this.maxDepth}, compiled in ${this.compileMs.toFixed(1)} ms`;
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
    const builtin = (name: string, rules: Rule[]) => ({ name, builtin: true, policy: 'ACCEPT' as const, rules });
    if (t.name === 'nat') {
      const svc = has('KUBE-SERVICES') ? [j('KUBE-SERVICES')] : [];
      return { name: t.name, chains: [
        builtin('PREROUTING', svc), builtin('INPUT', []), builtin('OUTPUT', svc),
        builtin('POSTROUTING', has('KUBE-POSTROUTING') ? [j('KUBE-POSTROUTING')] : []), ...t.chains,
      ] };
    }
    if (t.name === 'filter') {
      const input: Rule[] = [], fwd: Rule[] = [], output: Rule[] = [];
      if (has('KUBE-FIREWALL')) { input.push(j('KUBE-FIREWALL')); output.push(j('KUBE-FIREWALL')); }
      if (has('KUBE-PROXY-FIREWALL')) { input.push(j('KUBE-PROXY-FIREWALL', [ctNew])); fwd.push(j('KUBE-PROXY-FIREWALL', [ctNew])); output.push(j('KUBE-PROXY-FIREWALL', [ctNew])); }
      if (has('KUBE-NODEPORTS')) input.push(j('KUBE-NODEPORTS'));
      if (has('KUBE-FORWARD')) fwd.push(j('KUBE-FORWARD'));
      if (has('KUBE-SERVICES')) { fwd.push(j('KUBE-SERVICES', [ctNew])); output.push(j('KUBE-SERVICES', [ctNew])); }
      if (has('KUBE-EXTERNAL-SERVICES')) { input.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); fwd.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); }
      return { name: t.name, chains: [builtin('INPUT', input), builtin('FORWARD', fwd), builtin('OUTPUT', output), ...t.chains] };
    }
    return t;
  });
}

/** Builds the matcher for `rs` on a node (`localAddresses`: what `addrtype LOCAL` means besides 127/8). */
export function compileMatcher(rs: RuleSet, node: { readonly localAddresses: readonly number[] }, opts: CompileOptions = {}): Matcher {
  return new Matcher(rs, node.localAddresses, opts);
}

/** Holds the live matcher; `swap` is the one assignment that replaces it (returns the old one). */
export class MatcherHandle {
  constructor(public current: Matcher) {}
  swap(next: Matcher): Matcher {
    const old = this.current;
    this.current = next;
    return old;
  }
}

