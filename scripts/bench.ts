// `npm run bench [-- --quick | --tiny] [--only case,case] [--reps N] [--out DIR]`
//
// kube-tun against kernel netfilter in twin labs (scripts/bench/env.ts), every case on every side,
// alternating A/B/A/B, medians and spreads, each sample's path verified by counters. Writes
// <out>/<date>-<host>[-mode].json (raw samples, versions, kernel, CPUs), .md (table) and .svg (chart),
// and copies them to <out>/latest[-mode].*.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT, IptablesBackend, renderKernelRules } from './lab';
import { BenchEnv, CLI, PROBE, BASE_CONFIGS, collectStaleBenchLabs } from './bench/env';
import { Ctx, Params, connRate, bulk, udp, latency, crossNode, offload, memory, scaleCase, scaleStep, rulesCase, rulesStep } from './bench/cases';
import { BenchResult, CaseResult } from './bench/results';
import { markdown, svg } from './bench/report';
import { killAllRunning, tryText, abort } from './bench/exec';

export const CASES = ['conn-rate', 'bulk', 'udp', 'latency', 'rules', 'memory', 'scale', 'cross-node', 'offload'] as const;
type CaseId = (typeof CASES)[number];

const USAGE = `usage: npm run bench -- [--quick | --tiny] [--only CASE[,CASE…]] [--reps N] [--backends legacy,nft] [--out DIR] [--no-latest]
                          [--publish] [--self-test wrong-path]
  cases: ${CASES.join(', ')}
  --quick   smoke run, under 5 minutes     --tiny   seconds; 1 repetition, tiny loads (test/bench.test.ts)
  default   full run, under 30 minutes
  --out DIR   where the results go (default bench/runs/, not tracked by git)
  --publish   write them to bench/results/ (tracked) and refresh the README's table of this mode
  --self-test wrong-path   leave kernel NAT rules on the kube-tun side: the run must fail its path checks
`;

/** The README's bench tables sit between these markers, one pair per mode ("full", "quick"). */
export const README_MARKERS = (mode: string) => [`<!-- bench:${mode} -->`, `<!-- /bench:${mode} -->`] as const;

/** Put `md` between the README's markers of this mode; false when the README has no such markers. */
export function publishToReadme(readme: string, mode: string, md: string): string | null {
  const [open, close] = README_MARKERS(mode);
  const a = readme.indexOf(open), b = readme.indexOf(close);
  if (a < 0 || b < a) return null;
  return `${readme.slice(0, a + open.length)}\n${md.trim()}\n${readme.slice(b)}`;
}

export function paramsFor(mode: 'full' | 'quick' | 'tiny'): Params {
  const common = { concurrency: 50, floodRate: 40_000, backends: ['legacy', 'nft'] as IptablesBackend[] };
  if (mode === 'tiny') {
    return { ...common, mode, reps: 1, backends: ['legacy'], tunDirect: false, connSeconds: 1, bulkSeconds: 1, bulkStreams: [1], udpSeconds: 1,
      rrCount: 200, crossSeconds: 1, scaleNs: [100], scaleConnSeconds: 1, connectCount: 50, rulesNs: [100], memTargets: [2000],
      memKernelTarget: 2000, floodRate: 20_000 };
  }
  if (mode === 'quick') {
    // ~4 minutes: short loads, no TUN-only baseline, the scale case at 10,000 services only (the
    // connection-rate case is its few-services point), rule updates at 1,000 services.
    return { ...common, mode, reps: 3, tunDirect: false, connSeconds: 2, bulkSeconds: 2, bulkStreams: [1, 4], udpSeconds: 1, rrCount: 1000,
      crossSeconds: 1, scaleNs: [10_000], scaleConnSeconds: 2, connectCount: 200, rulesNs: [1000], memTargets: [100_000],
      memKernelTarget: 100_000 };
  }
  return { ...common, mode, reps: 3, tunDirect: true, connSeconds: 8, bulkSeconds: 6, bulkStreams: [1, 4], udpSeconds: 5, rrCount: 5000,
    crossSeconds: 5, scaleNs: [1, 1000, 10_000, 50_000], scaleConnSeconds: 4, connectCount: 1000, rulesNs: [1000, 10_000],
    memTargets: [100_000, 1_000_000], memKernelTarget: 100_000 };
}

function versions(): Record<string, string> {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
  const git = tryText('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = tryText('git', ['-C', REPO_ROOT, 'status', '--porcelain']) ? '+dirty' : '';
  return {
    'kube-tun': `${pkg.version} (${git}${dirty})`,
    node: process.version,
    v8: process.versions.v8,
    iperf3: tryText('iperf3', ['-v']).split('\n')[0],
    ab: tryText('ab', ['-V']).split('\n')[0],
    'iptables-legacy': tryText('iptables-legacy', ['-V']),
    'iptables-nft': tryText('iptables-nft', ['-V']),
    nginx: tryText('nginx', ['-v']),
    conntrack: tryText('conntrack', ['--version']),
    iproute2: tryText('ip', ['-V']),
  };
}

function hostInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(), kernel: os.release(), arch: os.arch(), cpus: cpus.length, cpuModel: cpus[0]?.model?.trim() ?? '?',
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)).join(' '),
    nfConntrackMax: tryText('cat', ['/proc/sys/net/netfilter/nf_conntrack_max']),
    osRelease: /PRETTY_NAME="([^"]+)"/.exec(tryText('cat', ['/etc/os-release']))?.[1] ?? '',
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' }, tiny: { type: 'boolean' }, only: { type: 'string', multiple: true }, reps: { type: 'string' },
      backends: { type: 'string' }, out: { type: 'string' }, 'no-latest': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      'self-test': { type: 'string' }, publish: { type: 'boolean' },
    },
    strict: true, allowPositionals: false,
  });
}

export async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse(argv).values;
  } catch (e: any) {
    // A typo in a flag is a usage error, not a stack trace.
    process.stderr.write(`bench: ${String(e.message).split('. ')[0].replace(/'/g, '"')}\n${USAGE}`);
    return 2;
  }
  if (values.help) { process.stdout.write(USAGE); return 0; }
  if (values.publish && values.out) { process.stderr.write('bench: --publish writes to bench/results; it does not take --out\n'); return 2; }
  if (values.reps !== undefined && !/^[1-9][0-9]{0,2}$/.test(values.reps)) {
    process.stderr.write(`bench: --reps: "${values.reps}" is not a whole number from 1 to 999\n`);
    return 2;
  }
  if (process.getuid && process.getuid() !== 0) { process.stderr.write('bench: needs root (network namespaces, TUN, iptables)\n'); return 2; }
  for (const f of [CLI, PROBE]) if (!fs.existsSync(f)) { process.stderr.write(`bench: ${f} missing; run \`npm run build\`\n`); return 2; }
  const mode = values.tiny ? 'tiny' : values.quick ? 'quick' : 'full';
  const p = paramsFor(mode);
  if (values.reps) p.reps = Number(values.reps);
  if (values.backends) p.backends = values.backends.split(',').map((b) => b.trim()) as IptablesBackend[];
  for (const b of p.backends) if (b !== 'legacy' && b !== 'nft') { process.stderr.write(`bench: unknown backend ${b}\n`); return 2; }
  const only = new Set<CaseId>();
  for (const o of values.only ?? []) for (const c of o.split(',')) {
    if (!(CASES as readonly string[]).includes(c.trim())) { process.stderr.write(`bench: unknown case "${c}"\n${USAGE}`); return 2; }
    only.add(c.trim() as CaseId);
  }
  if (values['self-test'] !== undefined && values['self-test'] !== 'wrong-path') { process.stderr.write(`bench: unknown self-test "${values['self-test']}"\n`); return 2; }
  const want = (c: CaseId) => only.size === 0 || only.has(c);
  const outDir = path.resolve(values.out ?? path.join(REPO_ROOT, 'bench', values.publish ? 'results' : 'runs'));
  fs.mkdirSync(outDir, { recursive: true });

  const t0 = Date.now();
  const log = (s: string) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
  const stale = collectStaleBenchLabs();
  if (stale.length) log(`removed labs of earlier bench runs that died: ${stale.join(', ')}`);
  const env = new BenchEnv(p.backends, log);
  let tornDown: Promise<void> | undefined;
  const teardown = () => {
    if (!tornDown) {
      killAllRunning();
      tornDown = env.destroy();
    }
    return tornDown;
  };
  let interrupted = false;
  const onSignal = (sig: string) => {
    interrupted = true;
    process.stderr.write(`\nbench: ${sig}: stopping loads and tearing the labs down\n`);
    void teardown().finally(() => process.exit(130));
  };
  const onInt = () => onSignal('SIGINT'), onTerm = () => onSignal('SIGTERM'), onHup = () => onSignal('SIGHUP');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  process.on('SIGHUP', onHup);

  const result: BenchResult = {
    tool: 'kube-tun bench', schema: 1, mode, command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    startedAt: new Date().toISOString(), finishedAt: '', seconds: 0, host: hostInfo(), versions: versions(),
    params: { ...p }, labs: {}, cases: [], ok: false, failures: [],
  };
  const byId = new Map<string, CaseResult>();
  try {
    log(`kube-tun bench, ${mode} run: ${[...CASES].filter(want).join(', ')}; ${p.reps} rep(s); kernel backends ${p.backends.join(', ')}`);
    await env.build();
    if (values['self-test'] === 'wrong-path') {
      // Harness self-test (test/bench.test.ts): kube-proxy's rules left on the kube-tun side's node
      // make the kernel DNAT before kube-tun sees the packets; the kube-tun samples must fail their
      // path check instead of reporting the kernel's figures as kube-tun's.
      env.kt.loadKernelRules('worker-1', renderKernelRules('worker-1', BASE_CONFIGS), { backend: 'legacy' });
      log('self-test: kernel NAT rules loaded into the kube-tun lab; its samples must fail the path check');
    }
    result.labs = { 'kube-tun': env.kt.prefix, ...Object.fromEntries(Object.entries(env.kernel).map(([b, l]) => [`kernel-${b}`, l!.prefix])) };
    const ctx: Ctx = { env, p, log };
    if (want('conn-rate')) byId.set('conn-rate', await connRate(ctx));
    if (want('bulk')) byId.set('bulk', await bulk(ctx));
    if (want('udp')) byId.set('udp', await udp(ctx));
    if (want('latency')) byId.set('latency', await latency(ctx));
    if (want('cross-node')) byId.set('cross-node', await crossNode(ctx));
    if (want('offload')) byId.set('offload', await offload(ctx));
    if (want('memory')) byId.set('memory', await memory(ctx));
    if (want('scale') || want('rules')) {
      const sc = want('scale') ? scaleCase(ctx) : undefined, rc = want('rules') ? rulesCase(ctx) : undefined;
      if (sc) byId.set('scale', sc);
      if (rc) byId.set('rules', rc);
      const ns = [...new Set([...(sc ? p.scaleNs : []), ...(rc ? p.rulesNs : [])])].sort((a, b) => a - b);
      for (const n of ns) {
        if (sc && p.scaleNs.includes(n)) await scaleStep(ctx, sc, n);
        if (rc && p.rulesNs.includes(n)) await rulesStep(ctx, rc, n);
      }
    }
  } catch (e: any) {
    result.failures.push(`harness: ${e?.stack ?? e}`);
    log(`!! ${e?.stack ?? e}`);
  } finally {
    log('tearing the labs down');
    await teardown();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.off('SIGHUP', onHup);
  }
  if (abort.requested && interrupted) {
    process.stderr.write('bench: interrupted; no results written\n');
    return 130;
  }
  result.cases = CASES.filter((c) => byId.has(c)).map((c) => byId.get(c)!);
  for (const c of result.cases) if (c.error) result.failures.push(`${c.id}: ${c.error}`);
  result.ok = result.failures.length === 0 && result.cases.length > 0;
  result.finishedAt = new Date().toISOString();
  result.seconds = (Date.now() - t0) / 1000;

  const stamp = result.startedAt.slice(0, 16).replace(/:/g, '');   // 2026-11-24T0805
  const base = `${stamp}-${os.hostname()}${mode === 'full' ? '' : `-${mode}`}`;
  const md = markdown(result), chart = svg(result);
  const files = { json: path.join(outDir, `${base}.json`), md: path.join(outDir, `${base}.md`), svg: path.join(outDir, `${base}.svg`) };
  fs.writeFileSync(files.json, JSON.stringify(result, null, 1) + '\n');
  fs.writeFileSync(files.md, `${md}\n![kube-tun vs kernel](${path.basename(files.svg)})\n`);
  fs.writeFileSync(files.svg, chart);
  if (!values['no-latest'] && !values['self-test'] && mode !== 'tiny') {
    const latest = `latest${mode === 'full' ? '' : `-${mode}`}`;
    for (const [ext, f] of Object.entries(files)) fs.copyFileSync(f, path.join(outDir, `${latest}.${ext}`));
  }
  process.stdout.write('\n' + md + '\n');
  log(`wrote ${files.json}, ${path.basename(files.md)}, ${path.basename(files.svg)}`);
  if (values.publish && result.ok) {
    const readmeFile = path.join(REPO_ROOT, 'README.md');
    const table = md.split('\n').filter((l) => l.startsWith('|')).join('\n');
    const block = `${table}\n\nCommand: \`${result.command}\`, ${result.startedAt.slice(0, 10)}. Notes: [bench/results/${base}.md](bench/results/${base}.md), chart:\n\n![kube-tun vs kernel netfilter, ${mode} run](bench/results/${base}.svg)`;
    const next = publishToReadme(fs.readFileSync(readmeFile, 'utf8'), mode, block);
    if (next === null) log(`README.md has no ${README_MARKERS(mode).join(' … ')} markers: table not refreshed`);
    else { fs.writeFileSync(readmeFile, next); log(`README.md: ${mode} table refreshed`); }
  }
  if (!result.ok) {
    process.stderr.write(`bench: FAILED — ${result.failures.length} problem(s):\n${result.failures.map((f) => `  - ${f.split('\n')[0]}`).join('\n')}\n`);
    return 1;
  }
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
    process.stderr.write(`bench: ${e?.stack ?? e}\n`);
    process.exitCode = 1;
  });
}
