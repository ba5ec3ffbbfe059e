// Start kube-tun (the compiled CLI) inside a lab node namespace and talk to it.
import { execFileSync, ChildProcess } from 'node:child_process';
import { beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { Lab, LAB_CONFIG, REPO_ROOT, NodeName, NODES } from '../../scripts/lab';
import { waitFor } from './wait';

export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export interface RunningDaemon {
  node: NodeName; socket: string; logFile: string; child: ChildProcess;
  cli(args: string[]): string;
  log(): string;
  stop(): Promise<void>;
}

/** `--offload` values the lab scenarios run with (describe.each over them). */
export const OFFLOAD_MODES = ['on', 'off'] as const;
export type OffloadMode = (typeof OFFLOAD_MODES)[number];

/**
 * Starts kube-tun on `node`; with `offload`, passes --offload and checks from the daemon's log that
 * the mode took effect (the TUN has the vnet header exactly when offload is on).
 */
export async function startKubeTun(lab: Lab, node: NodeName, extra: string[] = [], config = LAB_CONFIG, offload?: OffloadMode): Promise<RunningDaemon> {
  const d = await spawnKubeTun(lab, node, offload === undefined ? extra : ['--offload', offload, ...extra], config);
  if (offload !== undefined) {
    const open = d.log().split('\n').reverse().find((l) => l.includes('"msg":"tun device open"'));
    const rec = open === undefined ? undefined : JSON.parse(open);
    if (rec?.offload !== offload || rec?.vnetHdr !== (offload === 'on')) {
      await d.stop();
      throw new Error(`kube-tun on ${node}: --offload ${offload} did not take effect: ${open}`);
    }
  }
  return d;
}

async function spawnKubeTun(lab: Lab, node: NodeName, extra: string[], config: string): Promise<RunningDaemon> {
  const short = NODES.find((n) => n.name === node)!.short;
  const socket = path.join(lab.dir, `${short}.sock`);
  const logFile = path.join(lab.dir, `kube-tun-${short}.log`);
  // Readiness the way a service manager gets it: `--ready-fd 3` writes READY=1 and closes the fd once
  // the TUN, routing and servers are up; EOF without it means the daemon died first.
  const child = lab.spawn(lab.nodeNs(node), [process.execPath, CLI, 'run', '--config', config, '--hostname-override', node,
    '--tun', 'kt0', '--control-socket', socket, '--log-level', 'debug', '--ready-fd', '3', ...extra], { logFile, fd3Pipe: true });
  const exited = () => child.exitCode !== null || child.signalCode !== null; // a signalled process has exitCode null
  const d: RunningDaemon = {
    node, socket, logFile, child,
    cli: (args) => execFileSync(process.execPath, [CLI, ...args, '--control-socket', socket], { encoding: 'utf8' }),
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    stop: async () => {
      if (exited()) return;
      child.kill('SIGTERM');
      // Wait for the routing teardown to finish: a restart must not race the old instance's cleanup.
      try {
        await waitFor(`kube-tun on ${node} to exit after SIGTERM`, exited, 10_000);
      } catch {
        child.kill('SIGKILL');
        throw new Error(`kube-tun on ${node} did not stop within 10 s of SIGTERM:\n${d.log().slice(-2000)}`);
      }
    },
  };
  const ready = child.stdio[3] as Readable;
  let said = '';
  const outcome = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('not ready after 30 s'), 30_000);
    ready.on('data', (b: Buffer) => { said += b.toString(); });
    ready.on('end', () => { clearTimeout(timer); resolve(said === 'READY=1\n' ? 'ready' : `closed its ready fd after ${JSON.stringify(said)}`); });
  });
  if (outcome === 'ready') return d;
  if (!exited()) child.kill('SIGKILL');
  throw new Error(`kube-tun on ${node} ${outcome} (exit ${child.exitCode ?? child.signalCode ?? 'pending'}):\n${d.log()}`);
}

/**
 * A file of `bytes` random bytes at `file` (for nginx to serve) and its sha256. Written by the
 * kernel's generator and hashed by sha256sum: a 1 GB file never passes through this process.
 */
export function randomFile(file: string, bytes: number): string {
  execFileSync('sh', ['-c', `head -c ${bytes} /dev/urandom > "$1"`, 'sh', file]);
  return execFileSync('sha256sum', [file], { encoding: 'utf8' }).split(' ')[0];
}

/**
 * A random file of `bytes` for this test file: made in beforeAll, removed in afterAll; `sha` is its
 * sha256 once made. `tag` keeps files of test files that share a process apart.
 */
export function bigFileFixture(tag: string, bytes: number): { file: string; sha: string } {
  const f = { file: path.join(os.tmpdir(), `kube-tun-${tag}-${process.pid}.bin`), sha: '' };
  beforeAll(() => { f.sha = randomFile(f.file, bytes); }, 60_000);
  afterAll(() => fs.rmSync(f.file, { force: true }));
  return f;
}

/**
 * Serves `file` as /blob from nginx1 and nginx2 (hard links into the lab's nginx directories) and
 * returns the sha256 of what `curl` downloads from `url` inside namespace `ns` (bounded by maxTimeS).
 */
export function downloadBlobSha256(lab: Lab, file: string, ns: string, url: string, maxTimeS: number): string {
  for (const p of ['nginx1', 'nginx2']) {
    const blob = path.join(lab.dir, p, 'blob'); // the file the lab's nginx serves at /blob
    fs.rmSync(blob, { force: true });
    fs.linkSync(file, blob);
  }
  return lab.exec(ns, ['sh', '-c', `curl -sf --max-time ${maxTimeS} "$1" | sha256sum`, 'sh', url]).split(' ')[0];
}

/** Parse demoapp-style answers: "ClientIP: a, ServerName: n, ServerIP: s". */
export function parseAnswers(out: string): { client: string; server: string; serverIp: string }[] {
  const res: { client: string; server: string; serverIp: string }[] = [];
  for (const m of out.matchAll(/ClientIP: ([0-9.]+), ServerName: (\S+), ServerIP: ([0-9.]+)/g)) {
    res.push({ client: m[1], server: m[2], serverIp: m[3] });
  }
  return res;
}

export function countBy<T>(xs: T[], key: (x: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
}

/**
 * Acceptance interval [lo, hi] for a Binomial(n, p) count: P(X < lo) + P(X > hi) <= alpha, from the
 * exact distribution (not a normal approximation, which is poor in the tails). alpha defaults to
 * 1e-7 per count, so a test checking k counts fails by chance with probability <= k * 1e-7 (the
 * suite's five counts: one chance failure in some 2 million runs). The old 99.9% normal bound
 * failed about one run in 200.
 */
export function binomialBound(n: number, p: number, alpha = 1e-7): [number, number] {
  // log pmf(k) = log C(n,k) + k log p + (n-k) log(1-p); summed in log space to avoid underflow.
  const pmf = (k: number) => Math.exp(lnFactorial(n) - lnFactorial(k) - lnFactorial(n - k) + k * Math.log(p) + (n - k) * Math.log1p(-p));
  let lo = 0;
  for (let tail = pmf(0); lo < n && tail <= alpha / 2; tail += pmf(++lo));
  let hi = n;
  for (let tail = pmf(n); hi > 0 && tail <= alpha / 2; tail += pmf(--hi));
  return [lo, hi];
}

function lnFactorial(k: number): number {
  let s = 0;
  for (let i = 2; i <= k; i++) s += Math.log(i);
  return s;
}

/** Assert each observed count lies in its binomial interval; the message names every count and bound. */
export function expectBinomial(counts: Record<string, number>, n: number, p: number, alpha = 1e-7): void {
  const [lo, hi] = binomialBound(n, p, alpha);
  const seen = `counts ${JSON.stringify(counts)} of n=${n}, each expected in [${lo}, ${hi}] (p=${p.toFixed(4)}, alpha=${alpha} per count)`;
  for (const c of Object.values(counts)) {
    if (c < lo || c > hi) throw new Error(`binomial check failed: ${seen}`);
  }
}
