// Issue 5: `npm run bench` keeps working. The harness runs for real in its tiny mode (twin labs,
// every case, one repetition, loads of about a second) and must produce the JSON, the Markdown
// table and the SVG chart, with every sample's path verified; a run whose kube-tun side secretly
// went through kernel NAT must fail loudly. Plus the pure pieces (statistics, rule diffs, parsers,
// the chart) on fixed input.
import { describe, it, expect } from 'vitest';
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from '../scripts/lab';
import { summarize, median } from '../scripts/bench/stats';
import { partialRestore, fullSyncRestore, countRules } from '../scripts/bench/rules-diff';
import { parseAb, parseIperf } from '../scripts/bench/tools';
import { markdown, svg } from '../scripts/bench/report';
import { BenchResult, newCase, summarizeCase } from '../scripts/bench/results';
import { CASES } from '../scripts/bench';

const BENCH = path.join(REPO_ROOT, 'dist', 'scripts', 'bench.js');

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);

function outputs(dir: string): { json: BenchResult; md: string; svg: string } {
  const files = fs.readdirSync(dir);
  const one = (ext: string) => {
    const f = files.filter((x) => x.endsWith(`-tiny.${ext}`));
    expect(f, `one .${ext} in ${dir}: ${files.join(', ')}`).toHaveLength(1);
    return fs.readFileSync(path.join(dir, f[0]), 'utf8');
  };
  return { json: JSON.parse(one('json')), md: one('md'), svg: one('svg') };
}

describe('npm run bench -- --tiny', () => {
  it('runs every case on both sides and writes the JSON, the table and the chart', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-tun-bench-'));
    try {
      const { code, out } = await runBench(['--tiny', '--out', dir], 280_000);
      expect(code, out.slice(-4000)).toBe(0);
      const { json, md, svg: chart } = outputs(dir);
      expect(json.ok).toBe(true);
      expect(json.failures).toEqual([]);
      expect(json.mode).toBe('tiny');
      expect(json.host.cpus).toBeGreaterThan(0);
      expect(json.host.kernel).toBe(os.release());
      expect(json.versions.node).toBe(process.version);
      expect(json.versions['kube-tun']).toMatch(/^\d+\.\d+\.\d+/);
      expect(json.cases.map((c) => c.id)).toEqual([...CASES]);
      for (const c of json.cases) {
        expect(c.error, c.id).toBeUndefined();
        for (const v of ['kube-tun', 'kernel-legacy'] as const) {
          const mine = c.samples.filter((s) => s.variant === v);
          expect(mine.length, `${c.id} ${v}`).toBeGreaterThan(0);
          // Every sample says how its path was verified.
          for (const s of mine) expect(s.check, `${c.id} ${v}`).toMatch(v === 'kube-tun' ? /kube-tun worker-\d/ : /iptables-legacy/);
        }
        expect(c.summary.length, c.id).toBeGreaterThan(0);
      }
      // The traffic cases carry their direct baseline, and kube-tun's DNATs were counted.
      const conn = json.cases.find((c) => c.id === 'conn-rate')!;
      expect(conn.samples.some((s) => s.variant === 'direct' && s.values.connPerSec > 0)).toBe(true);
      expect(conn.samples.find((s) => s.variant === 'kube-tun')!.check).toMatch(/\+\d+ DNAT/);
      const cross = json.cases.find((c) => c.id === 'cross-node')!;
      expect(cross.samples.find((s) => s.variant === 'kube-tun')!.check).toMatch(/IPIP out/);
      // Table and chart.
      expect(md).toMatch(/^\| case \| \| metric \| kube-tun \| kernel \(legacy\) \|/m);
      for (const c of json.cases) expect(md).toContain(`**${c.title}**`);
      expect(chart.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
      expect(chart.trim().endsWith('</svg>')).toBe(true);
      expect((chart.match(/<rect [^>]*><title>/g) ?? []).length).toBeGreaterThan(10);
      // The labs are gone.
      for (const prefix of Object.values(json.labs)) expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('fails loudly when the kube-tun side went through kernel NAT instead', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-tun-bench-'));
    try {
      const { code, out } = await runBench(['--tiny', '--only', 'conn-rate', '--self-test', 'wrong-path', '--out', dir], 120_000);
      expect(code, out.slice(-3000)).toBe(1);
      const { json, md } = outputs(dir);
      expect(json.ok).toBe(false);
      const c = json.cases.find((x) => x.id === 'conn-rate')!;
      expect(c.error).toMatch(/^wrong path: kube-tun did not go through kube-tun/);
      expect(md).toContain('FAILED');
      for (const prefix of Object.values(json.labs)) expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});

describe('bench pieces', () => {
  it('summarizes samples: median, min, max, spread', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const s = summarize([100, 90, 110]);
    expect(s).toMatchObject({ n: 3, median: 100, min: 90, max: 110, spreadPct: 20 });
    expect(summarize([]).n).toBe(0);
  });

  it('turns one ruleset into another touching only the changed chains, like kube-proxy\'s partial sync', () => {
    const base = ['*nat', ':PREROUTING ACCEPT [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-1 - [0:0]', ':KUBE-SEP-OLD - [0:0]',
      '-A PREROUTING -j KUBE-SERVICES', '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A',
      '-A KUBE-SVC-A -j KUBE-SEP-1', '-A KUBE-SEP-1 -p tcp -j DNAT --to-destination 10.1.0.1:80', '-A KUBE-SEP-OLD -j RETURN', 'COMMIT', ''].join('\n');
    const next = ['*nat', ':PREROUTING ACCEPT [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-1 - [0:0]', ':KUBE-SEP-2 - [0:0]',
      '-A PREROUTING -j KUBE-SERVICES', '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A',
      '-A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-1', '-A KUBE-SVC-A -j KUBE-SEP-2',
      '-A KUBE-SEP-1 -p tcp -j DNAT --to-destination 10.1.0.1:80', '-A KUBE-SEP-2 -p tcp -j DNAT --to-destination 10.1.0.2:80', 'COMMIT', ''].join('\n');
    const d = partialRestore(base, next);
    expect(d.changed).toEqual(['nat/KUBE-SVC-A', 'nat/KUBE-SEP-2']);
    expect(d.deleted).toEqual(['nat/KUBE-SEP-OLD']);
    expect(d.text).toBe(['*nat', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-2 - [0:0]', ':KUBE-SEP-OLD - [0:0]',
      '-A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-1', '-A KUBE-SVC-A -j KUBE-SEP-2',
      '-A KUBE-SEP-2 -p tcp -j DNAT --to-destination 10.1.0.2:80', '-X KUBE-SEP-OLD', 'COMMIT', ''].join('\n'));
    const full = fullSyncRestore(next);
    expect(full).not.toMatch(/PREROUTING/);   // jump rules are not appended again on every sync
    expect(countRules(full)).toBe(countRules(next) - 1);
  });

  it('parses ab and iperf3 output', () => {
    const ab = parseAb(['Complete requests:      3525', 'Failed requests:        2', 'Requests per second:    1595.56 [#/sec] (mean)',
      'Time taken for tests:   2.209 seconds', 'Time per request:       31.337 [ms] (mean)', '  50%      5', '  66%      6', '  99%   1008', ' 100%   1020 (longest request)'].join('\n'));
    expect(ab).toMatchObject({ complete: 3525, failed: 2, rps: 1595.56, p50Ms: 5, p99Ms: 1008, non2xx: 0 });
    expect(() => parseAb('apr_socket_recv: Connection refused (111)')).toThrow(/cannot parse/);
    const tcp = parseIperf({ end: { sum_sent: { bytes: 2e9, retransmits: 7, seconds: 2 }, sum_received: { bits_per_second: 8e9, seconds: 2 } } }, false);
    expect(tcp).toMatchObject({ gbps: 8, bytes: 2e9, retransmits: 7 });
    const udp = parseIperf({ end: { sum: { bytes: 6.4e6, seconds: 2, packets: 100_000, lost_packets: 25_000, bits_per_second: 1e8 } } }, true);
    expect(udp.pps).toBe(37_500);
    expect(udp.lossPct).toBe(25);
  });

  it('draws bars with error bars and a table with medians, spreads and the ratio', () => {
    const c = newCase('conn-rate', 'Connection rate', 'x', [{ key: 'cps', label: 'connections/s', unit: 'conn/s', better: 'higher', chart: true }], ['kube-tun', 'kernel-legacy']);
    c.groups.push('g');
    for (const [v, xs] of [['kube-tun', [50, 60, 70]], ['kernel-legacy', [100, 110, 120]]] as const) {
      xs.forEach((x, rep) => c.samples.push({ variant: v, group: 'g', rep, values: { cps: x }, check: 'ok', at: '', load1: 0 }));
    }
    summarizeCase(c);
    const r: BenchResult = { tool: 'kube-tun bench', schema: 1, mode: 'quick', command: 'npm run bench -- --quick', startedAt: '2026-01-01T00:00:00Z',
      finishedAt: '', seconds: 1, host: { hostname: 'h', cpus: 2, cpuModel: 'cpu', memGiB: 1, kernel: 'k', loadavgAtStart: '0' }, versions: { node: 'v20', 'kube-tun': '0.1.0' },
      params: { reps: 3 }, labs: {}, cases: [c], ok: true, failures: [] };
    const md = markdown(r);
    expect(md).toContain('| **Connection rate** | g | connections/s (conn/s) ↑ | 60.0 <sub>50.0–70.0</sub> | 110 <sub>100–120</sub> | 0.545× |');
    const s = svg(r);
    expect((s.match(/<rect [^>]*><title>/g) ?? []).length).toBe(2);
    expect((s.match(/stroke-width="1.2"/g) ?? []).length).toBe(6);   // an error bar is three lines
  });
});
