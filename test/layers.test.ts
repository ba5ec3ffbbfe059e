// The layering rules (.dependency-cruiser.cjs) hold on the real tree, and the checker really fails on
// a forbidden import: a deliberately bad fixture tree must produce every violation, by rule name.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const CONFIG = path.join(ROOT, '.dependency-cruiser.cjs');
const BIN = path.join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation { rule: string; from: string; to: string; cycle: string[] }

/** Run the checker on `src` of the tree at `dir` (paths in the rules are relative to it). */
function cruise(dir: string): Violation[] {
  const out = execFileSync(process.execPath, [BIN, '--config', CONFIG, '--output-type', 'json', 'src'],
    { cwd: dir, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 60_000 });
  const res = JSON.parse(out) as {
    summary: { violations: { rule: { name: string }; from: string; to: string; cycle?: { name: string }[] }[] };
  };
  return res.summary.violations.map((v) => ({ rule: v.rule.name, from: v.from, to: v.to, cycle: (v.cycle ?? []).map((c) => c.name) }));
}

const show = (vs: Violation[]) => vs.map((v) => `${v.rule}: ${v.from} -> ${v.to}${v.cycle.length ? ` (cycle ${v.cycle.join(' -> ')})` : ''}`).join('\n');

describe('layering rules (dependency-cruiser)', () => {
  it('the real src tree keeps every rule', () => {
    const all = cruise(ROOT);
    expect(show(all)).toBe('');
  });

  it('a deliberately bad tree fails with each rule named, and allowed imports pass', () => {
    const got = cruise(path.join(__dirname, 'fixtures', 'layers-bad'));
    const pairs = got.map((v) => `${v.rule}: ${v.from} -> ${v.to}`).sort();
    expect(pairs).toEqual([
      'lib-leaf: src/lib/pool.ts -> src/nat/rules.ts',
      'lower-not-upper: src/conntrack/table.ts -> src/datapath/pipeline.ts',
      'lower-not-upper: src/io/tun.ts -> src/daemon.ts',
      'netstack-no-node: src/netstack/codec.ts -> fs',
      'netstack-pure: src/netstack/codec.ts -> src/conntrack/table.ts',
      'no-cycle: src/ops/a.ts -> src/ops/b.ts',
      'resolvable: src/control/sync.ts -> ./no-such-module',
      'src-not-scripts-or-test: src/nat/rules.ts -> scripts/tool.ts',
    ].sort());
    // The import cycle is reported with its members.
    expect(got.find((v) => v.rule === 'no-cycle')!.cycle).toEqual(['src/ops/b.ts', 'src/ops/a.ts']);
  });
});
