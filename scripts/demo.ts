// `npm run demo`: build the lab of LAB.md, start kube-tun on both nodes, run the seeds' scenarios,
// print what each client saw and the conntrack tables, tear everything down.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LAB_CONFIG, REPO_ROOT, NodeName, NODES, sleep, DNS_NAME, collectStaleLabs, cleanupOnSignals } from './lab';

const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

interface Node { name: NodeName; socket: string; log: string; child: ChildProcess }

async function startNode(lab: Lab, name: NodeName): Promise<Node> {
  const short = NODES.find((n) => n.name === name)!.short;
  const socket = path.join(lab.dir, `${short}.sock`), log = path.join(lab.dir, `kube-tun-${short}.log`);
  const child = lab.spawn(lab.nodeNs(name), [process.execPath, CLI, 'run', '--config', LAB_CONFIG, '--hostname-override', name,
    '--tun', 'kt0', '--control-socket', socket], { logFile: log });
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`kube-tun on ${name} exited:\n${fs.readFileSync(log, 'utf8')}`);
    if (fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"msg":"ready"')) return { name, socket, log, child };
    await sleep(50);
  }
  throw new Error(`kube-tun on ${name} did not become ready:\n${fs.readFileSync(log, 'utf8')}`);
}

function cli(node: Node, args: string[]): string {
  return execFileSync(process.execPath, [CLI, ...args, '--control-socket', node.socket], { encoding: 'utf8' });
}

function tryExec(lab: Lab, ns: string, cmd: string[]): string {
  try { return lab.exec(ns, cmd); } catch { return '(no answer: the connection was not let through)'; }
}

function summarize(out: string): string {
  const counts = new Map<string, number>();
  for (const m of out.matchAll(/ClientIP: ([0-9.]+), ServerName: (\S+)/g)) {
    const k = `${m[2]} saw client ${m[1]}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  if (counts.size === 0) return `    ${out.trim() || '(no answer)'}`;
  return [...counts].map(([k, n]) => `    ${String(n).padStart(3)} x ${k}`).join('\n');
}

async function main(): Promise<void> {
  if (process.getuid && process.getuid() !== 0) throw new Error('the lab needs root (network namespaces, TUN)');
  collectStaleLabs();
  const lab = new Lab({ nodes: ['worker-1', 'worker-2'], outside: true });
  const nodes: Node[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () => {
    cleaning ??= (async () => {
      for (const n of nodes) if (n.child.exitCode === null) n.child.kill('SIGTERM');
      await sleep(300);
      await lab.destroy();
    })();
    return cleaning;
  };
  cleanupOnSignals(cleanup);
  try {
    console.log(bold(`building lab ${lab.prefix}: worker-1, worker-2, pods, underlay 192.168.2.0/24, outside client`));
    await lab.build();
    nodes.push(await startNode(lab, 'worker-1'), await startNode(lab, 'worker-2'));
    console.log(`kube-tun running on both nodes; kernel NAT/filter rules in the lab: ${lab.kernelRuleCount()}\n`);
    const close = ['-H', 'Connection: close'];
    const scenarios: [string, string, string[]][] = [
      ['1. pod client (worker-2) -> ClusterIP 10.99.64.233:9999, endpoints on worker-1 via IPIP', lab.podNs('client'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://10.99.64.233:9999/[1-20]']],
      ['2. node worker-2 -> ClusterIP (MASQUERADE to its tunnel address)', lab.nodeNs('worker-2'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://10.99.64.233:9999/[1-6]']],
      ['3/4. pod nginx1 -> its own Service (other endpoint: DNAT; itself: hairpin SNAT)', lab.podNs('nginx1'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://10.99.64.233:9999/[1-20]']],
      ['5. outside 192.168.2.100 -> worker-2:30337 (NodePort, eTP Cluster)', lab.ns('out'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://192.168.2.3:30337/[1-6]']],
      ['6a. outside -> worker-1:30338 (eTP Local, endpoints here: source kept)', lab.ns('out'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://192.168.2.2:30338/[1-4]']],
      ['6b. outside -> worker-2:30338 (eTP Local, no endpoint here: dropped)', lab.ns('out'),
        ['curl', '-s', '--max-time', '1', 'http://192.168.2.3:30338/']],
      ['7. pod client -> nginx-service 10.101.57.97 (three endpoints, 1/3 each)', lab.podNs('client'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://10.101.57.97/[1-90]']],
      ['8. pod client -> kube-dns 10.96.0.10:53/UDP', lab.podNs('client'),
        ['dig', '+short', '+time=2', '@10.96.0.10', DNS_NAME]],
      ['9. pod client -> nginx-rr 10.101.57.98 (IPVS-style round robin)', lab.podNs('client'),
        ['curl', '-s', '--max-time', '5', ...close, 'http://10.101.57.98/[1-6]']],
    ];
    for (const [title, ns, cmd] of scenarios) {
      // Let a pending signal's handler run between scenarios (each is a blocking call), and stop there.
      await new Promise((r) => setImmediate(r));
      if (cleaning) return;
      console.log(bold(title));
      const out = tryExec(lab, ns, cmd);
      console.log(title.startsWith('9.') ? out.trim().split('\n').map((l) => `    ${l}`).join('\n') : summarize(out));
    }
    for (const n of nodes) {
      console.log(bold(`\nconntrack -L on ${n.name} (service flows):`));
      const lines = cli(n, ['conntrack', '-L']).split('\n');
      const shown = lines.filter((l) => /dst=10\.(99|96|101)\.|dport=3033[78]/.test(l));
      console.log(shown.slice(0, 12).join('\n'));
      if (shown.length > 12) console.log(`... ${shown.length - 12} more`);
      console.log(`(${lines.filter((l) => /^(tcp|udp|icmp) /.test(l)).length} entries on ${n.name})`);
    }
    for (const n of nodes) {
      const s = JSON.parse(cli(n, ['stats']));
      console.log(bold(`\n${n.name}:`), `packets in ${s.packets.rxTun + s.packets.rxIpip}, out ${s.packets.txLocal + s.packets.txIpip} (IPIP ${s.packets.txIpip}),`,
        `connections ${s.connections.new} (DNAT ${s.connections.dnat}, SNAT ${s.connections.snat}), drops ${JSON.stringify(s.drops)}`);
    }
  } finally {
    await cleanup();
    console.log(`\nlab ${lab.prefix} removed`);
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e.message}`);
  process.exitCode = 1;
});
