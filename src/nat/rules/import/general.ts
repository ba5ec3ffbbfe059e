// The general iptables-save parser: a shell-like tokenizer and a rule parser that accepts every
// shape kube-tun supports (both argument orders, inversions, long option names) and refuses
// anything else with its line number — never silently ignoring it. It is the reference the fast
// path (fast.ts) is tested against, and where every line the fast path declines goes.
import { Cidr, maskOf, parseCidr, parseIPv4 } from '../../ip';
import {
  CT_STATES, CtState, Match, Target, hasRulePorts, l4Of, probabilityToU32, protoOf, ruleProtoNum,
} from '../ir';

export class ImportError extends Error {
  constructor(message: string, readonly line: number) {
    super(message);
    this.name = 'ImportError';
  }
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

export function parseNum(s: string, lo: number, hi: number): number {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(s)) return NaN;
  const v = Number(s);
  return v >= lo && v <= hi ? v : NaN;
}

export interface LineCtx { lineNo: number; fail(msg: string): never }

/**
 * Per-import state both parsers share: whether a host address was written without "/32", and the
 * immutable IR objects that repeat (comments, jump targets), one object each.
 */
export interface ImportCaches {
  sawBareHost: boolean;
  readonly comments: Map<string, Match>;
  readonly jumps: Map<string, Target>;
}

export function newImportCaches(): ImportCaches {
  return { sawBareHost: false, comments: new Map(), jumps: new Map() };
}

function parseAddr(ctx: LineCtx, s: string | undefined, opt: string, caches: ImportCaches): Cidr {
  if (s === undefined) ctx.fail(`${opt} needs an address`);
  if (!s.includes('/')) caches.sawBareHost = true;
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
export class RuleParser {
  private ctx!: LineCtx;
  private args!: string[];
  private i = 0;
  private inv = false;
  private module: string | null = null;
  private proto = 0;
  private matches: Match[] = [];
  private stat: StatAcc | null = null;
  private recent: RecentAcc | null = null;

  constructor(private readonly caches: ImportCaches) {}

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
          matches.push({ kind: 'src', cidr: parseAddr(ctx, args[++this.i], a, this.caches), inv: this.inv }); break;
        case '-d': case '--destination': case '--dst':
          matches.push({ kind: 'dst', cidr: parseAddr(ctx, args[++this.i], a, this.caches), inv: this.inv }); break;
        case '-p': case '--protocol': {
          const v = this.next(a).toLowerCase();
          if (v === 'all' || v === '0') { this.noInv(a); break; }
          const named = ruleProtoNum(v);
          const n = named >= 0 ? named : parseNum(v, 1, 255);
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
            case 'tcp': case 'udp': case 'sctp': matches.push(l4Of(ruleProtoNum(mod))); break;
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
          target = parseTarget(ctx, a === '-g' || a === '--goto', t, args, this.i + 1, this.caches.jumps);
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
        const l4 = module === 'tcp' || module === 'udp' || module === 'sctp' || hasRulePorts(proto);
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
        const comments = this.caches.comments;
        let m = comments.get(text);
        if (!m) comments.set(text, (m = { kind: 'comment', text }));
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

/** Stands for a -m statistic / -m recent match until its options are complete. */
export const PLACEHOLDER: Match = { kind: 'comment', text: '' };

export const SIMPLE_TARGETS = new Set(['RETURN', 'ACCEPT', 'DROP', 'REJECT', 'DNAT', 'MASQUERADE', 'MARK']);

function parseTarget(ctx: LineCtx, isGoto: boolean, t: string, args: string[], from: number, jumps: Map<string, Target>): Target {
  if (!isGoto && from >= args.length && !SIMPLE_TARGETS.has(t) && !KNOWN_TARGET_EXTENSIONS.has(t)) {
    let j = jumps.get(t);
    if (!j) jumps.set(t, (j = { kind: 'jump', chain: t }));
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
      // ip[:port]
      const colon = v.indexOf(':');
      const addr = parseIPv4(colon < 0 ? v : v.slice(0, colon));
      const portText = colon < 0 ? '' : v.slice(colon + 1);
      const port = colon < 0 ? 0 : /^\d+$/.test(portText) ? parseNum(portText, 1, 65535) : NaN;
      if (addr < 0 || Number.isNaN(port)) ctx.fail(`--to-destination ${v}: only ip[:port] is supported (no ranges)`);
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

/** Target extensions iptables has and kube-tun does not model: refused, never taken for a chain name. */
export const KNOWN_TARGET_EXTENSIONS = new Set(['SNAT', 'LOG', 'NFLOG', 'TRACE', 'CT', 'NOTRACK', 'CONNMARK', 'TPROXY', 'REDIRECT', 'NETMAP', 'TCPMSS', 'CHECKSUM', 'CLASSIFY', 'DSCP', 'TOS', 'TTL', 'SET', 'NFQUEUE', 'AUDIT', 'ULOG', 'TEE']);
