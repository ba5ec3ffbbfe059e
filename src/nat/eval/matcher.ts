// The matcher: the compiled rules (compile.ts) evaluated the way netfilter evaluates the first
// packet of a connection (nat PREROUTING -> filter FORWARD -> nat POSTROUTING when routed through
// the node, nat PREROUTING -> filter INPUT -> nat INPUT when routed to it, nat OUTPUT -> filter
// OUTPUT -> nat POSTROUTING from it, and then filter INPUT as well when that goes to the node
// itself, through lo), first match wins, jumps/gotos/RETURN, `-m statistic` (random and nth, as
// xt_statistic), `-m recent` (xt_recent), MARK bits, DNAT, MASQUERADE.
//
// A Matcher from compileMatcher is immutable as far as rules go (state: hit counters, xt_recent
// tables and nth counters). Swap a new one in with one assignment (the daemon's reload does), the
// userspace equivalent of one iptables-restore transaction. The exception: an IncrementalProxier
// (incremental.ts) patches the one it owns between two calls of match(). match() allocates nothing.
import { Rule, RuleSet } from '../rules/ir';
import { RandomPool, U32Source } from '../../lib/random';
import { RecentTable } from './recent';
import {
  CT_BIT, CompileOptions, CompiledRules, MAX_DEPTH_LIMIT, F_CT, F_CT_INV, F_DPORT, F_DPORT_INV, F_DST, F_DST_INV, F_DST_LOCAL, F_DST_LOCAL_INV,
  F_MARK, F_MARK_INV, F_PROTO, F_PROTO_INV, F_RECENT, F_RECENT_INV, F_RECENT_REAP, F_SIDE_EFFECTS, F_SPORT, F_SPORT_INV,
  F_SRC, F_SRC_INV, F_SRC_LOCAL, F_SRC_LOCAL_INV, F_STAT_INV, F_STAT_NTH, F_STAT_RANDOM, R_REMOVE, R_SET, R_UPDATE,
  T_ACCEPT, T_DNAT, T_DROP, T_GOTO, T_JUMP, T_MARK, T_MASQ, T_NONE, T_REJECT, T_RETURN,
} from './compile';
import { RuleCounter, RuleDescription, describeRule, describeRules, ruleAt, ruleCounters, serviceName } from './introspect';

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

// Hook verdicts.
const V_ACCEPT = 1, V_DROP = 2, V_REJECT = 3;

export class Matcher {
  readonly services: readonly { name: string; protocol: string; key: string }[];
  readonly compileMs: number;
  /** The compiled rules (each hot-path method reads them through a local, `const cr = this.cr`). */
  private readonly cr: CompiledRules;
  private readonly rng: U32Source;

  // Evaluation stack and packet registers (reused; match() is not reentrant).
  private readonly sChain: Int32Array; private readonly sMode: Uint8Array;
  private readonly sP0: Int32Array; private readonly sE0: Int32Array;
  private readonly sP1: Int32Array; private readonly sE1: Int32Array;
  private readonly sP2: Int32Array; private readonly sE2: Int32Array;
  private pProto = 0; private pSrc = 0; private pDst = 0; private pSport = 0; private pDport = 0;
  private pMark = 0; private pCt = 0; private pNow = 0;
  private dnat = false; private dnatAddr = 0; private dnatPort = 0; private masq = false; private masqFully = false;
  private lastRule = -1;

  /** Use compileMatcher(). */
  constructor(rs: RuleSet, localAddresses: readonly number[], opts: CompileOptions) {
    const cr = new CompiledRules(rs, localAddresses, opts);
    this.cr = cr;
    this.services = cr.services; this.compileMs = cr.compileMs;
    this.rng = opts.random ?? new RandomPool();
    // Room for the deepest nesting compile.ts accepts: an incremental sync may deepen the rules.
    const D = MAX_DEPTH_LIMIT + 2;
    this.sChain = new Int32Array(D); this.sMode = new Uint8Array(D);
    this.sP0 = new Int32Array(D); this.sE0 = new Int32Array(D);
    this.sP1 = new Int32Array(D); this.sE1 = new Int32Array(D);
    this.sP2 = new Int32Array(D); this.sE2 = new Int32Array(D);
  }

  /** Hit counter per rule (global rule index), like iptables' packet counters for first packets. */
  get hits(): Uint32Array { return this.cr.hits; }
  /** Rules in chains now. */
  get ruleCount(): number { return this.cr.ruleCount; }
  /** The compiled rules, for eval/incremental.ts to patch between batches (nothing else). */
  get compiled(): CompiledRules { return this.cr; }

  private isLocal(a: number): boolean {
    if (a >>> 24 === 127) return true;
    const l = this.cr.local;
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
    const cr = this.cr;
    out.reset();
    this.pProto = proto; this.pSrc = src >>> 0; this.pDst = dst >>> 0; this.pSport = sport; this.pDport = dport;
    this.pMark = 0; this.pNow = nowMs; this.pCt = CT_BIT.NEW;
    this.dnat = false; this.masq = false; this.masqFully = false; this.lastRule = -1;
    const fromLocal = this.isLocal(this.pSrc);
    let v = this.runHook(fromLocal ? cr.natOut : cr.natPre);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    if (this.dnat) {
      const natRule = this.lastRule;
      this.pDst = this.dnatAddr;
      if (this.dnatPort !== 0) this.pDport = this.dnatPort;
      this.pCt |= CT_BIT.DNAT;
      out.action = NAT_DNAT; out.addr = this.pDst; out.port = this.pDport;
      out.ruleRef = natRule; out.serviceRef = cr.rSvc[natRule];
    }
    const toLocal = this.isLocal(this.pDst);
    this.lastRule = -1;
    v = this.runHook(fromLocal ? cr.filOut : toLocal ? cr.filIn : cr.filFwd);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    // The source NAT hook: nat INPUT for a routed packet delivered here, else nat POSTROUTING.
    this.masq = false;
    this.dnat = false;
    this.lastRule = -1;
    v = this.runHook(!fromLocal && toLocal ? cr.natIn : cr.natPost);
    if (v !== V_ACCEPT) { this.decide(out, v); return; }
    out.masquerade = this.masq;
    out.randomFully = this.masqFully;
    if (fromLocal && toLocal) {
      // Back in through lo.
      this.lastRule = -1;
      v = this.runHook(cr.filIn);
      if (v !== V_ACCEPT) { this.decide(out, v); return; }
    }
  }

  private decide(out: NatDecision, v: number): void {
    const cr = this.cr;
    out.action = v === V_DROP ? NAT_DROP : NAT_REJECT;
    out.addr = 0; out.port = 0; out.masquerade = false; out.randomFully = false;
    out.ruleRef = this.lastRule;
    out.serviceRef = this.lastRule >= 0 ? cr.rSvc[this.lastRule] : -1;
  }

  private enter(d: number, ci: number): void {
    const cr = this.cr;
    this.sChain[d] = ci;
    const gs = cr.cIdxGenStart[ci];
    if (gs < 0) {
      this.sMode[d] = 0; this.sP0[d] = cr.cStart[ci]; this.sE0[d] = cr.cEnd[ci];
      return;
    }
    this.sMode[d] = 1;
    this.sP0[d] = gs; this.sE0[d] = cr.cIdxGenEnd[ci];
    const pp = ((this.pProto << 16) | this.pDport) >>> 0;
    let s = this.find(ci, this.pDst, pp);
    if (s >= 0) { this.sP1[d] = cr.hStart[s]; this.sE1[d] = cr.hEnd[s]; } else { this.sP1[d] = 0; this.sE1[d] = 0; }
    s = this.pDst === 0 ? -1 : this.find(ci, 0, pp);
    if (s >= 0) { this.sP2[d] = cr.hStart[s]; this.sE2[d] = cr.hEnd[s]; } else { this.sP2[d] = 0; this.sE2[d] = 0; }
  }

  private find(ci: number, dst: number, pp: number): number {
    const cr = this.cr;
    let s = cr.slot(ci, dst, pp);
    const hc = cr.hChain;
    for (;;) {
      const c = hc[s];
      if (c === -1) return -1;
      if (c === ci && cr.hDst[s] === dst && cr.hPP[s] === pp) return s;
      s = (s + 1) & cr.hMask;
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
    const post = this.cr.postings;
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
    const cr = this.cr;
    if (ci < 0) return V_ACCEPT;
    const policy = cr.cPolicyDrop[ci] === 1 ? V_DROP : V_ACCEPT;
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
      cr.hits[r]++;
      switch (cr.rTarget[r]) {
        case T_NONE: break;
        case T_JUMP:
          d++;
          this.enter(d, cr.rTArg[r]);
          break;
        case T_GOTO:
          this.enter(d, cr.rTArg[r]);
          break;
        case T_RETURN:
          if (d === 0) return policy;
          d--;
          break;
        case T_ACCEPT: return V_ACCEPT;
        case T_DROP: this.lastRule = r; return V_DROP;
        case T_REJECT: this.lastRule = r; return V_REJECT;
        case T_DNAT:
          this.dnat = true; this.dnatAddr = cr.rTArg[r] >>> 0; this.dnatPort = cr.rTArg2[r]; this.lastRule = r;
          return V_ACCEPT;
        case T_MASQ:
          this.masq = true; this.masqFully = cr.rTArg2[r] === 1;
          return V_ACCEPT;
        case T_MARK:
          this.pMark = ((this.pMark & cr.rTArg[r]) ^ cr.rTArg2[r]) >>> 0;
          break;
      }
    }
  }

  private ruleMatches(r: number): boolean {
    const cr = this.cr;
    const f = cr.rFlags[r];
    if (f === 0) return true;
    if ((f & F_PROTO) !== 0 && (this.pProto === cr.rProto[r]) === ((f & F_PROTO_INV) !== 0)) return false;
    if ((f & F_DST) !== 0 && (((this.pDst & cr.rDstMask[r]) >>> 0) === cr.rDst[r]) === ((f & F_DST_INV) !== 0)) return false;
    if ((f & F_SRC) !== 0 && (((this.pSrc & cr.rSrcMask[r]) >>> 0) === cr.rSrc[r]) === ((f & F_SRC_INV) !== 0)) return false;
    if ((f & F_DPORT) !== 0 && (this.pDport >= cr.rDportLo[r] && this.pDport <= cr.rDportHi[r]) === ((f & F_DPORT_INV) !== 0)) return false;
    if ((f & F_SPORT) !== 0 && (this.pSport >= cr.rSportLo[r] && this.pSport <= cr.rSportHi[r]) === ((f & F_SPORT_INV) !== 0)) return false;
    if ((f & F_MARK) !== 0 && (((this.pMark & cr.rMarkMask[r]) >>> 0) === cr.rMarkVal[r]) === ((f & F_MARK_INV) !== 0)) return false;
    if ((f & F_DST_LOCAL) !== 0 && this.isLocal(this.pDst) === ((f & F_DST_LOCAL_INV) !== 0)) return false;
    if ((f & F_SRC_LOCAL) !== 0 && this.isLocal(this.pSrc) === ((f & F_SRC_LOCAL_INV) !== 0)) return false;
    if ((f & F_CT) !== 0 && ((cr.rCtMask[r] & this.pCt) !== 0) === ((f & F_CT_INV) !== 0)) return false;
    if ((f & F_SIDE_EFFECTS) === 0) return true;
    // Matches with side effects last (kube-proxy never puts a pure match after them).
    if ((f & F_STAT_RANDOM) !== 0) {
      const hit = ((this.rng.nextU32() & 0x7fffffff) >>> 0) < cr.rStatProb[r];
      if (hit === ((f & F_STAT_INV) !== 0)) return false;
    } else if ((f & F_STAT_NTH) !== 0) {
      const o = cr.rNthCount[r];
      const n = o === cr.rNthEveryM1[r] ? 0 : o + 1;
      cr.rNthCount[r] = n;
      if ((n === 0) === ((f & F_STAT_INV) !== 0)) return false;
    }
    if ((f & F_RECENT) !== 0) {
      const t = cr.recentTables[cr.rRecent[r]];
      const op = cr.rRecentOp[r];
      let hit: boolean;
      if (op === R_SET) {
        t.set(this.pSrc, this.pNow);
        hit = true;
      } else {
        const s = t.find(this.pSrc);
        hit = s >= 0;
        if (hit && op !== R_REMOVE) {
          const ms = cr.rRecentMs[r];
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
  // Introspection (not for the hot path; introspect.ts).

  /** The xt_recent tables, which the next compile carries over (CompileOptions.previous). */
  get recentTables(): readonly RecentTable[] { return this.cr.recentTables; }

  describeRule(ref: number): RuleDescription | null { return describeRule(this.cr, ref); }

  /** The IR rule behind a global rule index. */
  ruleAt(ref: number): Rule { return ruleAt(this.cr, ref); }

  serviceName(ref: number): string | null { return serviceName(this.cr, ref); }

  /** Rules with non-zero hit counters, for metrics and `kube-tun rules --counters`. */
  counters(): RuleCounter[] { return ruleCounters(this.cr); }

  describe(): string { return describeRules(this.cr); }
}

/** Builds the matcher for `rs` on a node (`localAddresses`: what `addrtype LOCAL` means besides 127/8). */
export function compileMatcher(rs: RuleSet, node: { readonly localAddresses: readonly number[] }, opts: CompileOptions = {}): Matcher {
  return new Matcher(rs, node.localAddresses, opts);
}
