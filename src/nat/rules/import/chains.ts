// The chains of one table while a dump is read, and the table's jump graph once it is complete.
import { Chain, Rule, Table, Target } from '../ir';
import { ImportError, KNOWN_TARGET_EXTENSIONS } from './general';

/** kube-proxy's chains (what kubeChainsOnly keeps, and where comments name services). */
export function isKubeChain(name: string): boolean {
  return name.startsWith('KUBE-');
}

/**
 * The chains of one table by name. Entry ids are stable; parallel arrays hold each entry's name,
 * chain (null once deleted by -X), shared jump target, and the line of each of the chain's rules
 * (lineFirst + k while they come from consecutive lines, else lineList) for error messages.
 */
export class ChainTable {
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
/**
 * Jump targets must exist; extension targets we do not model are refused here. Returns the
 * table's jumps (chain position, rule index, target position) for attachServices.
 */
export function tableJumps(t: Table, ct: ChainTable, file: string, exact: boolean): TableJumps {
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
/** A table's n jump/goto rules in table order: position of their chain, the rule, position of the target chain. */
export interface TableJumps { n: number; from: Int32Array; rules: Rule[]; to: Int32Array }
