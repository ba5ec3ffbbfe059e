// The importer's fast path. A 10,000-service dump (~110k rule lines) should import and trace in
// under a second. Splitting the dump into lines and each line into tokens, and parsing them with the
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
import { Cidr, maskOf } from '../../ip';
import { tryParseIpRange } from '../../../netstack/addr';
import { CT_STATES, CtState, Match, Rule, Target, hasRulePorts, l4Of, probabilityToU32, protoOf } from '../ir';
import { IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../../netstack/proto';
import { ImportCaches, KNOWN_TARGET_EXTENSIONS, PLACEHOLDER, SIMPLE_TARGETS } from './general';
import { ChainTable, isKubeChain } from './chains';
import { ServiceRefs } from './attribution';

/**
 * A copy of `a` of exactly its size. Array literals for the usual sizes: their allocation sites
 * let V8 pretenure the (long-lived) arrays instead of copying them through the young generation.
 */
export function exact<T>(a: readonly T[]): T[] {
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

const P_TCP = protoOf(IPPROTO_TCP), L4_TCP = l4Of(IPPROTO_TCP);
const M_NONE = 0, M_TCP = 1, M_UDP = 2, M_SCTP = 3, M_COMMENT = 4, M_MARK = 5, M_ADDRTYPE = 6, M_CONNTRACK = 7, M_STATISTIC = 8, M_RECENT = 9;
type RecentOp = 'set' | 'rcheck' | 'update' | 'remove';

export class FastRuleParser {
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

  constructor(private readonly text: string, private readonly refs: ServiceRefs, private readonly caches: ImportCaches) {}

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
    let i = ts;
    for (; i < te; i++) {
      const c = text.charCodeAt(i);
      if (c !== 46 && (c < 48 || c > 57)) break;
    }
    this.stop = i;
    return tryParseIpRange(text, ts, i);
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
          else { matches.push(n === IPPROTO_TCP ? P_TCP : protoOf(n)); proto = n; }
        } else if (c1 === 109) { // -m
          if (inv || !this.flush(matches) || !this.val()) return null;
          module = this.moduleNum();
          switch (module) {
            case M_NONE: return null;
            case M_TCP: matches.push(L4_TCP); break;
            case M_UDP: matches.push(l4Of(IPPROTO_UDP)); break;
            case M_SCTP: matches.push(l4Of(IPPROTO_SCTP)); break;
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
    if (this.wasBare) this.caches.sawBareHost = true;
    this.chainId = id;
    const svc = this.lastKube ? this.refs.code(matches) : -1;
    return { matches: matches.length === 0 ? this.noMatches : exact(matches), target, svc };
  }

  /** The current token as -p's value: the number of tcp, udp, sctp or icmp; 0 for anything else. */
  private protoNum(): number {
    const text = this.text, ts = this.ts;
    switch (this.te - ts) {
      case 3: return text.startsWith('tcp', ts) ? IPPROTO_TCP : text.startsWith('udp', ts) ? IPPROTO_UDP : 0;
      case 4: return text.startsWith('sctp', ts) ? IPPROTO_SCTP : text.startsWith('icmp', ts) ? IPPROTO_ICMP : 0;
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
          const comments = this.caches.comments;
          let m = comments.get(t);
          if (!m) comments.set(t, (m = { kind: 'comment', text: t }));
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
    if (!(module === M_TCP || module === M_UDP || module === M_SCTP || hasRulePorts(proto))) return false;
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
      const jumps = this.caches.jumps;
      let j = jumps.get(t);
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
      jumps.set(t, (j = { kind: 'jump', chain: t }));
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