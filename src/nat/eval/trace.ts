// trace: walks the rule IR for one packet the way `iptables -j TRACE` would show it (table, chain,
// rule number, rule text, verdict), without randomness: every `-m statistic` match is followed both
// ways with its probability, so the outcome is the whole set of possible DNAT destinations with
// their probabilities, whether they are masqueraded, or DROP/REJECT, or untouched.
//
// This is a second, deliberately simple interpreter of the IR (recursive, allocating); the tests
// check the compiled Matcher against it.
import { formatIPv4 } from '../ip';
import { Match, Rule, RuleSet, Table, TableName, ruleProtoNum, statisticMatchProbability } from '../rules/ir';
import { withDefaultJumps } from './default-jumps';
import { renderRule } from '../rules/render';

export interface TracePacket {
  proto: number;
  src: number;
  dst: number;
  sport?: number;
  dport: number;
}

export interface TraceStep {
  table: TableName;
  chain: string;
  /** 1-based, as TRACE and `iptables -L --line-numbers` count; 0 for a chain's policy / implicit return. */
  ruleNum: number;
  ruleText: string;
  /** e.g. "jump KUBE-SVC-…", "DNAT 10.1.139.84:80", "MARK", "RETURN", "policy ACCEPT", "DROP". */
  verdict: string;
  /** Probability that the packet reaches this step. */
  probability: number;
  depth: number;
}

export interface TraceDestination { addr: string; port: number; probability: number; masquerade: boolean }

export type TraceOutcome = 'DNAT' | 'DROP' | 'REJECT' | 'NONE';

export interface TraceResult {
  /** The outcome (the most probable one when branches differ, e.g. eTP Local never differs per branch). */
  outcome: TraceOutcome;
  destinations: TraceDestination[];
  /** True when some DNAT (or untouched) branch is masqueraded. */
  masquerade: boolean;
  /** The whole distribution. */
  outcomes: { outcome: TraceOutcome; probability: number; addr?: string; port?: number; masquerade: boolean }[];
  steps: TraceStep[];
  notes: string[];
}

export interface TraceOptions {
  /** Stop exploring after this many branches. Default 4096. */
  maxBranches?: number;
}

interface Ctx {
  mark: number;
  dst: number;
  dport: number;
  dnat: boolean;
  dnatAddr: number;
  dnatPort: number;
  masq: boolean;
  ctDnat: boolean;
}

interface Res { kind: 'ACCEPT' | 'DROP' | 'REJECT' | 'END'; ctx: Ctx; p: number }

class Tracer {
  readonly steps: TraceStep[] = [];
  readonly notes = new Set<string>();
  private branches = 0;
  private readonly byTable = new Map<TableName, Map<string, Rule[]>>();
  private src = 0;
  private proto = 0;
  private sport = 0;

  constructor(tables: readonly Table[], private readonly local: readonly number[], private readonly maxBranches: number) {
    for (const t of tables) {
      const m = new Map<string, Rule[]>();
      for (const c of t.chains) m.set(c.name, c.rules);
      this.byTable.set(t.name, m);
    }
  }

  isLocal(a: number): boolean {
    return a >>> 24 === 127 || this.local.includes(a);
  }

  /**
   * The hooks the first packet of a connection crosses, in the kernel's order (nat before filter
   * at PREROUTING/OUTPUT, filter before nat at INPUT/POSTROUTING):
   * - routed, not for this node:  nat PREROUTING -> filter FORWARD -> nat POSTROUTING
   * - routed, for this node:      nat PREROUTING -> filter INPUT -> nat INPUT
   * - from this node, elsewhere:  nat OUTPUT -> filter OUTPUT -> nat POSTROUTING
   * - from this node, to itself:  nat OUTPUT -> filter OUTPUT -> nat POSTROUTING, then back in
   *   through lo -> filter INPUT. The nat rules of PREROUTING and INPUT do not run there: this
   *   conntrack entry's NAT is already set up (nf_nat_inet_fn: "seen it before? ... loopback"),
   *   while the packet is still ctstate NEW and keeps its mark.
   * "For this node" is decided on the destination after DNAT (the routing decision follows it).
   */
  run(pkt: TracePacket): Res[] {
    this.src = pkt.src >>> 0;
    this.proto = pkt.proto;
    this.sport = pkt.sport ?? 0;
    const fromLocal = this.isLocal(this.src);
    const ctx0: Ctx = { mark: 0, dst: pkt.dst >>> 0, dport: pkt.dport, dnat: false, dnatAddr: 0, dnatPort: 0, masq: false, ctDnat: false };
    const out: Res[] = [];
    /** Runs `next` on the accepted results of `rs`; DROP/REJECT are final. */
    const then = (rs: Res[], next: (r: Res) => void) => {
      for (const r of rs) {
        if (r.kind === 'DROP' || r.kind === 'REJECT') out.push(r);
        else next(r);
      }
    };
    const accept = (r: Res) => { out.push({ kind: 'ACCEPT', ctx: r.ctx, p: r.p }); };
    then(this.hook('nat', fromLocal ? 'OUTPUT' : 'PREROUTING', ctx0, 1), (r) => {
      let ctx = r.ctx;
      if (ctx.dnat) ctx = { ...ctx, dst: ctx.dnatAddr, dport: ctx.dnatPort || ctx.dport, ctDnat: true };
      const toLocal = this.isLocal(ctx.dst);
      if (!fromLocal) {
        then(this.hook('filter', toLocal ? 'INPUT' : 'FORWARD', ctx, r.p), (f) => {
          then(this.hook('nat', toLocal ? 'INPUT' : 'POSTROUTING', { ...f.ctx, masq: false }, f.p), accept);
        });
        return;
      }
      then(this.hook('filter', 'OUTPUT', ctx, r.p), (f) => {
        then(this.hook('nat', 'POSTROUTING', { ...f.ctx, masq: false }, f.p), (q) => {
          if (!toLocal) accept(q);
          else then(this.hook('filter', 'INPUT', q.ctx, q.p), accept);
        });
      });
    });
    return out;
  }

  /** A builtin chain: END means its policy. */
  private hook(table: TableName, chain: string, ctx: Ctx, p: number): Res[] {
    if (!this.byTable.get(table)?.has(chain)) return [{ kind: 'ACCEPT', ctx, p }];
    return this.chain(table, chain, 0, ctx, p, 0).map((r) => {
      if (r.kind !== 'END') return r;
      this.step(table, chain, 0, '', 'policy ACCEPT', r.p, 0);
      return { ...r, kind: 'ACCEPT' as const };
    });
  }

  private step(table: TableName, chain: string, ruleNum: number, ruleText: string, verdict: string, probability: number, depth: number): void {
    this.steps.push({ table, chain, ruleNum, ruleText, verdict, probability, depth });
  }

  /** Runs `chain` from rule `from`; END results continue in the caller. */
  private chain(table: TableName, chain: string, from: number, ctx: Ctx, p: number, depth: number): Res[] {
    if (++this.branches > this.maxBranches) {
      this.notes.add(`stopped after ${this.maxBranches} branches`);
      return [{ kind: 'END', ctx, p }];
    }
    if (depth > 64) throw new Error(`trace: jump nesting deeper than 64 at ${table}/${chain}`);
    const rules = this.byTable.get(table)!.get(chain);
    if (!rules) throw new Error(`trace: no chain ${chain} in ${table}`);
    for (let i = from; i < rules.length; i++) {
      const r = rules[i];
      const q = this.matchProbability(r, ctx);
      if (q === 0) continue;
      const text = renderRule(chain, r, { format: 'iptables-save' });
      const taken = p * q;
      const out = this.target(table, chain, i, r, text, ctx, taken, depth);
      if (q < 1) out.push(...this.chain(table, chain, i + 1, ctx, p * (1 - q), depth)); // the not-matched branch
      return out;
    }
    return [{ kind: 'END', ctx, p }];
  }

  private target(table: TableName, chain: string, i: number, r: Rule, text: string, ctx: Ctx, p: number, depth: number): Res[] {
    const t = r.target;
    const num = i + 1;
    if (!t) {
      this.step(table, chain, num, text, 'continue', p, depth);
      return this.chain(table, chain, i + 1, ctx, p, depth);
    }
    switch (t.kind) {
      case 'jump': {
        this.step(table, chain, num, text, `jump ${t.chain}`, p, depth);
        const out: Res[] = [];
        for (const s of this.chain(table, t.chain, 0, ctx, p, depth + 1)) {
          if (s.kind === 'END') out.push(...this.chain(table, chain, i + 1, s.ctx, s.p, depth));
          else out.push(s);
        }
        return out;
      }
      case 'goto':
        this.step(table, chain, num, text, `goto ${t.chain}`, p, depth);
        return this.chain(table, t.chain, 0, ctx, p, depth + 1);
      case 'RETURN':
        this.step(table, chain, num, text, 'RETURN', p, depth);
        return [{ kind: 'END', ctx, p }];
      case 'ACCEPT': case 'DROP': case 'REJECT':
        this.step(table, chain, num, text, t.kind, p, depth);
        return [{ kind: t.kind, ctx, p }];
      case 'DNAT': {
        const port = t.port || ctx.dport;
        this.step(table, chain, num, text, `DNAT ${formatIPv4(t.addr)}:${port}`, p, depth);
        return [{ kind: 'ACCEPT', ctx: { ...ctx, dnat: true, dnatAddr: t.addr, dnatPort: t.port }, p }];
      }
      case 'MASQUERADE':
        this.step(table, chain, num, text, `MASQUERADE${t.randomFully ? ' --random-fully' : ''}`, p, depth);
        return [{ kind: 'ACCEPT', ctx: { ...ctx, masq: true }, p }];
      case 'MARK': {
        let mark = ctx.mark;
        if (t.op === 'or') mark |= t.value;
        else if (t.op === 'xor') mark ^= t.value;
        else if (t.op === 'and') mark &= t.value;
        else mark = (mark & ~t.mask) ^ t.value;
        mark >>>= 0;
        this.step(table, chain, num, text, `MARK -> 0x${mark.toString(16)}`, p, depth);
        return this.chain(table, chain, i + 1, { ...ctx, mark }, p, depth);
      }
    }
  }

  /** Probability (0..1) that all matches of `r` match. */
  private matchProbability(r: Rule, ctx: Ctx): number {
    let q = 1;
    for (const m of r.matches) {
      const v = this.one(m, ctx);
      if (v === 0) return 0;
      q *= v;
    }
    return q;
  }

  private one(m: Match, ctx: Ctx): number {
    const b = (x: boolean, inv: boolean) => (x !== inv ? 1 : 0);
    switch (m.kind) {
      case 'src': return b(((this.src & m.cidr.mask) >>> 0) === m.cidr.addr, m.inv);
      case 'dst': return b(((ctx.dst & m.cidr.mask) >>> 0) === m.cidr.addr, m.inv);
      case 'proto': return b(this.proto === m.proto, m.inv);
      case 'l4': return this.proto === m.proto ? 1 : 0;
      case 'dport': return b(ctx.dport >= m.lo && ctx.dport <= m.hi, m.inv);
      case 'sport': return b(this.sport >= m.lo && this.sport <= m.hi, m.inv);
      case 'comment': case 'nfacct': return 1;
      case 'mark': return b(((ctx.mark & m.mask) >>> 0) === m.value, m.inv);
      case 'addrtype': {
        if (m.srcType && this.isLocal(this.src) === m.srcInv) return 0;
        if (m.dstType && this.isLocal(ctx.dst) === m.dstInv) return 0;
        return 1;
      }
      case 'conntrack': {
        const hit = m.states.includes('NEW') || (ctx.ctDnat && m.states.includes('DNAT'));
        return b(hit, m.inv);
      }
      case 'statistic':
        if (m.mode === 'random') return statisticMatchProbability(m);
        this.notes.add('statistic nth (round robin) shown as its long-run share 1/every');
        return m.inv ? 1 - 1 / m.every : 1 / m.every;
      case 'recent':
        if (m.op === 'set') return m.inv ? 0 : 1;
        this.notes.add('-m recent: no affinity entry assumed for this source');
        return m.inv ? 1 : 0;
    }
  }
}

/** Traces `pkt` through `rs` on a node whose `addrtype LOCAL` addresses are `localAddresses` (+127/8). */
export function traceRules(rs: RuleSet, node: { readonly localAddresses: readonly number[] }, pkt: TracePacket, opts: TraceOptions = {}): TraceResult {
  const tr = new Tracer(withDefaultJumps(rs.tables), node.localAddresses, opts.maxBranches ?? 4096);
  const res = tr.run(pkt);
  const groups = new Map<string, { outcome: TraceOutcome; probability: number; addr?: string; port?: number; masquerade: boolean }>();
  for (const r of res) {
    let outcome: TraceOutcome;
    if (r.kind === 'DROP' || r.kind === 'REJECT') outcome = r.kind;
    else outcome = r.ctx.dnat ? 'DNAT' : 'NONE';
    const masq = outcome === 'DNAT' || outcome === 'NONE' ? r.ctx.masq : false;
    const addr = outcome === 'DNAT' ? formatIPv4(r.ctx.dnatAddr) : undefined;
    const port = outcome === 'DNAT' ? r.ctx.dnatPort || pkt.dport : undefined;
    const key = `${outcome}/${addr}/${port}/${masq}`;
    const g = groups.get(key);
    if (g) g.probability += r.p;
    else groups.set(key, { outcome, probability: r.p, ...(addr !== undefined ? { addr, port } : {}), masquerade: masq });
  }
  const outcomes = [...groups.values()].sort((a, b) => b.probability - a.probability);
  const byKind = new Map<TraceOutcome, number>();
  for (const o of outcomes) byKind.set(o.outcome, (byKind.get(o.outcome) ?? 0) + o.probability);
  let outcome: TraceOutcome = 'NONE', best = -1;
  for (const [k, v] of byKind) if (v > best) { best = v; outcome = k; }
  const destinations = outcomes.filter((o) => o.outcome === 'DNAT')
    .map((o) => ({ addr: o.addr!, port: o.port!, probability: o.probability, masquerade: o.masquerade }))
    .sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : a.port - b.port));
  return {
    outcome, destinations, masquerade: outcomes.some((o) => o.masquerade && o.probability > 0), outcomes,
    steps: tr.steps, notes: [...tr.notes],
  };
}

/** The trace as text, one line per step, like `iptables -j TRACE` in the kernel log plus the outcome. */
export function formatTrace(t: TraceResult): string {
  const lines: string[] = [];
  for (const s of t.steps) {
    const prob = s.probability < 1 ? ` (p=${s.probability.toFixed(4)})` : '';
    lines.push(`${'  '.repeat(s.depth)}${s.table}:${s.chain}:${s.ruleNum ? `rule:${s.ruleNum}` : 'policy'} ${s.verdict}${prob}${s.ruleText ? `  ${s.ruleText}` : ''}`);
  }
  lines.push(`outcome: ${t.outcome}${t.masquerade ? ' (masqueraded)' : ''}`);
  for (const d of t.destinations) lines.push(`  -> ${d.addr}:${d.port}  p=${d.probability.toFixed(4)}${d.masquerade ? '  masquerade' : ''}`);
  for (const n of t.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

/**
 * traceRules with the packet first and the protocol by name ("tcp", "udp", "sctp", "icmp") or
 * number, for command-line callers.
 */
export function tracePacket(
  rs: RuleSet,
  pkt: { proto: string | number; src: number; dst: number; sport?: number; dport: number },
  node: { readonly localAddresses: readonly number[] },
  opts: TraceOptions = {},
): TraceResult {
  const proto = typeof pkt.proto === 'number' ? pkt.proto : ruleProtoNum(pkt.proto.toLowerCase());
  if (proto < 0) throw new RangeError(`unknown protocol "${pkt.proto}"`);
  return traceRules(rs, node, { proto, src: pkt.src, dst: pkt.dst, sport: pkt.sport, dport: pkt.dport }, opts);
}
