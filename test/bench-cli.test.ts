// The bench's command line and report details that need no lab: usage errors, round chart ticks,
// the README refresh between markers.
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import fc from 'fast-check';
import { REPO_ROOT } from '../scripts/lab';
import { niceAxis } from '../scripts/bench/report';
import { publishToReadme } from '../scripts/bench';

const BENCH = path.join(REPO_ROOT, 'dist', 'scripts', 'bench.js');

describe('bench command line', () => {
  for (const [args, msg] of [
    [['--quik'], 'Unknown option "--quik"'],
    [['--reps', 'x'], '--reps: "x" is not a whole number'],
    [['--only', 'bulky'], 'unknown case "bulky"'],
    [['--publish', '--out', '/tmp/x'], '--publish writes to bench/results'],
  ] as const) {
    it(`${args.join(' ')} is a usage error (exit 2), not a stack trace`, () => {
      const r = spawnSync(process.execPath, [BENCH, ...args], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }
});

describe('bench chart axis', () => {
  it('ticks are 1, 2, 2.5 or 5 times a power of ten and cover the tallest bar with room', () => {
    fc.assert(fc.property(fc.double({ min: 1e-3, max: 1e7, noNaN: true }), (max) => {
      const { top, step } = niceAxis(max);
      const mant = step / 10 ** Math.floor(Math.log10(step) + 1e-12);
      expect([1, 2, 2.5, 5].some((m) => Math.abs(mant - m) < 1e-9)).toBe(true);
      expect(top).toBeGreaterThanOrEqual(max * 1.12 * (1 - 1e-12));
      const steps = top / step;
      expect(Math.abs(steps - Math.round(steps))).toBeLessThan(1e-6);
      expect(steps).toBeGreaterThanOrEqual(3);
      expect(steps).toBeLessThanOrEqual(9);
    }), { seed: 20261202, numRuns: 2000 });
    expect(niceAxis(9.14)).toEqual({ top: 15, step: 5 });
    expect(niceAxis(5467)).toEqual({ top: 8000, step: 2000 });
  });
});

describe('bench --publish', () => {
  it('replaces only the text between the markers of its mode', () => {
    const readme = 'a\n<!-- bench:full -->\nold\n<!-- /bench:full -->\nb\n<!-- bench:quick -->\nq\n<!-- /bench:quick -->\n';
    expect(publishToReadme(readme, 'full', '| new |')).toBe('a\n<!-- bench:full -->\n| new |\n<!-- /bench:full -->\nb\n<!-- bench:quick -->\nq\n<!-- /bench:quick -->\n');
    expect(publishToReadme('no markers', 'full', 'x')).toBeNull();
  });
});
