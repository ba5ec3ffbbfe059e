// The benchmark's twin labs: the LAB.md topology built two (or three) times under different
// prefixes, same addresses. In one, kube-tun runs in both node namespaces and does the service NAT;
// in the other(s) the kernel does it with the rules `kube-tun rules` renders for the same config,
// loaded with iptables-legacy-restore (and, in a third lab, iptables-nft-restore).
import { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LAB_CONFIG, REPO_ROOT, NodeName, NODES, sleep, renderKernelRules, IptablesBackend, collectStaleLabs } from '../lab';
import { controlRequest } from '../../src/control/control-socket';
import { VariantId, isKubeTun } from './results';
import { nsText, tryText } from './exec';
import { writeScaleConfig } from './gen-config';

export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
export const PROBE = path.join(REPO_ROOT, 'dist', 'scripts', 'bench', 'probe.js');
export const BENCH_CONFIG = path.join(REPO_ROOT, 'scripts', 'bench', 'bench-cluster.yaml');
export const BASE_CONFIGS = [LAB_CONFIG, BENCH_CONFIG];

/** The services the cases aim at (scripts/bench/bench-cluster.yaml). */
export const SVC = {
  web: { vip: '10.96.100.3', port: 80, proto: 'tcp', direct: '10.1.139.84', directPort: 80 },
  iperf: { vip: '10.96.100.1', port: 5201, proto: 'tcp', direct: '10.1.139.84', directPort: 5201 },
  iperfUdp: { vip: '10.96.100.1', port: 5201, proto: 'udp', direct: '10.1.139.84', directPort: 5201 },
  echo: { vip: '10.96.100.2', port: 7777, proto: 'tcp', direct: '10.1.139.84', directPort: 7777 },
  sink: { vip: '10.96.100.9', port: 9, proto: 'tcp', direct: '10.1.139.99', directPort: 9 },
} as const;
export type ServiceTarget = (typeof SVC)[keyof typeof SVC];
export const SINK_ENDPOINT = '10.1.139.99';
/** Second addresses of the client pods, used only by the pod-direct baselines. */
export const DIRECT_SOURCES: [string, NodeName, string][] = [['client1', 'worker-1', '10.1.139.71'], ['client', 'worker-2', '10.1.236.142']];
export const CT_MAX = 1 << 21;

export interface KubeTunDaemon {
  node: NodeName; socket: string; logFile: string; child: ChildProcess; configs: string[];
  ready: Record<string, any>;
}

export interface KtStats {
  packets: Record<string, number>; connections: Record<string, number>; drops: Record<string, number>;
  conntrack: Record<string, number>; sync: Record<string, any>;
}

export class BenchEnv {
  readonly id = randomBytes(2).toString('hex');
  readonly kt: Lab;
  readonly kernel: Partial<Record<IptablesBackend, Lab>> = {};
  readonly daemons = new Map<NodeName, KubeTunDaemon>();
  /** `--offload` of every kube-tun daemon this env starts (see setOffload). */
  private offload: 'on' | 'off' = 'on';
  /** Generated services ahead of the tested ones on worker-1 (0: the base config). */
  scaleN = 0;
  /** Rendered worker-1 rules per N (for the rule-update case). */
  readonly rendered = new Map<number, { text: string; file: string; renderMs: number }>();
  readonly logs: string[] = [];

  constructor(readonly backends: IptablesBackend[], private readonly log: (s: string) => void) {
    this.kt = new Lab({ nodes: ['worker-1', 'worker-2'], outside: false, prefix: `bk${this.id}t` });
    for (const b of backends) {
      this.kernel[b] = new Lab({ nodes: ['worker-1', 'worker-2'], outside: false, prefix: `bk${this.id}${b === 'legacy' ? 'l' : 'n'}`,
        kernelNat: { backend: b, configs: BASE_CONFIGS } });
    }
  }

  labs(): Lab[] { return [this.kt, ...Object.values(this.kernel)]; }

  labFor(v: VariantId): Lab {
    if (isKubeTun(v)) return this.kt;
    if (v === 'kernel-nft') return this.kernel.nft!;
    if (v === 'kernel-legacy') return this.kernel.legacy!;
    return (this.kernel.legacy ?? this.kernel.nft)!;   // direct: the kernel lab, addressing the pod itself
  }
  backendOf(v: VariantId): IptablesBackend | undefined {
    return v === 'kernel-nft' ? 'nft' : v === 'kernel-legacy' ? 'legacy' : v === 'direct' ? (this.kernel.legacy ? 'legacy' : 'nft') : undefined;
  }

  async build(): Promise<void> {
    for (const lab of this.labs()) {
      const t0 = Date.now();
      await lab.build();
      // The memory case's sink: the endpoint is no pod; the node sends its packets into a veth whose
      // peer is down (no dummy module here), so nothing answers, and (kernel side) conntrack still
      // confirms the entry at POSTROUTING before the device drops the packet.
      const w1 = lab.nodeNs('worker-1');
      lab.ip(w1, 'link add sink0 type veth peer name sink1');
      lab.ip(w1, 'link set sink0 up');
      lab.ip(w1, `route add ${SINK_ENDPOINT}/32 dev sink0`);
      lab.ip(w1, `neigh replace ${SINK_ENDPOINT} lladdr 02:00:00:00:00:99 dev sink0 nud permanent`);
      // Pod-direct baselines leave from a second address of the client pods. TCP timestamps carry a
      // per-(source, destination) offset, so direct connections (to the pod IP) reusing the 4-tuples
      // of the service runs' TIME_WAIT sockets (after DNAT: the same pod IP) would be dropped by PAWS
      // and retransmitted: a distinct source keeps the baseline from paying for the other runs.
      for (const [pod, node, ip] of DIRECT_SOURCES) {
        const pns = lab.podNs(pod), nns = lab.nodeNs(node);
        lab.ip(pns, `addr add ${ip}/32 dev eth0`);
        for (const t of new Set(Object.values(SVC).map((x) => x.direct))) lab.ip(pns, `route add ${t}/32 via 169.254.1.1 dev eth0 src ${ip}`);
        lab.ip(nns, `route add ${ip}/32 dev ${`cali-${pod}`.slice(0, 15)} scope link`);
      }
      // Servers the cases use, in nginx1's namespace: iperf3 and a TCP echo server.
      const n1 = lab.podNs('nginx1');
      lab.spawn(n1, ['iperf3', '-s', '-p', '5201'], { logFile: path.join(lab.dir, 'iperf3.log') });
      lab.spawn(n1, [process.execPath, PROBE, 'echo-server', '7777'], { logFile: path.join(lab.dir, 'echo.log') });
      await lab.waitListening(n1, 'tcp', 5201);
      await lab.waitListening(n1, 'tcp', 7777);
      this.log(`  lab ${lab.prefix} (${lab.kernelNat ? `kernel NAT, iptables-${lab.kernelNat.backend}` : 'kube-tun'}) built in ${Date.now() - t0} ms`);
    }
    if (this.kt.kernelRuleCount() !== 0) throw new Error(`the kube-tun lab ${this.kt.prefix} has kernel NAT/filter rules: it would not measure kube-tun alone`);
    for (const n of ['worker-1', 'worker-2'] as NodeName[]) await this.startDaemon(n, BASE_CONFIGS);
  }

  async destroy(): Promise<void> {
    for (const d of this.daemons.values()) if (d.child.exitCode === null) d.child.kill('SIGTERM');
    await sleep(200);
    for (const lab of this.labs()) {
      try { await lab.destroy(); } catch (e: any) { this.log(`  teardown of ${lab.prefix}: ${e.message}`); }
    }
    for (const r of this.rendered.values()) fs.rmSync(r.file, { force: true });
  }

  // ---------------------------------------------------------------- kube-tun side

  async startDaemon(node: NodeName, configs: string[], extra: string[] = []): Promise<KubeTunDaemon> {
    const short = NODES.find((n) => n.name === node)!.short;
    const socket = path.join(this.kt.dir, `${short}.sock`);
    const logFile = path.join(this.kt.dir, `kube-tun-${short}.log`);
    fs.writeFileSync(logFile, '');
    // info, not debug: a benchmark must not pay for per-connection log lines.
    const child = this.kt.spawn(this.kt.nodeNs(node), [process.execPath, CLI, 'run', ...configs.flatMap((c) => ['--config', c]),
      '--hostname-override', node, '--tun', 'kt0', '--control-socket', socket, '--log-level', 'info', '--no-watch',
      '--ct-max', String(CT_MAX), '--offload', this.offload, ...extra], { logFile });
    const deadline = Date.now() + 180_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`kube-tun on ${node} exited ${child.exitCode}:\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
      const text = fs.readFileSync(logFile, 'utf8');
      const line = text.split('\n').find((l) => l.includes('"msg":"ready"'));
      if (line) {
        const d: KubeTunDaemon = { node, socket, logFile, child, configs, ready: JSON.parse(line) };
        this.daemons.set(node, d);
        return d;
      }
      await sleep(50);
    }
    child.kill('SIGKILL');
    throw new Error(`kube-tun on ${node} not ready after 180 s:\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
  }

  async stopDaemon(node: NodeName): Promise<void> {
    const d = this.daemons.get(node);
    if (!d) return;
    this.daemons.delete(node);
    if (d.child.exitCode !== null) return;
    d.child.kill('SIGTERM');
    for (let i = 0; i < 100 && d.child.exitCode === null; i++) await sleep(50);
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
    for (let i = 0; i < 40 && d.child.exitCode === null; i++) await sleep(50);
  }

  async restartDaemon(node: NodeName, configs: string[], extra: string[] = []): Promise<KubeTunDaemon> {
    await this.stopDaemon(node);
    return this.startDaemon(node, configs, extra);
  }

  /** kube-tun's `--offload` on both nodes (a change restarts the daemons with their configs). */
  async setOffload(mode: 'on' | 'off'): Promise<void> {
    if (mode === this.offload) return;
    this.offload = mode;
    for (const n of ['worker-1', 'worker-2'] as NodeName[]) await this.restartDaemon(n, this.daemon(n).configs);
  }

  daemon(node: NodeName): KubeTunDaemon {
    const d = this.daemons.get(node);
    if (!d || d.child.exitCode !== null) throw new Error(`kube-tun on ${node} is not running${d ? ` (exited ${d.child.exitCode})` : ''}`);
    return d;
  }

  async ktRequest(node: NodeName, cmd: string, args?: Record<string, unknown>): Promise<string> {
    let out = '';
    await controlRequest(this.daemon(node).socket, { cmd, args }, (s) => { out += s; });
    if (out.startsWith('error:')) throw new Error(`kube-tun ${cmd} on ${node}: ${out.trim()}`);
    return out;
  }

  async ktStats(node: NodeName): Promise<KtStats> {
    return JSON.parse(await this.ktRequest(node, 'stats'));
  }

  /** VmRSS of the daemon (kB). `ip netns exec` execs the command, so the child's pid is node's. */
  ktRssKb(node: NodeName): { rss: number; hwm: number } {
    const st = fs.readFileSync(`/proc/${this.daemon(node).child.pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  }

  // ---------------------------------------------------------------- kernel side

  /** Packets counted by the rules of the service's KUBE-SVC chain on a node (new connections NATed). */
  kernelServicePackets(backend: IptablesBackend, node: NodeName, t: ServiceTarget): number {
    const lab = this.kernel[backend]!;
    const chain = this.serviceChain(node, t);
    const out = lab.iptables(node, 'iptables', ['-w', '-t', 'nat', '-L', chain, '-n', '-v', '-x'], { backend });
    let n = 0;
    for (const line of out.split('\n').slice(2)) {
      const m = /^\s*(\d+)\s+\d+\s/.exec(line);
      if (m) n += Number(m[1]);
    }
    return n;
  }

  private chainCache = new Map<string, string>();
  /** The KUBE-SVC chain `kube-tun rules` named for a service port (read from the loaded rules). */
  serviceChain(node: NodeName, t: ServiceTarget): string {
    const key = `${node} ${t.vip}:${t.port}/${t.proto}`;
    let c = this.chainCache.get(key);
    if (!c) {
      const lab = (this.kernel.legacy ?? this.kernel.nft)!;
      const text = lab.iptables(node, 'iptables-save', ['-t', 'nat'], { backend: lab.kernelNat!.backend });
      c = findServiceChain(text, t);
      this.chainCache.set(key, c);
    }
    return c;
  }

  // ---------------------------------------------------------------- both

  /** Empty conntrack on the nodes of one side, so every sample starts from the same state. */
  async flushConntrack(v: VariantId, nodes: NodeName[] = ['worker-1', 'worker-2']): Promise<void> {
    if (isKubeTun(v)) {
      for (const n of nodes) await this.ktRequest(n, 'conntrack-delete', {});
    } else {
      const lab = this.labFor(v);
      for (const n of nodes) nsText(lab.nodeNs(n), ['sh', '-c', 'conntrack -F >/dev/null 2>&1 || true']);
    }
  }

  /**
   * Put N generated services ahead of the tested ones on worker-1, on every side: kube-tun restarts
   * with the bigger config, the kernel labs get the rules rendered for it.
   */
  async ensureServices(n: number): Promise<Record<string, unknown>> {
    if (n === this.scaleN) return {};
    const info: Record<string, unknown> = { services: n };
    let configs = BASE_CONFIGS;
    if (n > 0) {
      const file = path.join(this.kt.dir, `scale-${n}.yaml`);
      const t0 = Date.now();
      writeScaleConfig(file, n, false);
      info.configWriteMs = Date.now() - t0;
      info.configBytes = fs.statSync(file).size;
      configs = [file, ...BASE_CONFIGS];
    }
    const r = this.render(n, configs);
    info.renderMs = r.renderMs;
    info.rules = r.text.split('\n').filter((l) => l.startsWith('-A ')).length;
    info.kubeServicesRulesAhead = rulesAhead(r.text, SVC.web);
    for (const b of this.backends) {
      const ms = this.kernel[b]!.loadKernelRules('worker-1', r.text, { backend: b });
      info[`restoreMs_${b}`] = Math.round(ms);
    }
    const d = await this.restartDaemon('worker-1', configs);
    info.kubeTunReady = { ms: d.ready.ms, services: d.ready.services, rules: d.ready.rules };
    this.chainCache.clear();
    this.scaleN = n;
    this.log(`  ${n} generated services on worker-1: rendered in ${r.renderMs} ms (${info.rules} rules, ${info.kubeServicesRulesAhead} KUBE-SERVICES rules ahead of bench's target); ` +
      `${this.backends.map((b) => `iptables-${b}-restore ${info[`restoreMs_${b}`]} ms`).join(', ')}; kube-tun ready, compiled in ${d.ready.ms} ms`);
    return info;
  }

  render(n: number, configs: string[]): { text: string; file: string; renderMs: number } {
    let r = this.rendered.get(n);
    if (!r) {
      const t0 = Date.now();
      const text = renderKernelRules('worker-1', configs);
      const file = path.join(this.kt.dir, `rules-${n}.txt`);
      fs.writeFileSync(file, text);
      r = { text, file, renderMs: Date.now() - t0 };
      this.rendered.set(n, r);
    }
    return r;
  }
}

/** Does an iptables(-save) rule line match the service port's ClusterIP, port and protocol? */
function matchesService(line: string, t: ServiceTarget): boolean {
  const vip = t.vip.replace(/\./g, '\\.');
  return new RegExp(` -d ${vip}(/32)? `).test(line) && line.includes(`--dport ${t.port} `) && line.includes(`-p ${t.proto} `);
}

/** The chain a service port's KUBE-SERVICES rule jumps to. */
export function findServiceChain(text: string, t: ServiceTarget): string {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\[\d+:\d+\] /, '');
    if (!line.startsWith('-A KUBE-SERVICES ') || !matchesService(line, t)) continue;
    const m = / -j (KUBE-(SVC|SVL)-\w+)/.exec(line);
    if (m) return m[1];
  }
  throw new Error(`no KUBE-SERVICES rule for ${t.vip}:${t.port}/${t.proto} in the kernel rules`);
}

/** How many KUBE-SERVICES rules come before the tested service's own. */
export function rulesAhead(text: string, t: ServiceTarget): number {
  let k = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('-A KUBE-SERVICES ')) continue;
    if (matchesService(line, t)) return k;
    k++;
  }
  return -1;
}

/**
 * Remove the labs of earlier bench runs whose process is gone (prefix "bk"; other labs are left to
 * their owners): namespaces, the processes still inside them, state and scratch directories.
 */
export function collectStaleBenchLabs(): string[] {
  return collectStaleLabs((prefix) => /^bk[0-9a-f]{4}[tln]$/.test(prefix));
}
