// Start kube-tun (the compiled CLI) inside a lab node namespace and talk to it.
import { execFileSync, ChildProcess } from 'node:child_process';
import { beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, LAB_CONFIG, REPO_ROOT, NodeName, NODES, sleep } from '../../scripts/lab';

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
  // A restarted daemon appends to its predecessor's log: only what this instance wrote counts.
  const logStart = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
  const child = lab.spawn(lab.nodeNs(node), [process.execPath, CLI, 'run', '--config', config, '--hostname-override', node,
    '--tun', 'kt0', '--control-socket', socket, '--log-level', 'debug', ...extra], { logFile });
  const d: RunningDaemon = {
    node, socket, logFile, child,
    cli: (args) => execFileSync(process.execPath, [CLI, ...args, '--control-socket', socket], { encoding: 'utf8' }),
    log: () => fs.readFileSync(logFile, 'utf8'),
    stop: async () => {
      // A process ended by a signal has signalCode set and exitCode null.
      const exited = () => child.exitCode !== null || child.signalCode !== null;
      if (exited()) return;
      child.kill('SIGTERM');
      // Wait for the routing teardown to finish: a restart must not race the old instance's cleanup.
      for (let i = 0; i < 200 && !exited(); i++) await sleep(50);
      if (!exited()) {
        child.kill('SIGKILL');
        throw new Error(`kube-tun on ${node} did not stop within 10 s of SIGTERM:\n${d.log().slice(-2000)}`);
      }
    },
  };
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`kube-tun on ${node} exited ${child.exitCode}:\n${d.log()}`);
    if (fs.existsSync(logFile) && d.log().slice(logStart).includes('"msg":"ready"')) return d;
    await sleep(50);
  }
  throw new Error(`kube-tun on ${node} not ready after 15 s:\n${d.log()}`);
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

/** Half-width of a two-sided binomial interval at 99.9% (normal approximation, z = 3.29). */
export function binomialBound(n: number, p: number): [number, number] {
  const sd = Math.sqrt(n * p * (1 - p));
  return [Math.floor(n * p - 3.29 * sd), Math.ceil(n * p + 3.29 * sd)];
}
