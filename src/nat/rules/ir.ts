// The rule IR: iptables tables -> chains -> rules, each rule an ordered list of structured
// matches plus a target. One IR feeds three consumers: render.ts (iptables-save text),
// matcher.ts (the compiled per-connection matcher) and trace.ts; import.ts produces it from a dump.
//
// Header fields (-s, -d, -p) are items of the same ordered list as the `-m` matches, and an L4
// match's `--dport` is its own item: the list keeps the order the rule was written in, so a rule
// renders back in kube-proxy's argument order ("-m comment … -m tcp -p tcp -d X --dport N ! -s C"),
// while the iptables-save order (header first, then matches) is derived from the same data.
import { Cidr, formatFixed } from '../ip';
import { IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PROTO_NAME, PROTO_NUM } from '../../netstack/proto';

export type TableName = 'filter' | 'nat' | 'mangle' | 'raw';

/**
 * The protocols rules name (-p NAME, -m NAME): kube-proxy writes tcp, udp and sctp, hand-written
 * rules icmp. Others are read and written by number: iptables resolves other names through
 * /etc/protocols, whose names are not always the ones conntrack prints (there "ipip" is 94, not 4).
 */
const RULE_PROTOCOLS: ReadonlySet<number> = new Set([IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]);

/** The number of a protocol a rule names (lower-case), or -1 when rules do not name it. */
export function ruleProtoNum(name: string): number {
  const n = Object.prototype.hasOwnProperty.call(PROTO_NUM, name) ? PROTO_NUM[name] : -1;
  return RULE_PROTOCOLS.has(n) ? n : -1;
}

/** A protocol as a rule writes it: its name, or its number when rules do not name it. */
export function ruleProtoName(proto: number): string {
  return RULE_PROTOCOLS.has(proto) ? PROTO_NAME[proto] : String(proto);
}

/** The protocols whose ports --dport/--sport match (-m tcp, udp, sctp), and the matcher indexes. */
export function hasRulePorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;
}

export type Match =
  | { kind: 'src'; cidr: Cidr; inv: boolean }
  | { kind: 'dst'; cidr: Cidr; inv: boolean }
  | { kind: 'proto'; proto: number; inv: boolean }
  /** "-m tcp" / "-m udp" / "-m sctp": the module whose options (dport/sport) follow. */
  | { kind: 'l4'; proto: number }
  | { kind: 'dport'; lo: number; hi: number; inv: boolean }
  | { kind: 'sport'; lo: number; hi: number; inv: boolean }
  | { kind: 'comment'; text: string }
  /** probability: the kernel's u32 (lround(0x80000000 * p)); text: as written (kube-proxy's %0.10f or a dump's value). */
  | { kind: 'statistic'; mode: 'random'; probability: number; text: string; inv: boolean }
  /** nth: matches when the per-rule counter (starting at `packet`) wraps at `every` (xt_statistic). */
  | { kind: 'statistic'; mode: 'nth'; every: number; packet: number; inv: boolean }
  | { kind: 'mark'; value: number; mask: number; inv: boolean }
  /** Only LOCAL is supported; null = not tested. */
  | { kind: 'addrtype'; srcType: 'LOCAL' | null; srcInv: boolean; dstType: 'LOCAL' | null; dstInv: boolean }
  | { kind: 'recent'; name: string; op: 'set' | 'rcheck' | 'update' | 'remove'; seconds: number; reap: boolean; inv: boolean }
  | { kind: 'conntrack'; states: readonly CtState[]; inv: boolean }
  | { kind: 'nfacct'; name: string };

export type CtState = 'INVALID' | 'NEW' | 'ESTABLISHED' | 'RELATED' | 'UNTRACKED' | 'SNAT' | 'DNAT';
export const CT_STATES: readonly CtState[] = ['INVALID', 'NEW', 'ESTABLISHED', 'RELATED', 'UNTRACKED', 'SNAT', 'DNAT'];

export type Target =
  | { kind: 'jump'; chain: string }
  | { kind: 'goto'; chain: string }
  | { kind: 'RETURN' | 'ACCEPT' | 'DROP' }
  | { kind: 'REJECT'; rejectWith: string | null }
  /** port 0 = keep the destination port. */
  | { kind: 'DNAT'; addr: number; port: number }
  | { kind: 'MASQUERADE'; randomFully: boolean; random: boolean }
  /** MARK: or = --or-mark v; xor = --xor-mark v; and = --and-mark v; setx = --set-xmark v/mask (mark = (mark & ~mask) ^ v). */
  | { kind: 'MARK'; op: 'or' | 'xor' | 'and' | 'setx'; value: number; mask: number };

export interface Rule {
  readonly matches: readonly Match[];
  /** null: no -j (a counting rule). */
  readonly target: Target | null;
  /** Index into RuleSet.services, -1 when the rule belongs to no service. */
  readonly svc: number;
}

export interface Chain {
  readonly name: string;
  readonly builtin: boolean;
  /** Builtin chains only. */
  readonly policy: 'ACCEPT' | 'DROP' | null;
  readonly rules: Rule[];
}

export interface Table {
  readonly name: TableName;
  readonly chains: Chain[];
}

/** A service port as the rules know it (for NatDecision.serviceRef, trace and metrics). */
export interface ServiceRef {
  /** ServicePortName.String() as written in comments, e.g. "default/test" or "default/test:" (legacy). */
  readonly name: string;
  readonly protocol: string; // lower-case
  /** ClusterState key, "" when imported from a dump. */
  readonly key: string;
}

export interface RuleSet {
  readonly tables: Table[];
  readonly services: ServiceRef[];
  readonly meta: {
    readonly proxyVersion: 'modern' | 'legacy' | 'imported';
    readonly nodeName: string;
    readonly masqueradeMark: number;
    /** Imported dumps: host addresses were written without "/32" (modern kube-proxy's restore input). */
    readonly bareHostAddresses?: boolean;
  };
}

/** Each table's built-in chains, in iptables-save's order (the hooks the kernel calls them from). */
export const BUILTIN_CHAINS: Readonly<Record<TableName, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};

export function countRules(rs: RuleSet): number {
  let n = 0;
  for (const t of rs.tables) for (const c of t.chains) n += c.rules.length;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Probabilities (KUBE-PROXY.md §1.3)

/** userspace iptables: lround(0x80000000 * p), as u32 (libxt_statistic statistic_parse). */
export function probabilityToU32(p: number): number {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`probability ${p} out of range`);
  const x = 0x80000000 * p;
  // lround: half away from zero (x is non-negative).
  const r = Math.floor(x + 0.5);
  return r >>> 0 === r ? r : 0x80000000;
}

/** iptables-save's text: "%.11f" of u32 / 0x80000000 (libxt_statistic print). */
export function formatProbabilityIptablesSave(u: number): string {
  return formatFixed(u / 0x80000000, 11);
}

/** kube-proxy's computeProbability(n): "%0.10f" of 1/n (legacy releases: "%0.5f"). */
export function kubeProxyProbability(n: number, legacy = false): string {
  return formatFixed(1 / n, legacy ? 5 : 10);
}

export function statisticRandom(text: string, inv = false): Match {
  return { kind: 'statistic', mode: 'random', probability: probabilityToU32(Number(text)), text, inv };
}

/** Effective probability that a statistic-random match matches (after inversion). */
export function statisticMatchProbability(m: Extract<Match, { kind: 'statistic'; mode: 'random' }>): number {
  const p = Math.min(m.probability, 0x80000000) / 0x80000000;
  return m.inv ? 1 - p : p;
}

// ---------------------------------------------------------------------------------------------
// A small builder used by build.ts (config time only).

const L4_MATCH = new Map<number, Match>();
const PROTO_MATCH = new Map<number, Match>();
/** Shared immutable match objects (the IR never mutates a Match). */
export function l4Of(proto: number): Match {
  let m = L4_MATCH.get(proto);
  if (!m) L4_MATCH.set(proto, (m = { kind: 'l4', proto }));
  return m;
}
export function protoOf(proto: number): Match {
  let m = PROTO_MATCH.get(proto);
  if (!m) PROTO_MATCH.set(proto, (m = { kind: 'proto', proto, inv: false }));
  return m;
}

export class RuleBuilder {
  private readonly m: Match[] = [];
  comment(text: string): this { this.m.push({ kind: 'comment', text }); return this; }
  l4(proto: number): this { this.m.push(l4Of(proto)); return this; }
  proto(proto: number, inv = false): this { this.m.push(inv ? { kind: 'proto', proto, inv } : protoOf(proto)); return this; }
  /** "-m tcp -p tcp": kube-proxy writes the module first. */
  l4proto(proto: number): this { return this.l4(proto).proto(proto); }
  src(cidr: Cidr, inv = false): this { this.m.push({ kind: 'src', cidr, inv }); return this; }
  dst(cidr: Cidr, inv = false): this { this.m.push({ kind: 'dst', cidr, inv }); return this; }
  dport(port: number): this { this.m.push({ kind: 'dport', lo: port, hi: port, inv: false }); return this; }
  match(m: Match): this { this.m.push(m); return this; }
  build(target: Target | null, svc = -1): Rule { return { matches: this.m, target, svc }; }
  jump(chain: string, svc = -1): Rule { return this.build({ kind: 'jump', chain }, svc); }
}

export function rb(): RuleBuilder { return new RuleBuilder(); }
