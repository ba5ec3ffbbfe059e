// iptables-save (or kube-proxy's iptables-restore input) -> the rule IR, so a dump from a real
// node compiles into the same Matcher and trace as the YAML path. Both argument orders are
// accepted (the IR keeps the order of the line). Only what kube-proxy writes is supported; anything
// else is refused with its line number — never silently ignored.
//
// general.ts: the tokenizer and rule parser for every supported line; fast.ts: the in-place fast
// path for the usual shapes (tested against general.ts as its oracle); chains.ts: a table's chains
// and jumps; attribution.ts: which service each rule belongs to.
import { BUILTIN_CHAINS, Chain, Match, Rule, RuleSet, Table, TableName, Target } from '../ir';
import { ImportCaches, ImportError, LineCtx, RuleParser, newImportCaches, tokenize } from './general';
import { FastRuleParser, exact } from './fast';
import { ChainTable, isKubeChain, tableJumps } from './chains';
import { ServiceRefs, attachServices } from './attribution';

export { ImportError } from './general';

const TABLES = Object.keys(BUILTIN_CHAINS) as TableName[];

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
  readonly caches: ImportCaches = newImportCaches();
  private readonly ruleParser = new RuleParser(this.caches);
  private readonly fast: FastRuleParser | null;
  private readonly ctx: LineCtx;
  readonly refs = new ServiceRefs();
  // Fast-path rules of consecutive lines for one chain are collected here and then added at once
  // (as the chain's rules array, of exactly that size, when it was empty); flushed before any other line.
  private pendChain: Chain | null = null;
  private readonly pend: Rule[] = [];

  constructor(private readonly text: string, private readonly opts: ImportOptions, readonly file: string) {
    this.fast = opts.fastPath === false ? null : new FastRuleParser(text, this.refs, this.caches);
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
    if (BUILTIN_CHAINS[cur.t.name].includes(name)) return false;
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
      const builtin = BUILTIN_CHAINS[cur.t.name].includes(name);
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

/** Parses an iptables-save dump (or kube-proxy restore input) into the rule IR. */
export function importIptablesSave(text: string, options: ImportOptions | string = {}): ImportResult {
  const opts: ImportOptions = typeof options === 'string' ? { file: options } : options;
  const file = opts.file ? `${opts.file}: ` : '';
  const imp = new Importer(text, opts, file);
  imp.run();
  const skipped = opts.kubeChainsOnly ? imp.dropForeign() : [];
  const tables = imp.tables;
  const jumps = tables.map((t, ti) => tableJumps(t, imp.tableChains[ti], file, !opts.kubeChainsOnly));
  const { services, mark } = attachServices(tables, jumps, imp.refs);
  const rules: RuleSet = { tables, services, meta: { proxyVersion: 'imported', nodeName: '', masqueradeMark: mark, bareHostAddresses: imp.caches.sawBareHost } };
  return { ...rules, rules, skipped };
}
