// `npm run lab -- up | status | exec NODE -- CMD | down`: the reference lab kept up between
// commands, with kube-tun running on each node, so the README's commands can be typed by hand.
// `up` builds it detached from this process; `down` removes every namespace, process and file.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Lab, LAB_CONFIG, REPO_ROOT, NODES, PODS, OUTSIDE_IP, NodeName, sleep, collectStaleLabs, persistentLabs, removeLab, cleanupOnSignals,
} from './lab';

const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const USAGE = `usage: npm run lab -- up [--nodes 1|2]     build the lab, start kube-tun on every node
       npm run lab -- status                  namespaces, addresses, daemons, how to enter each
       npm run lab -- exec NAME -- CMD [ARG…] run CMD in a node (worker-1, worker-2) or pod (client, nginx1, …, out)
       npm run lab -- down                    remove the lab
Each takes --lab PREFIX to name one lab when several are up (up: to choose its prefix).`;

class Usage extends Error {}

interface LabState { prefix: string; dir: string; nodes: NodeName[]; outside: boolean }

function stateOf(prefix: string): LabState | null {
  const file = path.join('/tmp', `kube-tun-${prefix}`, 'lab.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) as LabState : null;
}

/** The lab named by --lab, or the only one that is up. */
function current(name: string | undefined): LabState {
  const labs = persistentLabs();
  if (name === undefined && labs.length > 1) throw new Usage(`several labs are up (${labs.join(', ')}): name one with --lab PREFIX`);
  const prefix = name ?? labs[0];
  const st = prefix && labs.includes(prefix) ? stateOf(prefix) : null;
  if (!st) throw new Usage(name ? `no lab "${name}" is up (up: ${labs.join(', ') || 'none'})` : 'no lab is up: start one with `npm run lab -- up`');
  return st;
}

/** Takes `--lab PREFIX` out of args. */
function labFlag(args: string[]): string | undefined {
  const i = args.indexOf('--lab');
  const sep = args.indexOf('--');
  if (i < 0 || (sep >= 0 && i > sep)) return undefined;
  const v = args[i + 1];
  if (!v || !/^[a-z0-9]{1,8}$/.test(v)) throw new Usage('--lab: a lab prefix (1-8 of a-z0-9), as `status` shows it');
  args.splice(i, 2);
  return v;
}

/** NAME -> namespace: node names, their short names (w1), pods, "out", "ul". */
function namespaceOf(st: LabState, name: string): string {
  const node = NODES.find((n) => n.name === name || n.short === name);
  if (node && st.nodes.includes(node.name)) return `${st.prefix}-${node.short}`;
  const pod = PODS.find((p) => p.name === name);
  if (pod && st.nodes.includes(pod.node)) return `${st.prefix}-${pod.name}`;
  if ((name === 'out' && st.outside) || name === 'ul') return `${st.prefix}-${name}`;
  const names = [...st.nodes, ...PODS.filter((p) => st.nodes.includes(p.node)).map((p) => p.name), ...(st.outside ? ['out'] : [])];
  throw new Usage(`no "${name}" in the lab; one of: ${names.join(', ')}`);
}

/** A bin directory with `kube-tun` in it, put first on PATH for `lab exec`. */
function binDir(st: LabState): string {
  const dir = path.join(st.dir, 'bin');
  if (!fs.existsSync(path.join(dir, 'kube-tun'))) {
    fs.mkdirSync(dir, { recursive: true });
    fs.symlinkSync(path.join(REPO_ROOT, 'bin', 'kube-tun.js'), path.join(dir, 'kube-tun'));
  }
  return dir;
}

async function waitReady(log: string, node: string, pid: () => boolean): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"msg":"ready"')) return;
    if (!pid()) break;
    await sleep(50);
  }
  throw new Error(`kube-tun on ${node} did not become ready; its log:\n${fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-2000) : '(none)'}`);
}

async function up(args: string[], prefix: string | undefined): Promise<void> {
  const i = args.indexOf('--nodes');
  const count = i < 0 ? 2 : Number(args[i + 1]);
  if (args.some((a, k) => a.startsWith('-') && a !== '--nodes' && args[k - 1] !== '--nodes') || ![1, 2].includes(count)) {
    throw new Usage(`up: takes only --nodes 1|2 (got ${args.join(' ')})`);
  }
  if (prefix && persistentLabs().includes(prefix)) throw new Usage(`lab ${prefix} is already up`);
  collectStaleLabs();
  const nodes = NODES.slice(0, count).map((n) => n.name);
  const lab = new Lab({ nodes, outside: true, persistent: true, prefix });
  cleanupOnSignals(async () => removeLab(lab.prefix));
  try {
    await lab.build();
    for (const node of nodes) {
      const short = NODES.find((n) => n.name === node)!.short;
      const log = path.join(lab.dir, `kube-tun-${short}.log`);
      const child = lab.spawn(lab.nodeNs(node), [process.execPath, CLI, 'run', '--config', LAB_CONFIG, '--hostname-override', node, '--tun', 'kt0'],
        { logFile: log });
      await waitReady(log, node, () => child.exitCode === null);
    }
    const st: LabState = { prefix: lab.prefix, dir: lab.dir, nodes, outside: true };
    fs.writeFileSync(path.join(lab.dir, 'lab.json'), JSON.stringify(st, null, 2) + '\n');
  } catch (e) {
    removeLab(lab.prefix);
    throw e;
  }
  console.log(`lab ${lab.prefix} is up: ${nodes.join(', ')}, their pods, an outside client; kube-tun runs on every node.\n`);
  status(lab.prefix);
  console.log(`
Try:
  npm run lab -- exec client -- curl -s http://10.99.64.233:9999/
  npm run lab -- exec worker-1 -- kube-tun conntrack -L
  npm run lab -- exec worker-1 -- kube-tun stats
  npm run lab -- exec worker-2 -- kube-tun trace --config lab/cluster.yaml --hostname-override worker-2 --src 10.1.236.141 --dst 10.99.64.233 --dport 9999
  npm run lab -- down`);
}

function status(prefix: string | undefined): void {
  const st = current(prefix);
  const have = new Set(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]));
  console.log(`lab ${st.prefix} (files in ${st.dir})`);
  const row = (name: string, ns: string, what: string) =>
    console.log(`  ${name.padEnd(9)} ${(have.has(ns) ? ns : `${ns} (MISSING)`).padEnd(16)} ${what}`);
  for (const node of NODES.filter((n) => st.nodes.includes(n.name))) {
    const ns = `${st.prefix}-${node.short}`;
    const pids = have.has(ns) ? spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean) : [];
    const daemon = pids.find((p) => fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes('run'));
    row(node.name, ns, `node ${node.underlayIp}, pods ${node.podCidr}, kube-tun ${daemon ? `pid ${daemon}` : 'NOT RUNNING'}`);
  }
  for (const pod of PODS.filter((p) => st.nodes.includes(p.node))) {
    row(pod.name, `${st.prefix}-${pod.name}`, `pod ${pod.ip} on ${pod.node}${pod.serve && pod.serve !== 'none' ? ` (${pod.serve})` : ''}`);
  }
  if (st.outside) row('out', `${st.prefix}-out`, `outside client ${OUTSIDE_IP}`);
  console.log(`enter one: npm run lab -- exec NAME -- CMD   (or: ip netns exec ${st.prefix}-w1 CMD)`);
}

function exec(args: string[], prefix: string | undefined): number {
  const sep = args.indexOf('--');
  const name = args[0];
  const cmd = sep >= 0 ? args.slice(sep + 1) : args.slice(1);
  if (!name || cmd.length === 0) throw new Usage('exec: NAME -- CMD [ARG…]');
  const st = current(prefix);
  const env = { ...process.env, PATH: `${binDir(st)}:${process.env.PATH ?? ''}` };
  const r = spawnSync('ip', ['netns', 'exec', namespaceOf(st, name), ...cmd], { stdio: 'inherit', env, cwd: process.cwd() });
  if (r.error) throw r.error;
  return r.status ?? 128 + 15;
}

function down(name: string | undefined): void {
  const labs = name ? [current(name).prefix] : persistentLabs();
  if (labs.length === 0) { console.log('no lab is up'); return; }
  for (const prefix of labs) {
    removeLab(prefix);
    console.log(`lab ${prefix} removed (namespaces, kube-tun daemons, servers, files)`);
  }
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const lab = labFlag(rest);
  switch (verb) {
    case 'up': await up(rest, lab); return 0;
    case 'status': status(lab); return 0;
    case 'exec': return exec(rest, lab);
    case 'down': down(lab); return 0;
    case undefined: case '-h': case '--help': console.log(USAGE); return verb ? 0 : 2;
    default: throw new Usage(`unknown command "${verb}"\n${USAGE}`);
  }
}

if (process.getuid && process.getuid() !== 0) {
  console.error('lab: needs root (network namespaces, TUN)');
  process.exit(1);
}
main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  console.error(`lab: ${e.message}`);
  process.exitCode = e instanceof Usage ? 2 : 1;
});
