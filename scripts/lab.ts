// The reference lab of ../shared/LAB.md built from network namespaces: nodes, pods behind veths
// (Calico style: /32 on eth0, default via 169.254.1.1), an underlay
// bridge and an outside client. The kernel only routes here: no iptables rules anywhere. kube-tun,
// started per node, installs its own TUN routes and policy rules.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO_ROOT = findRepoRoot(__dirname);
export const LAB_CONFIG = path.join(REPO_ROOT, 'lab', 'cluster.yaml');
/** One file per live lab, named by its prefix, holding the owner's pid: what collectStaleLabs() reaps. */
export const STATE_DIR = '/run/kube-tun-lab';

function findRepoRoot(dir: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) throw new Error(`no package.json above ${dir}`);
  }
}

export type NodeName = 'worker-1' | 'worker-2';
export interface PodSpec { name: string; node: NodeName; ip: string; serve?: 'nginx' | 'dns' | 'none' }
export interface NodeSpec { name: NodeName; short: string; underlayIp: string; tunnelIp: string; podCidr: string }

export const NODES: NodeSpec[] = [
  { name: 'worker-1', short: 'w1', underlayIp: '192.168.2.2', tunnelIp: '10.1.139.64', podCidr: '10.1.139.64/26' },
  { name: 'worker-2', short: 'w2', underlayIp: '192.168.2.3', tunnelIp: '10.1.236.128', podCidr: '10.1.236.128/26' },
];
export const PODS: PodSpec[] = [
  { name: 'nginx1', node: 'worker-1', ip: '10.1.139.84', serve: 'nginx' },
  { name: 'nginx2', node: 'worker-1', ip: '10.1.139.93', serve: 'nginx' },
  { name: 'client1', node: 'worker-1', ip: '10.1.139.70', serve: 'none' },
  { name: 'dns', node: 'worker-1', ip: '10.1.139.90', serve: 'dns' },
  { name: 'client', node: 'worker-2', ip: '10.1.236.141', serve: 'none' },
  { name: 'nginx3', node: 'worker-2', ip: '10.1.236.150', serve: 'nginx' },
];
export const OUTSIDE_IP = '192.168.2.100';
export const DNS_NAME = 'demo.lab.local';
export const DNS_ANSWER = '10.1.2.3';

export interface LabOptions {
  nodes?: NodeName[];   // which nodes to build (pods of other nodes are skipped)
  outside?: boolean;    // build the outside client on the underlay
  prefix?: string;
  /** Kernel twin of the lab (benchmarks): the kernel does the service NAT instead of kube-tun. */
  kernelNat?: boolean | KernelNatOptions;
  /**
   * A lab that outlives the process that built it (`npm run lab -- up`): its processes are
   * detached, and the stale-lab collector leaves it alone until `lab down` removes it.
   */
  persistent?: boolean;
}

/** What a persistent lab's state file says instead of its owner's pid. */
const PERSISTENT = 'persistent';

export const SERVICE_CIDR = '10.96.0.0/12';
export type IptablesBackend = 'legacy' | 'nft';
/**
 * The kernel side of a benchmark: nodes route each other's pod CIDRs over the underlay (this kernel
 * has no IPIP module, so no tunnel), and each node namespace gets the rules `kube-tun rules`
 * renders for it from the same config, loaded with iptables-restore of the chosen backend.
 */
export interface KernelNatOptions {
  backend?: IptablesBackend;   // default legacy
  configs?: string[];          // default [LAB_CONFIG]
  loadRules?: boolean;         // default true; false: routes only, load later with loadKernelRules()
}

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e: any) {
    const err = (e.stderr || '').toString().trim();
    throw new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`);
  }
}

/** `run` for outputs beyond execFileSync's 1 MiB default (rule sets of 10,000s of services). */
function runLarge(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 1 << 30 });
  } catch (e: any) {
    const err = (e.stderr || '').toString().trim();
    throw new Error(`${cmd} ${args.join(' ')}: ${err.slice(0, 2000) || e.message}`);
  }
}

export class Lab {
  readonly prefix: string;
  readonly dir: string;
  readonly nodes: NodeSpec[];
  readonly pods: PodSpec[];
  private children: ChildProcess[] = [];
  private namespaces: string[] = [];
  private destroying?: Promise<void>;
  readonly persistent: boolean;

  constructor(opts: LabOptions = {}) {
    this.prefix = opts.prefix ?? `kt${randomBytes(3).toString('hex')}`;
    this.persistent = opts.persistent ?? false;
    this.dir = path.join('/tmp', `kube-tun-${this.prefix}`);
    const want = new Set(opts.nodes ?? ['worker-1']);
    this.nodes = NODES.filter((n) => want.has(n.name));
    this.pods = PODS.filter((p) => want.has(p.node));
    this.outside = opts.outside ?? this.nodes.length > 1;
    if (opts.kernelNat) {
      const k = opts.kernelNat === true ? {} : opts.kernelNat;
      this.kernelNat = { backend: k.backend ?? 'legacy', configs: k.configs ?? [LAB_CONFIG], loadRules: k.loadRules ?? true };
    }
  }
  readonly outside: boolean;
  readonly kernelNat?: Required<KernelNatOptions>;

  ns(name: string): string { return `${this.prefix}-${name}`; }
  nodeNs(node: NodeName): string { return this.ns(NODES.find((n) => n.name === node)!.short); }
  podNs(pod: string): string { return this.ns(pod); }

  /** Run a command inside one of this lab's namespaces and return stdout. */
  exec(ns: string, cmd: string[], input?: string): string {
    return run('ip', ['netns', 'exec', ns, ...cmd], input);
  }
  ip(ns: string, args: string): string { return run('ip', ['-n', ns, ...args.split(/\s+/)]); }
  sysctl(ns: string, kv: string): void { this.exec(ns, ['sysctl', '-qw', kv]); }

  /**
   * Start a long-running process in a namespace; it is killed by destroy(). `fd3Pipe`: also give it
   * a pipe on fd 3 (child.stdio[3]), e.g. for kube-tun's `--ready-fd 3`.
   */
  spawn(ns: string, cmd: string[], opts: { logFile?: string; env?: NodeJS.ProcessEnv; fd3Pipe?: boolean } = {}): ChildProcess {
    const out = opts.logFile ? fs.openSync(opts.logFile, 'a') : 'ignore';
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', out, out, ...(opts.fd3Pipe ? ['pipe' as const] : [])];
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio, env: opts.env ?? process.env, detached: this.persistent });
    if (typeof out === 'number') fs.closeSync(out);
    if (this.persistent) child.unref();
    this.children.push(child);
    return child;
  }

  async build(): Promise<this> {
    fs.mkdirSync(this.dir, { recursive: true });
    fs.mkdirSync(STATE_DIR, { recursive: true });
    fs.writeFileSync(path.join(STATE_DIR, this.prefix), `${this.persistent ? PERSISTENT : process.pid}\n`);
    try {
      this.buildTopology();
      if (this.kernelNat) this.setupKernelNat();
      await this.startServers();
    } catch (e) {
      await this.destroy();
      throw e;
    }
    return this;
  }

  private addNs(name: string): string {
    const ns = this.ns(name);
    run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    this.ip(ns, 'link set lo up');
    return ns;
  }

  private buildTopology(): void {
    const ul = this.addNs('ul');
    this.ip(ul, 'link add br0 type bridge');
    this.ip(ul, 'link set br0 up');
    const attach = (ns: string, ifname: string, port: string, cidr: string) => {
      run('ip', ['link', 'add', ifname, 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', ul]);
      this.ip(ul, `link set ${port} master br0 up`);
      this.ip(ns, `addr add ${cidr} dev ${ifname}`);
      this.ip(ns, `link set ${ifname} up`);
    };
    for (const node of this.nodes) {
      const ns = this.addNs(node.short);
      attach(ns, 'em1', `p-${node.short}`, `${node.underlayIp}/24`);
      for (const kv of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0',
        'net.ipv4.conf.em1.rp_filter=0']) this.sysctl(ns, kv);
    }
    if (this.outside) {
      const ns = this.addNs('out');
      attach(ns, 'eth0', 'p-out', `${OUTSIDE_IP}/24`);
    }
    for (const pod of this.pods) {
      const pns = this.addNs(pod.name);
      const nns = this.nodeNs(pod.node);
      const hostIf = `cali-${pod.name}`.slice(0, 15);
      run('ip', ['link', 'add', 'eth0', 'netns', pns, 'type', 'veth', 'peer', 'name', hostIf, 'netns', nns]);
      this.ip(pns, `addr add ${pod.ip}/32 dev eth0`);
      this.ip(pns, 'link set eth0 up');
      this.ip(pns, 'route add 169.254.1.1 dev eth0 scope link');
      this.ip(pns, 'route add default via 169.254.1.1 dev eth0');
      this.ip(nns, `link set ${hostIf} up`);
      // Calico answers ARP for 169.254.1.1 by proxy ARP, which needs a default route the node
      // namespace lacks; owning the link-local gateway address on each host side is equivalent.
      this.ip(nns, `addr add 169.254.1.1/32 dev ${hostIf} scope link`);
      this.sysctl(nns, `net.ipv4.conf.${hostIf}.rp_filter=0`);
      this.ip(nns, `route add ${pod.ip}/32 dev ${hostIf} scope link`);
    }
  }

  private setupKernelNat(): void {
    const k = this.kernelNat!;
    for (const node of this.nodes) {
      const ns = this.nodeNs(node.name);
      for (const other of this.nodes) {
        if (other !== node) this.ip(ns, `route add ${other.podCidr} via ${other.underlayIp} dev em1`);
      }
      // Node-originated packets to a ClusterIP need a route before OUTPUT's DNAT re-routes them.
      this.ip(ns, `route add ${SERVICE_CIDR} dev em1`);
      if (k.loadRules) this.loadKernelRules(node.name, renderKernelRules(node.name, k.configs));
    }
  }

  /** Run iptables / iptables-save / iptables-restore of a backend in a node's namespace. */
  iptables(node: NodeName, tool: 'iptables' | 'iptables-save' | 'iptables-restore', args: string[] = [], opts: { backend?: IptablesBackend; input?: string } = {}): string {
    const backend = opts.backend ?? this.kernelNat?.backend ?? 'legacy';
    const bin = tool.replace(/^iptables/, `iptables-${backend}`);
    return runLarge('ip', ['netns', 'exec', this.nodeNs(node), bin, ...args], opts.input);
  }

  /** Load iptables-save text into a node namespace; returns the wall time in ms (incl. `ip netns exec`). */
  loadKernelRules(node: NodeName, text: string, opts: { backend?: IptablesBackend; noflush?: boolean } = {}): number {
    const t0 = process.hrtime.bigint();
    this.iptables(node, 'iptables-restore', ['-w', ...(opts.noflush ? ['--noflush'] : [])], { backend: opts.backend, input: text });
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  /** Empty the filter, nat and mangle tables of one backend in a node namespace. */
  flushKernelRules(node: NodeName, backend?: IptablesBackend): void {
    for (const t of ['filter', 'nat', 'mangle']) {
      this.iptables(node, 'iptables', ['-w', '-t', t, '-F'], { backend });
      this.iptables(node, 'iptables', ['-w', '-t', t, '-X'], { backend });
    }
  }

  private async startServers(): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const pod of this.pods) {
      if (pod.serve === 'nginx') {
        const conf = this.writeNginxConf(pod);
        this.spawn(this.podNs(pod.name), ['nginx', '-c', conf, '-g', 'daemon off;'], { logFile: path.join(this.dir, `${pod.name}.log`) });
        waits.push(this.waitListening(this.podNs(pod.name), 'tcp', 80));
      } else if (pod.serve === 'dns') {
        this.spawn(this.podNs(pod.name), ['dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--user=root',
          `--listen-address=${pod.ip}`, '--bind-interfaces', `--address=/${DNS_NAME}/${DNS_ANSWER}`,
          `--pid-file=${path.join(this.dir, 'dnsmasq.pid')}`, '--log-facility=-'], { logFile: path.join(this.dir, 'dns.log') });
        waits.push(this.waitListening(this.podNs(pod.name), 'udp', 53));
      }
    }
    await Promise.all(waits);
  }

  private writeNginxConf(pod: PodSpec): string {
    const d = path.join(this.dir, pod.name);
    fs.mkdirSync(d, { recursive: true });
    // Answers like seed 004's demoapp, so a test sees which endpoint answered and whom it saw.
    const conf = `user root;
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${d}/body; proxy_temp_path ${d}/proxy; fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi; scgi_temp_path ${d}/scgi;
  keepalive_requests 100000;
  server {
    listen 80 reuseport backlog=4096;
    location = /blob { alias ${d}/blob; }
    location / { default_type text/plain; return 200 "ClientIP: $remote_addr, ServerName: ${pod.name}, ServerIP: $server_addr\\n"; }
  }
}
`;
    const file = path.join(d, 'nginx.conf');
    fs.writeFileSync(file, conf);
    return file;
  }

  async waitListening(ns: string, proto: 'tcp' | 'udp', port: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const out = this.exec(ns, ['ss', proto === 'tcp' ? '-ltnH' : '-lunH', `sport = :${port}`]);
      if (out.trim()) return;
      await sleep(50);
    }
    throw new Error(`nothing listening on ${proto}/${port} in ${ns} after ${timeoutMs} ms`);
  }

  /** The iptables/nftables tables of every namespace of this lab must be empty: translations are ours. */
  kernelRuleCount(): number {
    let n = 0;
    for (const ns of this.namespaces) {
      const out = this.exec(ns, ['sh', '-c', '(iptables-save 2>/dev/null; iptables-legacy-save 2>/dev/null) | grep -c "^-A" || true; nft list ruleset 2>/dev/null | grep -c "^\\s*\\(ip\\|meta\\|tcp\\|udp\\|counter\\|jump\\|dnat\\|snat\\|masquerade\\)" || true']);
      for (const line of out.trim().split('\n')) n += Number(line) || 0;
    }
    return n;
  }

  /** Idempotent: every caller (a signal handler, a finally block) waits for the same teardown. */
  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  private async teardown(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGTERM');
    await sleep(100);
    for (const ns of [...this.namespaces].reverse()) removeNamespace(ns);
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.rmSync(path.join(STATE_DIR, this.prefix), { force: true });
  }
}

/** Kill what runs inside a namespace (processes outlive `ip netns del`), then delete it. */
function removeNamespace(ns: string): void {
  try {
    for (const pid of run('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
  } catch { /* namespace gone */ }
  try { run('ip', ['netns', 'del', ns]); } catch { /* already gone */ }
}

/** Every namespace, process and file of the lab with this prefix, whoever built it. */
export function removeLab(prefix: string): void {
  const mine = run('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`${prefix}-`));
  for (const ns of mine) removeNamespace(ns);
  fs.rmSync(path.join(STATE_DIR, prefix), { force: true });
  fs.rmSync(path.join('/tmp', `kube-tun-${prefix}`), { recursive: true, force: true });
}

/**
 * Register namespaces named `<prefix>-…` as this process's, like a lab: if the process dies before
 * it removes them, the stale-lab collector does. Returns the release function (call after removal).
 */
export function claimPrefix(prefix: string): () => void {
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const file = path.join(STATE_DIR, prefix);
  fs.writeFileSync(file, `${process.pid}\n`);
  return () => fs.rmSync(file, { force: true });
}

/** Prefixes of the labs kept up by `npm run lab -- up`. */
export function persistentLabs(): string[] {
  if (!fs.existsSync(STATE_DIR)) return [];
  return fs.readdirSync(STATE_DIR).filter((p) => fs.readFileSync(path.join(STATE_DIR, p), 'utf8').trim() === PERSISTENT);
}

/**
 * Run `cleanup` once on SIGINT, SIGTERM or SIGHUP, then exit with 128 + the signal's number, so
 * that Ctrl-C (or a kill) in the middle of a demo, lab build or bench leaves nothing behind.
 */
export function cleanupOnSignals(cleanup: () => Promise<void>, say: (s: string) => void = (s) => console.error(s)): void {
  let running = false;
  for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
    process.on(sig, () => {
      if (running) return;
      running = true;
      say(`${sig}: removing what this run built`);
      cleanup().catch((e) => say(`cleanup: ${e.message}`)).finally(() => process.exit(128 + n));
    });
  }
}

/** Remove labs whose owning process is gone (a crashed run must not trip up later ones); `only` picks prefixes. */
export function collectStaleLabs(only: (prefix: string) => boolean = () => true): string[] {
  const removed: string[] = [];
  if (!fs.existsSync(STATE_DIR)) return removed;
  for (const prefix of fs.readdirSync(STATE_DIR).filter(only)) {
    const owner = fs.readFileSync(path.join(STATE_DIR, prefix), 'utf8').trim();
    if (owner === PERSISTENT) continue; // `npm run lab -- down` removes it
    let alive = false;
    try { process.kill(Number(owner), 0); alive = true; } catch { /* dead */ }
    if (alive) continue;
    removeLab(prefix);
    removed.push(prefix);
  }
  return removed;
}

/** kube-proxy's iptables-save text for one node, as `kube-tun rules` renders it (needs dist/). */
export function renderKernelRules(node: NodeName, configs: string[] = [LAB_CONFIG], extra: string[] = []): string {
  const cli = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
  if (!fs.existsSync(cli)) throw new Error(`${cli} missing: run \`npm run build\` first`);
  return runLarge(process.execPath, [cli, 'rules', ...configs.flatMap((c) => ['--config', c]), '--hostname-override', node, ...extra]);
}

export function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }
