// iptables-save (or kube-proxy's iptables-restore input) -> the rule IR, so a dump from a real
// node compiles into the same Matcher and trace as the YAML path. Both argument orders are
// accepted (the IR keeps the order of the line). Only what kube-proxy writes is supported; anything
// else is refused with its line number — never silently ignored.
import { Cidr, maskOf, parseCidr, parseIPv4 } from '../ip';
import {
  CT_STATES, Chain, CtState, Match, PROTO_NUM, Rule, RuleSet, ServiceRef, Table, TableName, Target, l4Of, probabilityToU32, protoOf,
} from './ir';

export class ImportError extends Error {
  constructor(message: string, readonly line: number) {
    super(message);
    this.name = 'ImportError';
  }
}

export interface ImportOptions {
  /** File name for messages. */
  file?: string;
  /**
   * Drop chains that are not kube-proxy's (DOCKER, cali-*, …) and the builtin-chain rules that jump
   * to them, instead of refusing the dump when they use unsupported matches. What was dropped is
   * listed in ImportResult.skipped. Default false.
   */
  kubeChainsOnly?: boolean;
  /**
   * Default true: rule and chain lines of the shapes kube-proxy and iptables-save write are read in
   * place by a fast path (same IR; anything else goes to the general parser). false: every line
   * through the general tokenizer and parser (tests compare the two).
   */
  fastPath?: boolean;
}

/** The imported RuleSet itself (so it can be passed on directly), plus `rules` (the same object) and notes. */
export interface ImportResult extends RuleSet {
  readonly rules: RuleSet;
  /** Human-readable notes about what kubeChainsOnly dropped. */
  readonly skipped: string[];
}

const TABLES: readonly TableName[] = ['filter', 'nat', 'mangle', 'raw'];
const BUILTINS: Readonly<Record<TableName, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};

export function isKubeChain(name: string): boolean {
  return name.startsWith('KUBE-');
}

/** Shell-like split as iptables-restore does it: whitespace, double (and single) quotes, backslash escapes. */
export function tokenize(line: string, lineNo: number): string[] {
  // Fast path (iptables-save output: single spaces, double quotes, no escapes) on the native split.
  if (line.indexOf('\\') < 0 && line.indexOf("'") < 0 && line.indexOf('\t') < 0) {
    const parts = line.split(' ');
    const fast: string[] = [];
    let ok = true;
    for (let k = 0; k < parts.length && ok; k++) {
      const p = parts[k];
      if (p === '') continue;
      if (p.charCodeAt(0) === 34) {
        let acc = p;
        while (acc.length < 2 || acc.charCodeAt(acc.length - 1) !== 34) {
          if (++k >= parts.length) throw new ImportError(`line ${lineNo}: unterminated quote`, lineNo);
          acc += ' ' + parts[k];
        }
        const inner = acc.slice(1, -1);
        if (inner.indexOf('"') >= 0) ok = false;
        else fast.push(inner);
        continue;
      }
      if (p.indexOf('"') >= 0) ok = false;
      else fast.push(p);
    }
    if (ok) return fast;
  }
  const out: string[] = [];
  const n = line.length;
  let i = 0;
  while (i < n) {
    let c = line.charCodeAt(i);
    if (c === 32 || c === 9) { i++; continue; }
    let tok = '';
    let start = i;
    while (i < n) {
      c = line.charCodeAt(i);
      if (c === 32 || c === 9) break;
      if (c === 34 || c === 39) { // quote
        tok += line.slice(start, i);
        i++;
        let seg = '';
        let s0 = i;
        for (;;) {
          if (i >= n) throw new ImportError(`line ${lineNo}: unterminated quote`, lineNo);
          const d = line.charCodeAt(i);
          if (d === c) break;
          if (c === 34 && d === 92 && i + 1 < n && (line.charCodeAt(i + 1) === 34 || line.charCodeAt(i + 1) === 92)) {
            seg += line.slice(s0, i) + line[i + 1];
            i += 2;
            s0 = i;
            continue;
          }
          i++;
        }
        tok += seg + line.slice(s0, i);
        i++;
        start = i;
        continue;
      }
      if (c === 92 && i + 1 < n) { // backslash escape outside quotes
        tok += line.slice(start, i) + line[i + 1];
        i += 2;
        start = i;
        continue;
      }
      i++;
    }
    out.push(tok + line.slice(start, i));
  }
  return out;
}

function parseNum(s: string, lo: number, hi: number): number {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(s)) return NaN;
  const v = Number(s);
  return v >= lo && v <= hi ? v : NaN;
}

interface LineCtx { lineNo: number; fail(msg: string): never }

let sawBareHost = false;
// Per-import caches of immutable IR objects that repeat (comments, jump targets).
let commentCache = new Map<string, Match>();
let jumpCache = new Map<string, Target>();

function parseAddr(ctx: LineCtx, s: string | undefined, opt: string): Cidr {
  if (s === undefined) ctx.fail(`${opt} needs an address`);
  if (!s.includes('/')) sawBareHost = true;
  if (s.includes(',')) ctx.fail(`${opt} ${s}: address lists are not supported`);
  const slash = s.indexOf('/');
  if (slash >= 0 && s.slice(slash + 1).includes('.')) {
    // a.b.c.d/255.255.0.0
    const a = parseIPv4(s.slice(0, slash)), m = parseIPv4(s.slice(slash + 1));
    let len = 0;
    while (len < 32 && ((m << len) & 0x80000000) !== 0) len++;
    if (a < 0 || m < 0 || maskOf(len) !== m) ctx.fail(`${opt} ${s}: not an IPv4 address or prefix`);
    return parseCidr(`${s.slice(0, slash)}/${len}`)!;
  }
  const c = parseCidr(s, true);
  if (!c) ctx.fail(`${opt} ${s}: not an IPv4 address or prefix (host names are not supported)`);
  return c;
}

function parsePorts(ctx: LineCtx, s: string | undefined, opt: string): [number, number] {
  if (s === undefined) ctx.fail(`${opt} needs a port`);
  const parts = s.split(':');
  if (parts.length > 2 || s.includes(',')) ctx.fail(`${opt} ${s}: only a port or a range lo:hi is supported`);
  const lo = parts[0] === '' ? 0 : parseNum(parts[0], 0, 65535);
  const hi = parts.length === 2 ? (parts[1] === '' ? 65535 : parseNum(parts[1], 0, 65535)) : lo;
  if (Number.isNaN(lo) || Number.isNaN(hi) || lo > hi) ctx.fail(`${opt} ${s}: not a port or port range (service names are not supported)`);
  return [lo, hi];
}

function parseMark(ctx: LineCtx, s: string | undefined, opt: string): [number, number] {
  if (s === undefined) ctx.fail(`${opt} needs a value`);
  const [v, m] = s.split('/');
  const value = parseNum(v, 0, 0xffffffff);
  const mask = m === undefined ? 0xffffffff : parseNum(m, 0, 0xffffffff);
  if (Number.isNaN(value) || Number.isNaN(mask)) ctx.fail(`${opt} ${s}: not a mark value[/mask]`);
  return [value >>> 0, mask >>> 0];
}

interface StatAcc { mode: string | null; prob: string | null; every: number; packet: number; inv: boolean; at: number }
interface RecentAcc { name: string; op: 'set' | 'rcheck' | 'update' | 'remove' | null; seconds: number; reap: boolean; inv: boolean; at: number }

/** Parses one rule's arguments (after `-A CHAIN`); one instance is reused for every line (no closures per rule). */
class RuleParser {
  private ctx!: LineCtx;
  private args!: string[];
  private i = 0;
  private inv = false;
  private module: string | null = null;
  private proto = 0;
  private matches: Match[] = [];
  private stat: StatAcc | null = null;
  private recent: RecentAcc | null = null;

  parse(ctx: LineCtx, args: string[], from: number): { matches: Match[]; target: Target | null } {
    this.ctx = ctx; this.args = args; this.i = from; this.inv = false; this.module = null; this.proto = 0;
    this.matches = []; this.stat = null; this.recent = null;
    let target: Target | null = null;
    const matches = this.matches;
    for (; this.i < args.length; this.i++) {
      const a = args[this.i];
      if (a === '!') {
        if (this.inv) ctx.fail('double "!"');
        this.inv = true;
        continue;
      }
      switch (a) {
        case '-s': case '--source': case '--src':
          matches.push({ kind: 'src', cidr: parseAddr(ctx, args[++this.i], a), inv: this.inv }); break;
        case '-d': case '--destination': case '--dst':
          matches.push({ kind: 'dst', cidr: parseAddr(ctx, args[++this.i], a), inv: this.inv }); break;
        case '-p': case '--protocol': {
          const v = this.next(a).toLowerCase();
          if (v === 'all' || v === '0') { this.noInv(a); break; }
          const n = PROTO_NUM[v] ?? parseNum(v, 1, 255);
          if (Number.isNaN(n)) ctx.fail(`unsupported protocol "${v}"`);
          this.proto = this.inv ? 0 : n;
          matches.push(this.inv ? { kind: 'proto', proto: n, inv: true } : protoOf(n));
          break;
        }
        case '-m': case '--match': {
          this.noInv(a);
          this.flush();
          const mod = this.next(a);
          this.module = mod;
          switch (mod) {
            case 'tcp': case 'udp': case 'sctp': matches.push(l4Of(PROTO_NUM[mod])); break;
            case 'comment': case 'mark': case 'addrtype': case 'conntrack': case 'state': case 'nfacct': break;
            case 'statistic':
              this.stat = { mode: null, prob: null, every: 0, packet: 0, inv: false, at: matches.length };
              matches.push(PLACEHOLDER); // replaced by flush()
              break;
            case 'recent':
              this.recent = { name: 'DEFAULT', op: null, seconds: 0, reap: false, inv: false, at: matches.length };
              matches.push(PLACEHOLDER);
              break;
            default: ctx.fail(`unsupported match "-m ${mod}"`);
          }
          break;
        }
        case '-j': case '--jump': case '-g': case '--goto': {
          this.noInv(a);
          this.flush();
          const t = this.next(a);
          this.module = null;
          target = parseTarget(ctx, a === '-g' || a === '--goto', t, args, this.i + 1);
          this.i = args.length;
          break;
        }
        case '-i': case '--in-interface': case '-o': case '--out-interface':
          ctx.fail(`unsupported option "${a}" (interfaces are not modelled)`);
          break;
        case '-f': case '--fragment':
          ctx.fail(`unsupported option "${a}"`);
          break;
        case '-c': case '--set-counters':
          this.i += 2; break;
        default:
          if (a.charCodeAt(0) !== 45) ctx.fail(`unexpected "${a}"`);
          this.moduleOption(a);
      }
      this.inv = false;
    }
    if (this.inv) ctx.fail('"!" at the end of the rule');
    this.flush();
    return { matches, target };
  }

  private next(opt: string): string {
    const v = this.args[++this.i];
    if (v === undefined) this.ctx.fail(`${opt} needs an argument`);
    return v;
  }

  private noInv(opt: string): void {
    if (this.inv) this.ctx.fail(`"! ${opt}" is not supported`);
  }

  private flush(): void {
    const ctx: LineCtx = this.ctx;
    const stat = this.stat;
    if (stat) {
      let m: Match;
      if (stat.mode === 'random') {
        if (stat.prob === null) ctx.fail('-m statistic --mode random needs --probability');
        const p = Number(stat.prob);
        if (!(p >= 0 && p <= 1)) ctx.fail(`--probability ${stat.prob}: must be 0..1`);
        m = { kind: 'statistic', mode: 'random', probability: probabilityToU32(p), text: stat.prob, inv: stat.inv };
      } else if (stat.mode === 'nth') {
        if (stat.every < 1) ctx.fail('-m statistic --mode nth needs --every');
        if (stat.packet > stat.every - 1) ctx.fail('--packet must be smaller than --every');
        m = { kind: 'statistic', mode: 'nth', every: stat.every, packet: stat.packet, inv: stat.inv };
      } else ctx.fail('-m statistic needs --mode random or --mode nth');
      this.matches[stat.at] = m;
      this.stat = null;
    }
    const recent = this.recent;
    if (recent) {
      if (!recent.op) ctx.fail('-m recent needs one of --set, --rcheck, --update, --remove');
      this.matches[recent.at] = { kind: 'recent', name: recent.name, op: recent.op, seconds: recent.seconds, reap: recent.reap, inv: recent.inv };
      this.recent = null;
    }
  }

  private moduleOption(a: string): void {
    const ctx: LineCtx = this.ctx;
    const module = this.module, matches = this.matches, inv = this.inv, proto = this.proto;
    switch (a) {
      case '--dport': case '--destination-port': case '--sport': case '--source-port': {
        const l4 = module === 'tcp' || module === 'udp' || module === 'sctp' || proto === 6 || proto === 17 || proto === 132;
        if (!l4) ctx.fail(`${a} needs -p tcp/udp/sctp or -m tcp/udp/sctp`);
        const v = this.next(a);
        const single = parseNum(v, 0, 65535);
        if (!Number.isNaN(single)) {
          matches.push({ kind: a === '--dport' || a === '--destination-port' ? 'dport' : 'sport', lo: single, hi: single, inv });
          return;
        }
        const [lo, hi] = parsePorts(ctx, v, a);
        matches.push({ kind: a === '--dport' || a === '--destination-port' ? 'dport' : 'sport', lo, hi, inv });
        return;
      }
      case '--comment': {
        if (module !== 'comment') break;
        const text = this.next(a);
        let m = commentCache.get(text);
        if (!m) commentCache.set(text, (m = { kind: 'comment', text }));
        matches.push(m);
        return;
      }
      case '--mark':
        if (module !== 'mark') break;
        {
          const [value, mask] = parseMark(ctx, this.next(a), a);
          matches.push({ kind: 'mark', value, mask, inv });
        }
        return;
      case '--src-type': case '--dst-type': {
        if (module !== 'addrtype') break;
        const t = this.next(a);
        if (t !== 'LOCAL') ctx.fail(`unsupported addrtype "${t}" (only LOCAL)`);
        const last = matches[matches.length - 1];
        if (last && last.kind === 'addrtype' && (a === '--src-type' ? last.srcType === null : last.dstType === null)) {
          matches[matches.length - 1] = a === '--src-type' ? { ...last, srcType: 'LOCAL', srcInv: inv } : { ...last, dstType: 'LOCAL', dstInv: inv };
        } else {
          matches.push(a === '--src-type'
            ? { kind: 'addrtype', srcType: 'LOCAL', srcInv: inv, dstType: null, dstInv: false }
            : { kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: inv });
        }
        return;
      }
      case '--ctstate': case '--state': {
        if (!(module === 'conntrack' && a === '--ctstate') && !(module === 'state' && a === '--state')) break;
        const states = this.next(a).split(',');
        for (const st of states) if (!(CT_STATES as readonly string[]).includes(st)) ctx.fail(`unsupported conntrack state "${st}"`);
        matches.push({ kind: 'conntrack', states: states as CtState[], inv });
        return;
      }
      case '--nfacct-name':
        if (module !== 'nfacct') break;
        matches.push({ kind: 'nfacct', name: this.next(a) });
        return;
      case '--mode': case '--probability': case '--every': case '--packet': {
        const stat = this.stat;
        if (module !== 'statistic' || !stat) break;
        if (a === '--mode') { const m = this.next(a); if (m !== 'random' && m !== 'nth') ctx.fail(`unsupported statistic mode "${m}"`); stat.mode = m; }
        else if (a === '--probability') { stat.prob = this.next(a); stat.inv = stat.inv || inv; }
        else if (a === '--every') { const n = parseNum(this.next(a), 1, 0x7fffffff); if (Number.isNaN(n)) ctx.fail('--every needs a positive number'); stat.every = n; stat.inv = stat.inv || inv; }
        else { const n = parseNum(this.next(a), 0, 0x7fffffff); if (Number.isNaN(n)) ctx.fail('--packet needs a number'); stat.packet = n; }
        return;
      }
      case '--name': case '--set': case '--rcheck': case '--update': case '--remove': case '--seconds': case '--reap':
      case '--mask': case '--rsource': case '--rdest': case '--hitcount': case '--rttl': {
        const recent = this.recent;
        if (module !== 'recent' || !recent) break;
        switch (a) {
          case '--name': recent.name = this.next(a); return;
          case '--set': case '--rcheck': case '--update': case '--remove':
            if (recent.op) ctx.fail('-m recent takes one of --set, --rcheck, --update, --remove');
            recent.op = a.slice(2) as 'set'; recent.inv = inv; return;
          case '--seconds': { const n = parseNum(this.next(a), 1, 0x7fffffff); if (Number.isNaN(n)) ctx.fail('--seconds needs a positive number'); recent.seconds = n; return; }
          case '--reap': recent.reap = true; return;
          case '--mask': { const m = this.next(a); if (m !== '255.255.255.255') ctx.fail(`unsupported recent --mask ${m} (only 255.255.255.255)`); return; }
          case '--rsource': return;
          default: ctx.fail(`unsupported recent option "${a}"`);
        }
        return;
      }
    }
    ctx.fail(module ? `unsupported option "${a}" for -m ${module}` : `unsupported option "${a}"`);
  }
}

const PLACEHOLDER: Match = { kind: 'comment', text: '' };

const SIMPLE_TARGETS = new Set(['RETURN', 'ACCEPT', 'DROP', 'REJECT', 'DNAT', 'MASQUERADE', 'MARK']);

function parseTarget(ctx: LineCtx, isGoto: boolean, t: string, args: string[], from: number): Target {
  if (!isGoto && from >= args.length && !SIMPLE_TARGETS.has(t) && !KNOWN_TARGET_EXTENSIONS.has(t)) {
    let j = jumpCache.get(t);
    if (!j) jumpCache.set(t, (j = { kind: 'jump', chain: t }));
    return j;
  }
  const opts = args.slice(from);
  const want = (allowed: readonly string[]) => {
    for (let k = 0; k < opts.length; k++) {
      if (!allowed.includes(opts[k])) ctx.fail(`unsupported option "${opts[k]}" for -j ${t}`);
      if (opts[k].startsWith('--to') || opts[k] === '--set-xmark' || opts[k] === '--set-mark' || opts[k].endsWith('-mark') || opts[k] === '--reject-with') k++;
    }
  };
  const optVal = (name: string): string | undefined => {
    const k = opts.indexOf(name);
    return k >= 0 ? opts[k + 1] : undefined;
  };
  if (isGoto) {
    if (opts.length) ctx.fail(`unexpected "${opts[0]}" after -g ${t}`);
    return { kind: 'goto', chain: t };
  }
  switch (t) {
    case 'RETURN': case 'ACCEPT': case 'DROP':
      want([]);
      return { kind: t };
    case 'REJECT':
      want(['--reject-with']);
      return { kind: 'REJECT', rejectWith: optVal('--reject-with') ?? null };
    case 'DNAT': {
      want(['--to-destination']);
      const v = optVal('--to-destination');
      if (!v) ctx.fail('-j DNAT needs --to-destination');
      const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(v);
      const addr = m ? parseIPv4(m[1]) : -1;
      const port = m && m[2] ? parseNum(m[2], 1, 65535) : 0;
      if (!m || addr < 0 || Number.isNaN(port)) ctx.fail(`--to-destination ${v}: only ip[:port] is supported (no ranges)`);
      return { kind: 'DNAT', addr, port };
    }
    case 'MASQUERADE':
      want(['--random-fully', '--random']);
      return { kind: 'MASQUERADE', randomFully: opts.includes('--random-fully'), random: opts.includes('--random') };
    case 'MARK': {
      want(['--set-xmark', '--set-mark', '--or-mark', '--xor-mark', '--and-mark']);
      if (opts.length !== 2) ctx.fail('-j MARK takes exactly one operation');
      const [op, val] = opts;
      if (op === '--set-xmark' || op === '--set-mark') {
        const [value, mask] = parseMark(ctx, val, op);
        // --set-mark v/m: mark = (mark & ~m) | v, which for v within m is (mark & ~m) ^ v.
        return { kind: 'MARK', op: 'setx', value, mask };
      }
      const [value, mask] = parseMark(ctx, val, op);
      if (mask !== 0xffffffff) ctx.fail(`${op} takes a value without mask`);
      return { kind: 'MARK', op: op === '--or-mark' ? 'or' : op === '--xor-mark' ? 'xor' : 'and', value, mask: 0 };
    }
    default:
      // A chain (checked once the table is complete), unless it is a target extension.
      if (KNOWN_TARGET_EXTENSIONS.has(t) || opts.length) ctx.fail(`unsupported target "-j ${t}"`);
      return { kind: 'jump', chain: t };
  }
}

const KNOWN_TARGET_EXTENSIONS = new Set(['SNAT', 'LOG', 'NFLOG', 'TRACE', 'CT', 'NOTRACK', 'CONNMARK', 'TPROXY', 'REDIRECT', 'NETMAP', 'TCPMSS', 'CHECKSUM', 'CLASSIFY', 'DSCP', 'TOS', 'TTL', 'SET', 'NFQUEUE', 'AUDIT', 'ULOG', 'TEE']);

// ---------------------------------------------------------------------------------------------
// Fast path (issue 3: a 10,000-service dump, ~110k rule lines, imports and traces in under a
// second). Splitting the dump into lines and each line into tokens, and parsing them with the
// general RuleParser, allocates millions of short-lived strings; the IR itself is ~0.5M long-lived
// objects, so allocation and GC dominate. The FastRuleParser reads a rule line in place (a token is
// a [start, end) range of the dump; numbers and addresses are parsed from char codes; option names
// are compared without slicing), shares the immutable matches and targets that repeat, and builds
// the same IR the general parser builds. It handles only the shapes kube-proxy and iptables-save
// write; for anything else — or anything wrong — it returns null, leaving the IR untouched, and the
// line goes through tokenize() + RuleParser, which accepts it or refuses it with the line number:
// errors and edge cases behave exactly as before (test/nat-import.test.ts compares the two paths).
// The line loop (Importer.run) also resolves jump targets and the service named by each rule's
// comment as it goes, so that the passes after it (tableJumps, attachServices) do little.

/**
 * A copy of `a` of exactly its size. Array literals for the usual sizes: their allocation sites
 * let V8 pretenure the (long-lived) arrays instead of copying them through the young generation.
 */
function exact<T>(a: readonly T[]): T[] {
  switch (a.length) {
    case 1: return [a[0]];
    case 2: return [a[0], a[1]];
    case 3: return [a[0], a[1], a[2]];
    case 4: return [a[0], a[1], a[2], a[3]];
    case 5: return [a[0], a[1], a[2], a[3], a[4]];
    case 6: return [a[0], a[1], a[2], a[3], a[4], a[5]];
    default: return a.slice();
  }
}

const P_TCP = protoOf(6), L4_TCP = l4Of(6);
const M_NONE = 0, M_TCP = 1, M_UDP = 2, M_SCTP = 3, M_COMMENT = 4, M_MARK = 5, M_ADDRTYPE = 6, M_CONNTRACK = 7, M_STATISTIC = 8, M_RECENT = 9;
type RecentOp = 'set' | 'rcheck' | 'update' | 'remove';

class FastRuleParser {
  /** The chain (ChainTable id) of the rule last returned by rule(). */
  chainId = -1;
  /** Its jump/goto target: a ChainTable id, -1 (none) or -2 (a chain not declared so far). */
  jumpTo = -1;
  private lastId = -1;
  private lastKube = false;
  private p = 0;
  private e = 0;
  private ts = 0;
  private te = 0;
  private quoted = false;
  private wasBare = false;
  private stop = 0; // see ipv4()
  // Next position (>= the line being read) of '"', and of the characters that send a line to the
  // general tokenizer ('\\', "'", '\t'); text.length when there is none. Only ever move forward.
  private nDq = -1;
  private nBs = -1;
  private nSq = -1;
  private nTab = -1;
  // -m statistic / -m recent being read (matches[at] holds PLACEHOLDER until flush()).
  private statAt = -1;
  private statRandom = false;
  private statPs = -1; // --probability value at [statPs, statPe)
  private statPe = -1;
  private statInv = false;
  private recentAt = -1;
  private recentName = 'DEFAULT';
  private recentOp: RecentOp | null = null;
  private recentSeconds = 0;
  private recentReap = false;
  private recentInv = false;
  // Immutable matches that repeat (per import).
  private readonly portCache = new Map<number, Match>();
  private readonly prefixCache = [new Map<string, Match>(), new Map<string, Match>(), new Map<string, Match>(), new Map<string, Match>()];
  /** Recent statistic-random matches (kube-proxy repeats 1/n for every service with n endpoints). */
  private readonly statRecent: Match[] = [];
  private statNext = 0;
  /** Shared by the rules without matches (an array of objects, like the others, for the JIT). */
  private readonly noMatches: Match[] = [PLACEHOLDER].slice(1);
  private readonly ctCache = new Map<string, Match>();
  private readonly ctInvCache = new Map<string, Match>();
  /** The rule's matches are collected here, then copied to an array of the exact size. */
  private readonly scratch: Match[] = [];

  constructor(private readonly text: string, private readonly refs: ServiceRefs) {}

  /** Forgets the cached chain (call when chains may have been deleted or the table changed). */
  reset(): void {
    this.lastId = -1;
  }

  private find(ch: string, from: number): number {
    const k = this.text.indexOf(ch, from);
    return k < 0 ? this.text.length : k;
  }

  /** Next token of the line: 1 (in ts/te/quoted), 0 at the end, -1 when the general tokenizer must decide. */
  private tok(): number {
    const text = this.text, e = this.e;
    let p = this.p;
    while (p < e && text.charCodeAt(p) === 32) p++;
    if (p >= e) { this.p = p; return 0; }
    if (this.nDq < p) this.nDq = this.find('"', p);
    if (this.nDq === p) {
      const q = (this.nDq = this.find('"', p + 1));
      if (q >= e || (q + 1 < e && text.charCodeAt(q + 1) !== 32)) return -1;
      this.ts = p + 1; this.te = q; this.quoted = true; this.p = q + 1;
      return 1;
    }
    let sp = text.indexOf(' ', p);
    if (sp < 0 || sp > e) sp = e;
    if (this.nDq < sp) return -1; // a quote inside a word
    this.ts = p; this.te = sp; this.quoted = false; this.p = sp;
    return 1;
  }

  /** An unquoted value token. */
  private val(): boolean {
    return this.tok() === 1 && !this.quoted;
  }

  private is(lit: string): boolean {
    return this.te - this.ts === lit.length && this.text.startsWith(lit, this.ts);
  }

  /** Position of char code `c` in [ts, te), or te. */
  private indexIn(c: number, ts: number, te: number): number {
    const text = this.text;
    for (let i = ts; i < te; i++) if (text.charCodeAt(i) === c) return i;
    return te;
  }

  /** Decimal digits at [ts, te) within lo..hi, else NaN (more than 12 digits: NaN too, the general path decides). */
  private dec(ts: number, te: number, lo: number, hi: number): number {
    if (te <= ts || te - ts > 12) return NaN;
    const text = this.text;
    let v = 0;
    for (let i = ts; i < te; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) return NaN;
      v = v * 10 + (c - 48);
    }
    return v >= lo && v <= hi ? v : NaN;
  }

  /** parseNum on [ts, te): decimal or 0x hex within lo..hi, else NaN. */
  private num(ts: number, te: number, lo: number, hi: number): number {
    const text = this.text;
    if (!(te - ts > 2 && text.charCodeAt(ts) === 48 && text.charCodeAt(ts + 1) === 120)) return this.dec(ts, te, lo, hi);
    if (te - ts > 12) return NaN;
    let v = 0;
    for (let i = ts + 2; i < te; i++) {
      const c = text.charCodeAt(i);
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (c >= 97 && c <= 102) d = c - 87;
      else if (c >= 65 && c <= 70) d = c - 55;
      else return NaN;
      v = v * 16 + d;
    }
    return v >= lo && v <= hi ? v : NaN;
  }

  /**
   * parseIPv4 on the digits and dots from ts (up to te): -1 when they are not a dotted quad. The
   * first other character (or te) is left in `stop`.
   */
  private ipv4(ts: number, te: number): number {
    const text = this.text;
    let v = 0, octet = 0, digits = 0, dots = 0, lead0 = false, i = ts;
    for (; i < te; i++) {
      const c = text.charCodeAt(i);
      if (c === 46) {
        if (digits === 0 || dots === 3) return -1;
        v = v * 256 + octet;
        dots++; octet = 0; digits = 0; lead0 = false;
        continue;
      }
      if (c < 48 || c > 57) break;
      if (digits === 0) lead0 = c === 48;
      else if (lead0) return -1;
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return -1;
    }
    this.stop = i;
    if (dots !== 3 || digits === 0) return -1;
    return (v * 256 + octet) >>> 0;
  }

  /** -s / -d with "a.b.c.d" (sets wasBare) or "a.b.c.d/len" at [ts, te), as parseAddr; null for anything else. */
  private addrMatch(dst: boolean, inv: boolean, ts: number, te: number): Match | null {
    const a = this.ipv4(ts, te);
    if (a < 0) return null;
    const slash = this.stop;
    if (slash === te) { // a host
      this.wasBare = true;
      const cidr: Cidr = { addr: a, len: 32, mask: 0xffffffff };
      return dst ? { kind: 'dst', cidr, inv } : { kind: 'src', cidr, inv };
    }
    if (this.text.charCodeAt(slash) !== 47 || te - slash - 1 < 1 || te - slash - 1 > 2) return null;
    const len = this.dec(slash + 1, te, 0, 32);
    if (Number.isNaN(len)) return null;
    if (len === 32) {
      const cidr: Cidr = { addr: a, len: 32, mask: 0xffffffff };
      return dst ? { kind: 'dst', cidr, inv } : { kind: 'src', cidr, inv };
    }
    // Prefixes are few and repeat ("! -s <clusterCIDR>" in every KUBE-SVC chain): one object each.
    const cache = this.prefixCache[(dst ? 2 : 0) + (inv ? 1 : 0)];
    const key = this.text.slice(ts, te);
    let m = cache.get(key);
    if (!m) {
      const mask = maskOf(len);
      const cidr: Cidr = { addr: (a & mask) >>> 0, len, mask };
      m = dst ? { kind: 'dst', cidr, inv } : { kind: 'src', cidr, inv };
      cache.set(key, m);
    }
    return m;
  }

  /** parseMark on [ts, te): value[/mask]; null when not of that form. */
  private mark(ts: number, te: number): [number, number] | null {
    const slash = this.indexIn(47, ts, te);
    if (slash === te) {
      const v = this.num(ts, te, 0, 0xffffffff);
      return Number.isNaN(v) ? null : [v >>> 0, 0xffffffff];
    }
    const v = this.num(ts, slash, 0, 0xffffffff), m = this.num(slash + 1, te, 0, 0xffffffff);
    return Number.isNaN(v) || Number.isNaN(m) ? null : [v >>> 0, m >>> 0];
  }

  /** Parses the rule line [s, e) of a table whose chains are `chains`; null: use the general parser. */
  rule(chains: ChainTable, s: number, e: number): Rule | null {
    const text = this.text;
    // "-A " has been checked. trim(): trailing spaces and CRs go; other trailing whitespace -> general path.
    while (e > s && (text.charCodeAt(e - 1) === 32 || text.charCodeAt(e - 1) === 13)) e--;
    const last = text.charCodeAt(e - 1);
    if (last < 33 || last > 126) return null;
    if (this.nBs < s) this.nBs = this.find('\\', s);
    if (this.nSq < s) this.nSq = this.find("'", s);
    if (this.nTab < s) this.nTab = this.find('\t', s);
    if (this.nBs < e || this.nSq < e || this.nTab < e) return null;
    this.p = s + 3;
    this.e = e;
    if (!this.val()) return null;
    let id = this.lastId;
    if (id < 0 || !this.is(chains.names[id])) {
      id = chains.get(text.slice(this.ts, this.te));
      if (id < 0) return null;
      this.lastId = id;
      this.lastKube = isKubeChain(chains.names[id]);
    }
    this.jumpTo = -1;
    this.statAt = -1;
    this.recentAt = -1;
    this.wasBare = false;
    const matches = this.scratch;
    matches.length = 0;
    let target: Target | null = null;
    let inv = false, module = M_NONE, proto = 0;
    for (;;) {
      const r = this.tok();
      if (r === 0) break;
      if (r < 0 || this.quoted) return null;
      const ts = this.ts, len = this.te - ts;
      const c0 = text.charCodeAt(ts);
      if (c0 === 33) { // "!"
        if (len !== 1 || inv) return null;
        inv = true;
        continue;
      }
      if (c0 !== 45 || len < 2) return null;
      const c1 = text.charCodeAt(ts + 1);
      if (len === 2) {
        if (c1 === 115 || c1 === 100) { // -s -d
          if (!this.val()) return null;
          const m = this.addrMatch(c1 === 100, inv, this.ts, this.te);
          if (m === null) return null;
          matches.push(m);
        } else if (c1 === 112) { // -p
          if (!this.val()) return null;
          const n = this.protoNum();
          if (n === 0) return null;
          if (inv) { matches.push({ kind: 'proto', proto: n, inv: true }); proto = 0; }
          else { matches.push(n === 6 ? P_TCP : protoOf(n)); proto = n; }
        } else if (c1 === 109) { // -m
          if (inv || !this.flush(matches) || !this.val()) return null;
          module = this.moduleNum();
          switch (module) {
            case M_NONE: return null;
            case M_TCP: matches.push(L4_TCP); break;
            case M_UDP: matches.push(l4Of(17)); break;
            case M_SCTP: matches.push(l4Of(132)); break;
            case M_STATISTIC:
              this.statAt = matches.length; this.statRandom = false; this.statPs = -1; this.statInv = false;
              matches.push(PLACEHOLDER);
              break;
            case M_RECENT:
              this.recentAt = matches.length; this.recentName = 'DEFAULT'; this.recentOp = null;
              this.recentSeconds = 0; this.recentReap = false; this.recentInv = false;
              matches.push(PLACEHOLDER);
              break;
          }
        } else if (c1 === 106 || c1 === 103) { // -j -g: the rest of the line is the target
          if (inv || !this.flush(matches)) return null;
          target = this.target(c1 === 103, chains);
          if (target === null) return null;
          break;
        } else return null;
        inv = false;
        continue;
      }
      if (c1 !== 45 || !this.option(module, proto, inv, matches)) return null;
      inv = false;
    }
    if (inv || !this.flush(matches)) return null;
    if (this.wasBare) sawBareHost = true;
    this.chainId = id;
    const svc = this.lastKube ? this.refs.code(matches) : -1;
    return { matches: matches.length === 0 ? this.noMatches : exact(matches), target, svc };
  }

  /** The current token as -p's value: 6, 17, 132, 1 for tcp, udp, sctp, icmp; 0 for anything else. */
  private protoNum(): number {
    const text = this.text, ts = this.ts;
    switch (this.te - ts) {
      case 3: return text.startsWith('tcp', ts) ? 6 : text.startsWith('udp', ts) ? 17 : 0;
      case 4: return text.startsWith('sctp', ts) ? 132 : text.startsWith('icmp', ts) ? 1 : 0;
    }
    return 0;
  }

  /** The current token as -m's value: M_TCP … M_RECENT, M_NONE for the general path. */
  private moduleNum(): number {
    const text = this.text, ts = this.ts;
    switch (this.te - ts) {
      case 3: return text.startsWith('tcp', ts) ? M_TCP : text.startsWith('udp', ts) ? M_UDP : M_NONE;
      case 4: return text.startsWith('mark', ts) ? M_MARK : text.startsWith('sctp', ts) ? M_SCTP : M_NONE;
      case 6: return text.startsWith('recent', ts) ? M_RECENT : M_NONE;
      case 7: return text.startsWith('comment', ts) ? M_COMMENT : M_NONE;
      case 8: return text.startsWith('addrtype', ts) ? M_ADDRTYPE : M_NONE;
      case 9: return text.startsWith('statistic', ts) ? M_STATISTIC : text.startsWith('conntrack', ts) ? M_CONNTRACK : M_NONE;
    }
    return M_NONE;
  }

  /** A "--option [value]" of the current module (the option is the current token). */
  private option(module: number, proto: number, inv: boolean, matches: Match[]): boolean {
    const text = this.text;
    switch (text.charCodeAt(this.ts + 2)) {
      case 100: // d
        if (this.is('--dport')) return this.port(true, module, proto, inv, matches);
        if (this.is('--dst-type')) return this.addrtype(false, module, inv, matches);
        return false;
      case 115: // s
        if (this.is('--sport')) return this.port(false, module, proto, inv, matches);
        if (this.is('--src-type')) return this.addrtype(true, module, inv, matches);
        if (this.is('--set')) return this.recentOpt('set', module, inv);
        if (this.is('--seconds')) {
          if (module !== M_RECENT || inv || !this.val()) return false;
          const n = this.num(this.ts, this.te, 1, 0x7fffffff);
          if (Number.isNaN(n)) return false;
          this.recentSeconds = n;
          return true;
        }
        return false;
      case 99: // c
        if (this.is('--comment')) {
          if (module !== M_COMMENT || inv || this.tok() !== 1) return false;
          const t = text.slice(this.ts, this.te);
          let m = commentCache.get(t);
          if (!m) commentCache.set(t, (m = { kind: 'comment', text: t }));
          matches.push(m);
          return true;
        }
        if (this.is('--ctstate')) {
          if (module !== M_CONNTRACK || !this.val()) return false;
          const v = text.slice(this.ts, this.te);
          const cache = inv ? this.ctInvCache : this.ctCache;
          let m = cache.get(v);
          if (!m) {
            const states = v.split(',');
            for (const st of states) if (!(CT_STATES as readonly string[]).includes(st)) return false;
            cache.set(v, (m = { kind: 'conntrack', states: states as CtState[], inv }));
          }
          matches.push(m);
          return true;
        }
        return false;
      case 109: // m
        if (this.is('--mark')) {
          if (module !== M_MARK || !this.val()) return false;
          const vm = this.mark(this.ts, this.te);
          if (vm === null) return false;
          matches.push({ kind: 'mark', value: vm[0], mask: vm[1], inv });
          return true;
        }
        if (this.is('--mode')) {
          if (module !== M_STATISTIC || inv || !this.val() || !this.is('random')) return false;
          this.statRandom = true;
          return true;
        }
        if (this.is('--mask')) return module === M_RECENT && !inv && this.val() && this.is('255.255.255.255');
        return false;
      case 112: // p
        if (this.is('--probability')) {
          if (module !== M_STATISTIC || !this.val()) return false;
          this.statPs = this.ts;
          this.statPe = this.te;
          this.statInv = this.statInv || inv;
          return true;
        }
        return false;
      case 114: // r
        if (this.is('--rcheck')) return this.recentOpt('rcheck', module, inv);
        if (this.is('--remove')) return this.recentOpt('remove', module, inv);
        if (this.is('--reap')) {
          if (module !== M_RECENT || inv) return false;
          this.recentReap = true;
          return true;
        }
        if (this.is('--rsource')) return module === M_RECENT && !inv;
        return false;
      case 117: // u
        return this.is('--update') && this.recentOpt('update', module, inv);
      case 110: // n
        if (this.is('--name')) {
          if (module !== M_RECENT || inv || !this.val()) return false;
          this.recentName = text.slice(this.ts, this.te);
          return true;
        }
        return false;
    }
    return false;
  }

  private port(dst: boolean, module: number, proto: number, inv: boolean, matches: Match[]): boolean {
    if (!(module === M_TCP || module === M_UDP || module === M_SCTP || proto === 6 || proto === 17 || proto === 132)) return false;
    if (!this.val()) return false;
    const v = this.num(this.ts, this.te, 0, 65535);
    if (Number.isNaN(v)) return false;
    const key = v * 4 + (dst ? 2 : 0) + (inv ? 1 : 0);
    let m = this.portCache.get(key);
    if (!m) {
      m = dst ? { kind: 'dport', lo: v, hi: v, inv } : { kind: 'sport', lo: v, hi: v, inv };
      this.portCache.set(key, m);
    }
    matches.push(m);
    return true;
  }

  private addrtype(src: boolean, module: number, inv: boolean, matches: Match[]): boolean {
    if (module !== M_ADDRTYPE || !this.val() || !this.is('LOCAL')) return false;
    const last = matches[matches.length - 1];
    if (last && last.kind === 'addrtype' && (src ? last.srcType === null : last.dstType === null)) {
      matches[matches.length - 1] = src ? { ...last, srcType: 'LOCAL', srcInv: inv } : { ...last, dstType: 'LOCAL', dstInv: inv };
    } else {
      matches.push(src
        ? { kind: 'addrtype', srcType: 'LOCAL', srcInv: inv, dstType: null, dstInv: false }
        : { kind: 'addrtype', srcType: null, srcInv: false, dstType: 'LOCAL', dstInv: inv });
    }
    return true;
  }

  private recentOpt(op: RecentOp, module: number, inv: boolean): boolean {
    if (module !== M_RECENT || this.recentOp !== null) return false;
    this.recentOp = op;
    this.recentInv = inv;
    return true;
  }

  /** The statistic-random match for the probability text at [ps, pe); null when out of range. */
  private statistic(ps: number, pe: number, inv: boolean): Match | null {
    const recent = this.statRecent;
    for (let k = 0; k < recent.length; k++) {
      const m = recent[k];
      if (m.kind === 'statistic' && m.mode === 'random' && m.inv === inv && m.text.length === pe - ps && this.text.startsWith(m.text, ps)) return m;
    }
    const text = this.text.slice(ps, pe);
    const p = Number(text);
    if (!(p >= 0 && p <= 1)) return null;
    const m: Match = { kind: 'statistic', mode: 'random', probability: probabilityToU32(p), text, inv };
    if (recent.length < 16) recent.push(m);
    else recent[this.statNext++ & 15] = m;
    return m;
  }

  /** RuleParser.flush(): completes a pending -m statistic / -m recent; false when it would fail. */
  private flush(matches: Match[]): boolean {
    if (this.statAt >= 0) {
      if (!this.statRandom || this.statPs < 0) return false;
      const m = this.statistic(this.statPs, this.statPe, this.statInv);
      if (m === null) return false;
      matches[this.statAt] = m;
      this.statAt = -1;
    }
    if (this.recentAt >= 0) {
      const op = this.recentOp;
      if (op === null) return false;
      matches[this.recentAt] = { kind: 'recent', name: this.recentName, op, seconds: this.recentSeconds, reap: this.recentReap, inv: this.recentInv };
      this.recentAt = -1;
    }
    return true;
  }

  /** The target (the current token is -j / -g) and its options up to the end of the line. */
  private target(isGoto: boolean, chains: ChainTable): Target | null {
    if (!this.val()) return null;
    const text = this.text;
    const t = text.slice(this.ts, this.te);
    const more = this.tok();
    if (more < 0 || (more === 1 && this.quoted)) return null;
    if (isGoto) {
      if (more !== 0) return null;
      const id = chains.get(t);
      this.jumpTo = id >= 0 ? id : -2;
      return { kind: 'goto', chain: t };
    }
    if (more === 0) {
      // A declared chain: its shared jump target (targets are targets even if a chain has the name).
      const id = chains.get(t);
      if (id >= 0 && !SIMPLE_TARGETS.has(t) && !KNOWN_TARGET_EXTENSIONS.has(t)) {
        this.jumpTo = id;
        return chains.jumpOf(id);
      }
      let j = jumpCache.get(t);
      if (j) {
        this.jumpTo = -2;
        return j;
      }
      switch (t) {
        case 'RETURN': case 'ACCEPT': case 'DROP': return { kind: t };
        case 'MASQUERADE': return { kind: 'MASQUERADE', randomFully: false, random: false };
        case 'REJECT': return { kind: 'REJECT', rejectWith: null };
      }
      if (SIMPLE_TARGETS.has(t) || KNOWN_TARGET_EXTENSIONS.has(t)) return null;
      jumpCache.set(t, (j = { kind: 'jump', chain: t }));
      this.jumpTo = -2;
      return j;
    }
    // "--random-fully", or one option and its value; then the end of the line.
    if (t === 'MASQUERADE') return this.is('--random-fully') && this.tok() === 0 ? { kind: 'MASQUERADE', randomFully: true, random: false } : null;
    const op = t === 'DNAT' ? (this.is('--to-destination') ? 1 : 0)
      : t === 'REJECT' ? (this.is('--reject-with') ? 2 : 0)
        : t === 'MARK' ? (this.is('--or-mark') ? 3 : this.is('--xor-mark') ? 4 : this.is('--and-mark') ? 5 : this.is('--set-xmark') || this.is('--set-mark') ? 6 : 0)
          : 0;
    if (op === 0 || !this.val()) return null;
    const vts = this.ts, vte = this.te;
    if (this.tok() !== 0) return null;
    switch (op) {
      case 1: { // DNAT --to-destination a.b.c.d[:port]
        const addr = this.ipv4(vts, vte);
        const ipEnd = this.stop;
        if (addr < 0 || (ipEnd < vte && text.charCodeAt(ipEnd) !== 58)) return null;
        let port = 0;
        if (ipEnd < vte) {
          port = this.dec(ipEnd + 1, vte, 1, 65535);
          if (Number.isNaN(port)) return null;
        }
        return { kind: 'DNAT', addr, port };
      }
      case 2:
        return { kind: 'REJECT', rejectWith: text.slice(vts, vte) };
      default: {
        const vm = this.mark(vts, vte);
        if (vm === null) return null;
        if (op === 6) return { kind: 'MARK', op: 'setx', value: vm[0], mask: vm[1] };
        if (vm[1] !== 0xffffffff) return null;
        return { kind: 'MARK', op: op === 3 ? 'or' : op === 4 ? 'xor' : 'and', value: vm[0], mask: 0 };
      }
    }
  }
}

/**
 * The chains of one table by name. Entry ids are stable; parallel arrays hold each entry's name,
 * chain (null once deleted by -X), shared jump target, and the line of each of the chain's rules
 * (lineFirst + k while they come from consecutive lines, else lineList) for error messages.
 */
class ChainTable {
  readonly names: string[] = [];
  readonly chains: (Chain | null)[] = [];
  private readonly index = new Map<string, number>(); // live entries
  private readonly jumps: (Target | null)[] = [];
  private readonly lineFirst: number[] = [];
  private readonly lineCount: number[] = [];
  private readonly lineList: (number[] | null)[] = [];
  /**
   * The jump/goto rules, as the fast path resolved them (chain id, rule, target id, in line order);
   * exactJumps false: not all of them (general-path rules, a chain flushed or deleted), tableJumps()
   * finds them instead.
   */
  readonly jFrom: number[] = [];
  readonly jRule: Rule[] = [];
  readonly jTo: number[] = [];
  exactJumps = true;

  /** The live entry named `name`, or -1. */
  get(name: string): number {
    return this.index.get(name) ?? -1;
  }

  /** Adds a chain whose name is not live. */
  add(chain: Chain): number {
    const id = this.names.length;
    this.names.push(chain.name);
    this.chains.push(chain);
    this.jumps.push(null);
    this.lineFirst.push(0);
    this.lineCount.push(0);
    this.lineList.push(null);
    this.index.set(chain.name, id);
    return id;
  }

  delete(id: number): void {
    this.chains[id] = null;
    this.index.delete(this.names[id]);
    this.exactJumps = false;
  }

  /** The jump target to entry `id` (one object per chain; the IR never mutates a Target). */
  jumpOf(id: number): Target {
    let j = this.jumps[id];
    if (j === null) this.jumps[id] = j = { kind: 'jump', chain: this.names[id] };
    return j;
  }

  pushLine(id: number, line: number): void {
    const list = this.lineList[id];
    if (list !== null) { list.push(line); return; }
    const n = this.lineCount[id], first = this.lineFirst[id];
    if (n === 0) { this.lineFirst[id] = line; this.lineCount[id] = 1; }
    else if (line === first + n) this.lineCount[id] = n + 1;
    else {
      const l: number[] = [];
      for (let k = 0; k < n; k++) l.push(first + k);
      l.push(line);
      this.lineList[id] = l;
    }
  }

  /** Line of the k-th rule of entry `id`. */
  lineAt(id: number, k: number): number | undefined {
    const list = this.lineList[id];
    return list !== null ? list[k] : k < this.lineCount[id] ? this.lineFirst[id] + k : undefined;
  }

  setLines(id: number, lines: number[]): void {
    this.lineList[id] = lines;
    this.lineCount[id] = 0;
  }
}

interface TableState { t: Table; chains: ChainTable; deleted: Set<string> }

/** ":NAME - …" with a printable name (what the general path's split(/\s+/) would read the same way). */
const USER_CHAIN_RE = /:[!-~]+ -(?=[ \n]|$)/y;

/**
 * One import. The line loop (run) stays small — fast-path rule and chain lines inline, everything
 * else in generalLine() — so that the JIT's on-stack replacement of the loop compiles little.
 */
class Importer {
  readonly tables: Table[] = [];
  readonly tableChains: ChainTable[] = []; // parallel to tables
  readonly unsupportedForeign: string[] = [];
  private cur: TableState | null = null;
  private readonly seenTables = new Set<string>();
  private readonly ruleParser = new RuleParser();
  private readonly fast: FastRuleParser | null;
  private readonly ctx: LineCtx;
  readonly refs = new ServiceRefs();
  // Fast-path rules of consecutive lines for one chain are collected here and then added at once
  // (as the chain's rules array, of exactly that size, when it was empty); flushed before any other line.
  private pendChain: Chain | null = null;
  private readonly pend: Rule[] = [];

  constructor(private readonly text: string, private readonly opts: ImportOptions, readonly file: string) {
    this.fast = opts.fastPath === false ? null : new FastRuleParser(text, this.refs);
    this.ctx = { lineNo: 0, fail(msg: string): never { throw new ImportError(`${file}line ${this.lineNo}: ${msg}`, this.lineNo); } };
  }

  /** Reads every line (numbered as text.split('\n') would), in place; returns the number of lines. */
  run(): number {
    const text = this.text, fast = this.fast, len = text.length;
    let lineNo = 0;
    for (let s = 0, e = 0; s <= len; s = e + 1) {
      e = text.indexOf('\n', s);
      if (e < 0) e = len;
      lineNo++;
      const cur = this.cur;
      if (fast !== null && cur !== null) {
        const c0 = text.charCodeAt(s);
        if (c0 === 45 && text.charCodeAt(s + 1) === 65 && text.charCodeAt(s + 2) === 32) { // "-A "
          const rule = fast.rule(cur.chains, s, e);
          if (rule !== null) {
            const id = fast.chainId;
            const chain = cur.chains.chains[id]!;
            if (chain !== this.pendChain) {
              this.flushPending();
              this.pendChain = chain;
            }
            this.pend.push(rule);
            const ct = cur.chains;
            ct.pushLine(id, lineNo);
            const to = fast.jumpTo;
            if (to >= 0) {
              ct.jFrom.push(id);
              ct.jRule.push(rule);
              ct.jTo.push(to);
            } else if (to === -2) ct.exactJumps = false;
            continue;
          }
        } else if (c0 === 58 && this.userChainLine(cur, s)) continue;
      }
      this.generalLine(s, e, lineNo);
    }
    this.flushPending();
    if (this.cur) throw new ImportError(`${this.file}line ${lineNo}: missing COMMIT for *${this.cur.t.name}`, lineNo);
    return lineNo;
  }

  private flushPending(): void {
    const c = this.pendChain;
    if (c === null) return;
    if (c.rules.length === 0) (c as { rules: Rule[] }).rules = exact(this.pend);
    else for (const r of this.pend) c.rules.push(r);
    this.pend.length = 0;
    this.pendChain = null;
  }

  /** Fast path for ":NAME - [0:0]" (a user chain); false: the general path decides. */
  private userChainLine(cur: TableState, s: number): boolean {
    USER_CHAIN_RE.lastIndex = s;
    if (!USER_CHAIN_RE.test(this.text)) return false;
    const name = this.text.slice(s + 1, USER_CHAIN_RE.lastIndex - 2);
    if (BUILTINS[cur.t.name].includes(name)) return false;
    this.flushPending();
    this.declare(cur, name, false, '-');
    return true;
  }

  private declare(t: TableState, name: string, builtin: boolean, policy: string): void {
    const id = t.chains.get(name);
    if (id >= 0) { // a chain line flushes the chain (kube-proxy's restore input)
      const c = t.chains.chains[id]!;
      if (c.rules.length) t.chains.exactJumps = false;
      c.rules.length = 0;
      t.chains.setLines(id, []);
      return;
    }
    const c: Chain = { name, builtin, policy: builtin ? (policy as 'ACCEPT' | 'DROP') : null, rules: [] };
    t.chains.add(c);
    t.t.chains.push(c);
  }

  /** Any line the fast path did not take, through the general tokenizer and parser. */
  private generalLine(s: number, e: number, lineNo: number): void {
    this.flushPending();
    this.fast?.reset();
    const ctx: LineCtx = this.ctx;
    ctx.lineNo = lineNo;
    let line = this.text.slice(s, e).trim();
    if (line === '' || line.startsWith('#')) return;
    if (line.startsWith('[')) {
      const close = line.indexOf(']');
      if (close < 0) ctx.fail('bad counters');
      line = line.slice(close + 1).trim();
    }
    const cur = this.cur;
    if (line.startsWith('*')) {
      if (cur) ctx.fail(`*${line.slice(1)} before COMMIT of *${cur.t.name}`);
      const name = line.slice(1) as TableName;
      if (!TABLES.includes(name)) ctx.fail(`unsupported table "*${name}"`);
      if (this.seenTables.has(name)) ctx.fail(`table ${name} appears twice`);
      this.seenTables.add(name);
      const t: Table = { name, chains: [] };
      this.tables.push(t);
      this.cur = { t, chains: new ChainTable(), deleted: new Set() };
      this.tableChains.push(this.cur.chains);
      return;
    }
    if (line === 'COMMIT') {
      if (!cur) ctx.fail('COMMIT outside a table');
      this.cur = null;
      return;
    }
    if (!cur) ctx.fail('rule or chain outside a table (missing *filter / *nat)');
    if (line.startsWith(':')) {
      const parts = line.slice(1).split(/\s+/);
      const name = parts[0];
      const policy = parts[1] ?? '-';
      const builtin = BUILTINS[cur.t.name].includes(name);
      if (builtin && policy !== 'ACCEPT' && policy !== 'DROP') ctx.fail(`builtin chain ${name} needs policy ACCEPT or DROP`);
      if (!builtin && policy !== '-') ctx.fail(`user chain ${name} cannot have a policy`);
      this.declare(cur, name, builtin, policy);
      return;
    }
    const toks = tokenize(line, lineNo);
    const cmd = toks[0];
    if (cmd === '-X' || cmd === '--delete-chain') {
      const name = toks[1];
      const id = name ? cur.chains.get(name) : -1;
      if (id < 0) ctx.fail(`-X ${name ?? ''}: no such chain`);
      cur.deleted.add(name!);
      const c = cur.chains.chains[id]!;
      cur.t.chains.splice(cur.t.chains.indexOf(c), 1);
      cur.chains.delete(id);
      return;
    }
    if (cmd !== '-A' && cmd !== '--append') ctx.fail(`unsupported command "${cmd}" (only -A, -X and chain lines)`);
    const chainName = toks[1];
    const chainId = chainName ? cur.chains.get(chainName) : -1;
    const chain = chainId >= 0 ? cur.chains.chains[chainId]! : undefined;
    if (!chain) ctx.fail(`-A ${chainName ?? ''}: chain not declared with ":${chainName ?? ''}" in *${cur.t.name}`);
    let parsed: { matches: Match[]; target: Target | null };
    try {
      parsed = this.ruleParser.parse(ctx, toks, 2);
    } catch (e) {
      if (this.opts.kubeChainsOnly && e instanceof ImportError && !isKubeChain(chain.name)) {
        this.unsupportedForeign.push(`line ${lineNo} (${chain.name}): ${(e as Error).message.replace(/^.*?line \d+: /, '')}`);
        return;
      }
      throw e;
    }
    const rule: Rule = { matches: parsed.matches, target: parsed.target, svc: isKubeChain(chain.name) ? this.refs.code(parsed.matches) : -1 };
    chain.rules.push(rule);
    cur.chains.pushLine(chainId, lineNo);
    if (rule.target && (rule.target.kind === 'jump' || rule.target.kind === 'goto')) cur.chains.exactJumps = false;
  }

  /** kubeChainsOnly: drops foreign chains and the builtin rules not jumping to a KUBE- chain. */
  dropForeign(): string[] {
    const skipped: string[] = [];
    for (let ti = 0; ti < this.tables.length; ti++) {
      const t = this.tables[ti], ct = this.tableChains[ti];
      const foreign = new Set(t.chains.filter((c) => !c.builtin && !isKubeChain(c.name)).map((c) => c.name));
      for (const name of foreign) skipped.push(`${t.name}: chain ${name}`);
      t.chains.splice(0, t.chains.length, ...t.chains.filter((c) => c.builtin || isKubeChain(c.name)));
      for (const name of foreign) ct.delete(ct.get(name));
      for (const c of t.chains) {
        if (!c.builtin) continue;
        const id = ct.get(c.name);
        const keepIdx = c.rules.map((r, k) => (r.target?.kind === 'jump' && isKubeChain(r.target.chain) ? k : -1)).filter((k) => k >= 0);
        const dropped = c.rules.length - keepIdx.length;
        if (dropped) skipped.push(`${t.name}: ${dropped} rule(s) of ${c.name} not jumping to a KUBE- chain`);
        ct.setLines(id, keepIdx.map((k) => ct.lineAt(id, k) as number));
        c.rules.splice(0, c.rules.length, ...keepIdx.map((k) => c.rules[k]));
      }
    }
    for (const u of this.unsupportedForeign) skipped.push(`unsupported rule dropped: ${u}`);
    return skipped;
  }
}

/**
 * Jump targets must exist; extension targets we do not model are refused here. Returns the
 * table's jumps (chain position, rule index, target position) for attachServices.
 */
function tableJumps(t: Table, ct: ChainTable, file: string, exact: boolean): TableJumps {
  if (exact && ct.exactJumps) {
    // Every jump was resolved to a declared chain and no chain was deleted, so a chain's position
    // in t.chains is its id: order the jumps by chain (counting sort; line order within a chain).
    const C = t.chains.length, n = ct.jFrom.length, jFrom = ct.jFrom;
    const next = new Int32Array(C + 1);
    for (let j = 0; j < n; j++) next[jFrom[j] + 1]++;
    for (let k = 0; k < C; k++) next[k + 1] += next[k];
    const tj: TableJumps = { n, from: new Int32Array(n), rules: new Array<Rule>(n), to: new Int32Array(n) };
    for (let j = 0; j < n; j++) {
      const k = jFrom[j], q = next[k]++;
      tj.from[q] = k;
      tj.rules[q] = ct.jRule[j];
      tj.to[q] = ct.jTo[j];
    }
    return tj;
  }
  const pos = new Int32Array(ct.names.length);
  let R = 0;
  for (let k = 0; k < t.chains.length; k++) {
    pos[ct.get(t.chains[k].name)] = k;
    R += t.chains[k].rules.length;
  }
  const tj: TableJumps = { n: 0, from: new Int32Array(R), rules: new Array<Rule>(R), to: new Int32Array(R) };
  for (let k = 0; k < t.chains.length; k++) {
    const c = t.chains[k];
    for (let j = 0; j < c.rules.length; j++) {
      const tg = c.rules[j].target;
      if (!tg || (tg.kind !== 'jump' && tg.kind !== 'goto')) continue;
      const id = ct.get(tg.chain);
      if (id >= 0) {
        tj.from[tj.n] = k;
        tj.rules[tj.n] = c.rules[j];
        tj.to[tj.n++] = pos[id];
        continue;
      }
      const ln = ct.lineAt(ct.get(c.name), j) ?? 0;
      if (KNOWN_TARGET_EXTENSIONS.has(tg.chain)) throw new ImportError(`${file}line ${ln}: unsupported target "-j ${tg.chain}"`, ln);
      throw new ImportError(`${file}line ${ln}: -${tg.kind === 'jump' ? 'j' : 'g'} ${tg.chain}: no such chain in *${t.name}`, ln);
    }
  }
  return tj;
}

/** Parses an iptables-save dump (or kube-proxy restore input) into the rule IR. */
export function importIptablesSave(text: string, options: ImportOptions | string = {}): ImportResult {
  const opts: ImportOptions = typeof options === 'string' ? { file: options } : options;
  const file = opts.file ? `${opts.file}: ` : '';
  sawBareHost = false;
  commentCache = new Map();
  jumpCache = new Map();
  try {
    const imp = new Importer(text, opts, file);
    imp.run();
    const skipped = opts.kubeChainsOnly ? imp.dropForeign() : [];
    const tables = imp.tables;
    const jumps = tables.map((t, ti) => tableJumps(t, imp.tableChains[ti], file, !opts.kubeChainsOnly));
    const { services, mark } = attachServices(tables, jumps, imp.refs);
    const rules: RuleSet = { tables, services, meta: { proxyVersion: 'imported', nodeName: '', masqueradeMark: mark, bareHostAddresses: sawBareHost } };
    return { ...rules, rules, skipped };
  } finally {
    commentCache = new Map();
    jumpCache = new Map();
  }
}

/** A table's n jump/goto rules in table order: position of their chain, the rule, position of the target chain. */
interface TableJumps { n: number; from: Int32Array; rules: Rule[]; to: Int32Array }

// kube-proxy's comments around a ServicePortName (proxier.go): "<svc>", "<svc> cluster IP",
// "<svc> -> <ep>", "<svc> has no endpoints", …, and a few with a prefix ("masquerade traffic for <svc>
// external destinations", "other traffic to <svc> will be dropped …", "Balancing rule 0 for <svc>").
const SVC_NAME_RE = /^[a-z0-9][-a-z0-9.]*\/[a-z0-9][-a-z0-9.]*(:[-a-z0-9]*)?$/;
const COMMENT_PREFIXES = ['masquerade traffic for ', 'pod traffic for ', 'masquerade LOCAL traffic for ', 'route LOCAL traffic for ', 'other traffic to '];

export function serviceNameOfComment(text: string): string | null {
  let start = 0;
  for (const p of COMMENT_PREFIXES) if (text.startsWith(p)) { start = p.length; break; }
  if (start === 0 && text.startsWith('Balancing rule ')) {
    const f = text.indexOf(' for ');
    if (f < 0) return null;
    start = f + 5;
  }
  const sp = text.indexOf(' ', start);
  const word = sp < 0 ? text.slice(start) : text.slice(start, sp);
  return SVC_NAME_RE.test(word) ? word : null;
}

/**
 * The service ports named by kube-proxy's comments. While a dump is read, a rule of a KUBE- chain
 * gets a code in its svc field: -1 (no service) or -2 - (rec * 4 + p), rec the service name's
 * record and p its protocol (0 none or another, 1 tcp, 2 udp, 3 sctp), from its first comment and
 * its first -p / -m tcp|udp|sctp. number() then numbers the service ports in table order.
 */
class ServiceRefs {
  readonly services: ServiceRef[] = [];
  /** Per service name: the first service port of that name, and the one per protocol. */
  private readonly recs: { name: string; any: number; tcp: number; udp: number; sctp: number }[] = [];
  private readonly recOfName = new Map<string, number>();
  private readonly recOfText = new Map<string, number>(); // comment -> rec, -1 for none
  private lastText = '';
  private lastRec = -1;

  code(matches: readonly Match[]): number {
    let text: string | null = null;
    let p = -1;
    for (let k = 0; k < matches.length; k++) {
      const m = matches[k];
      if (m.kind === 'comment') { if (text === null) text = m.text; }
      else if ((m.kind === 'proto' || m.kind === 'l4') && p < 0) p = m.proto === 6 ? 1 : m.proto === 17 ? 2 : m.proto === 132 ? 3 : 0;
    }
    if (text === null) return -1;
    let rec = this.lastRec;
    if (text !== this.lastText) {
      const known = this.recOfText.get(text);
      if (known !== undefined) rec = known;
      else {
        const name = serviceNameOfComment(text);
        rec = name === null ? -1 : this.recOf(name);
        this.recOfText.set(text, rec);
      }
      this.lastText = text;
      this.lastRec = rec;
    }
    return rec < 0 ? -1 : -2 - (rec * 4 + (p < 0 ? 0 : p));
  }

  private recOf(name: string): number {
    let r = this.recOfName.get(name);
    if (r === undefined) {
      r = this.recs.length;
      this.recs.push({ name, any: -1, tcp: -1, udp: -1, sctp: -1 });
      this.recOfName.set(name, r);
    }
    return r;
  }

  /** The index in services of a code (a new service port the first time). */
  number(code: number): number {
    const c = -2 - code, p = c & 3, rec = this.recs[c >> 2];
    // Rules without a protocol (SVC jumps, hairpin) belong to the service port of that name seen first.
    let idx = p === 1 ? rec.tcp : p === 2 ? rec.udp : p === 3 ? rec.sctp : rec.any;
    if (idx < 0) {
      idx = this.services.length;
      this.services.push({ name: rec.name, protocol: p === 1 ? 'tcp' : p === 2 ? 'udp' : p === 3 ? 'sctp' : '', key: '' });
      if (p === 1) rec.tcp = idx;
      else if (p === 2) rec.udp = idx;
      else if (p === 3) rec.sctp = idx;
      if (rec.any < 0) rec.any = idx;
    }
    return idx;
  }
}

/** Service refs from kube-proxy's comments (rules without comments get -1), and the masquerade mark. */
function attachServices(tables: Table[], jumps: readonly TableJumps[], refs: ServiceRefs): { services: ServiceRef[]; mark: number } {
  let mark = 0x4000;
  for (const t of tables) for (const c of t.chains) {
    if (c.name === 'KUBE-MARK-MASQ') for (const r of c.rules) if (r.target?.kind === 'MARK') mark = r.target.value;
    const rules = c.rules;
    for (let k = 0; k < rules.length; k++) {
      const r = rules[k];
      if (r.svc < -1) (r as { svc: number }).svc = refs.number(r.svc); // rules are fresh objects of this import
    }
  }
  for (let ti = 0; ti < tables.length; ti++) inheritServices(tables[ti].chains, jumps[ti]);
  return { services: refs.services, mark };
}

const PER_SERVICE_RE = /^KUBE-(SVC|SVL|EXT|FW|SEP|XLB)-/;

/**
 * Rules without comments (kube-proxy's large-cluster mode drops per-endpoint comments): a
 * service chain's rules belong to the service of its commented rules, and a KUBE-SEP/SVC/…
 * chain to the service of the rule that jumps to it.
 */
function inheritServices(chains: readonly Chain[], jumps: TableJumps): void {
  const { n, from, rules, to } = jumps;
  const C = chains.length;
  const perService = new Uint8Array(C);
  for (let k = 0; k < C; k++) if (PER_SERVICE_RE.test(chains[k].name)) perService[k] = 1;
  const chainSvc = new Int32Array(C).fill(-1);
  // Three passes (a pass that changes nothing leaves the next one nothing to change either).
  for (let pass = 0, changed = true; pass < 3 && changed; pass++) {
    changed = false;
    let j = 0;
    for (let k = 0; k < C; k++) {
      const isPer = perService[k] === 1;
      let own = chainSvc[k];
      if (own < 0 && isPer) {
        for (const r of chains[k].rules) if (r.svc >= 0) { own = r.svc; break; }
        if (own >= 0) { chainSvc[k] = own; changed = true; }
      }
      for (; j < n && from[j] === k; j++) {
        const svc = rules[j].svc;
        const s = svc >= 0 ? svc : isPer ? own : -1;
        const tk = to[j];
        if (s >= 0 && perService[tk] === 1 && chainSvc[tk] < 0) { chainSvc[tk] = s; changed = true; }
      }
    }
  }
  for (let k = 0; k < C; k++) {
    const s = chainSvc[k];
    if (s < 0) continue;
    for (const r of chains[k].rules) if (r.svc < 0) (r as { svc: number }).svc = s;
  }
}
