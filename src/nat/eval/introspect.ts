// What a compiled matcher holds, for people and metrics: rules by global index, hit counters, a
// summary line. Not for the hot path (these allocate).
import { formatIPv4 } from '../ip';
import { Rule, TableName } from '../rules/ir';
import { renderRule } from '../rules/render';
import { CompiledRules } from './compile';

export interface RuleDescription {
  table: TableName;
  chain: string;
  /** 1-based position in the chain, as `iptables -L --line-numbers` and TRACE show it. */
  ruleNum: number;
  text: string;
}

export interface RuleCounter { table: TableName; chain: string; ruleNum: number; hits: number }

/** The chain holding rule `ref` now, or -1 (out of range, or garbage left by an incremental sync). */
function liveChain(c: CompiledRules, ref: number): number {
  if (ref < 0 || ref >= c.usedRules) return -1;
  const ci = c.rChain[ref];
  return ref >= c.cStart[ci] && ref < c.cEnd[ci] ? ci : -1;
}

export function describeRule(c: CompiledRules, ref: number): RuleDescription | null {
  const ci = liveChain(c, ref);
  if (ci < 0) return null;
  return { table: c.chainTable[ci], chain: c.chainNames[ci], ruleNum: ref - c.cStart[ci] + 1, text: renderRule(c.chainNames[ci], ruleAt(c, ref), { format: 'iptables-save' }) };
}

/** The IR rule behind a global rule index. */
export function ruleAt(c: CompiledRules, ref: number): Rule {
  const ci = liveChain(c, ref);
  if (ci < 0) throw new RangeError(`rule ${ref}`);
  return c.chainRules[ci][ref - c.cStart[ci]];
}

/** "namespace/name:port/protocol" of a service ref, null for -1 (or out of range). */
export function serviceName(c: CompiledRules, ref: number): string | null {
  return ref >= 0 && ref < c.services.length ? `${c.services[ref].name}/${c.services[ref].protocol}` : null;
}

/** Rules with non-zero hit counters. */
export function ruleCounters(c: CompiledRules): RuleCounter[] {
  const out: RuleCounter[] = [];
  for (let ci = 0; ci < c.chainCount; ci++) for (let k = c.cStart[ci]; k < c.cEnd[ci]; k++) {
    if (c.hits[k] === 0) continue;
    out.push({ table: c.chainTable[ci], chain: c.chainNames[ci], ruleNum: k - c.cStart[ci] + 1, hits: c.hits[k] });
  }
  return out;
}

/** One line: sizes of the tables and the index, local addresses, jump depth, compile time. */
export function describeRules(c: CompiledRules): string {
  let indexed = 0, generic = 0;
  for (let ci = 0; ci < c.chainCount; ci++) if (c.cIdxGenStart[ci] >= 0) { indexed++; generic += c.cIdxGenEnd[ci] - c.cIdxGenStart[ci]; }
  const local = Array.from(c.local, formatIPv4).join(', ');
  return `${c.ruleCount} rules in ${c.chainCount} chains (${indexed} indexed, ${generic} unindexed rules in them, `
    + `${c.hMask + 1} index slots), ${c.services.length} service ports, ${c.recentTables.length} recent tables, `
    + `local addresses [${local}] + 127.0.0.0/8, max jump depth ${c.maxDepth}, compiled in ${c.compileMs.toFixed(1)} ms`;
}
