// The kernel side of the differential test of issue 3 (test/nat-kernel.test.ts): a handful of
// network namespaces in which the *kernel* does kube-proxy's NAT with the rules kube-tun renders,
// real first packets from real sockets, and the kernel's decision read back from `conntrack -L`.
//
//   <p>-kn-out   192.168.2.100, .101 /24  (non-cluster clients on the underlay)
//        |  eth0 <-> em1
//   <p>-kn-node  192.168.2.2/24 on em1, 10.1.139.64/32 on tun0 (worker-1's tunnel address),
//                ip_forward=1, route_localnet=1, kube-proxy's rules loaded with iptables-restore.
//                Routes: the local endpoints 10.1.139.90/.93 and the default route into tun0, via
//                a next hop whose MAC nobody has (what is sent there vanishes in <p>-kn-sink, so
//                those endpoints never answer and the first packet's conntrack entry stays as the
//                NAT decision made it); worker-2's pod CIDR via 192.168.2.3 on em1 (again a
//                permanent neighbour entry with a MAC nobody has). Listeners on the probed node
//                ports make local delivery observable (connected / answered), telling NONE from
//                REJECT.
//        |  tun0     <-> eth0 of <p>-kn-sink  (no address: a drain)
//        |  cali-pod <-> eth0 of <p>-kn-pod   10.1.139.70/32   (a pod: cluster-CIDR client)
//        |  cali-hp  <-> eth0 of <p>-kn-hp    10.1.139.84/32   (an endpoint: hairpin client; it
//                                                               listens on tcp/80 and udp/5353)
//
// Kernel rules exist in <p>-kn-node only. Everything is removed by destroy(); a crashed run's
// namespaces are collected by test/support/global-setup.ts (the prefix is registered in
// /run/kube-tun-lab like scripts/lab.ts does).
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const STATE_DIR = '/run/kube-tun-lab';

export const NODE_IP = '192.168.2.2';
export const TUNNEL_IP = '10.1.139.64';
export const POD_IP = '10.1.139.70';
export const HAIRPIN_IP = '10.1.139.84';
export const OUTSIDE_IPS = ['192.168.2.100', '192.168.2.101'];
export const WORKER2_IP = '192.168.2.3';
/** Local endpoints that are not client namespaces: routed into tun0 (the sink). */
export const SINK_PODS = ['10.1.139.90', '10.1.139.93'];
const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee'; // Calico's host-side veth MAC
/** Next hop of everything routed into tun0: a permanent neighbour entry with a MAC nobody has. */
const SINK_GW = '169.254.0.1';

export type Backend = 'nft' | 'legacy';
export type ClientNs = 'node' | 'out' | 'pod' | 'hp' | 'sink';

export interface Probe {
  id: number;
  ns: ClientNs;
  proto: 'tcp' | 'udp';
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

/**
 * What the client saw: connected (TCP handshake done), answered (UDP reply), refused
 * (ECONNREFUSED: RST or ICMP port unreachable), timeout, eperm (local send refused by netfilter),
 * or another errno name.
 */
export type ClientResult = 'connected' | 'answered' | 'refused' | 'timeout' | 'eperm' | string;

export interface CtTuple { src: string; dst: string; sport: number; dport: number }
export interface CtEntry {
  proto: 'tcp' | 'udp';
  orig: CtTuple;
  reply: CtTuple;
  /** IPS_DST_NAT / IPS_SRC_NAT (listed by `conntrack -L --dst-nat` / `--src-nat`). */
  dstNat: boolean;
  srcNat: boolean;
  line: string;
}

export type KernelOutcome = 'DNAT' | 'NONE' | 'DROP' | 'REJECT' | 'UNKNOWN';
export interface KernelDecision {
  outcome: KernelOutcome;
  addr?: string;
  port?: number;
  masquerade: boolean;
  /** The conntrack line, or why there is none. */
  evidence: string;
}

function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  } catch (e: any) {
    const err = (e.stderr || '').toString().trim();
    throw new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`);
  }
}

// One probe process per client namespace: every probe's socket is bound to its own (src, sport),
// so the conntrack entry it creates is attributed by its original tuple; all are sent at once
// (0.5 ms apart), then the process waits `timeout` seconds for the outcomes.
const PROBER = String.raw`
import errno, json, selectors, socket, sys, time
probes = json.load(sys.stdin)
timeout = float(sys.argv[1])
sel = selectors.DefaultSelector()
res = {}
keep = []
def name(e):
    if e == errno.ECONNREFUSED: return 'refused'
    if e == errno.EPERM: return 'eperm'
    return errno.errorcode.get(e, str(e))
for p in probes:
    i = str(p['id'])
    tcp = p['proto'] == 'tcp'
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    keep.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((p['src'], p['sport']))
    except OSError as e:
        res[i] = 'bind-' + name(e.errno); continue
    s.setblocking(False)
    if tcp:
        e = s.connect_ex((p['dst'], p['dport']))
        if e in (0, errno.EINPROGRESS): sel.register(s, selectors.EVENT_WRITE, (i, tcp))
        else: res[i] = name(e)
    else:
        try:
            s.connect((p['dst'], p['dport']))
        except OSError as e:
            res[i] = name(e.errno); continue
        try:
            s.send(b'kube-tun probe')
        except OSError as e:
            # EPERM: netfilter refused the local send (DROP, or REJECT, whose ICMP error is
            # still delivered to this socket: wait for it); anything else is final.
            res[i] = name(e.errno)
            if e.errno != errno.EPERM: continue
        sel.register(s, selectors.EVENT_READ, (i, tcp))
    time.sleep(0.0005)
deadline = time.monotonic() + timeout
while sel.get_map():
    left = deadline - time.monotonic()
    if left <= 0: break
    for key, _ in sel.select(left):
        i, tcp = key.data
        s = key.fileobj
        if tcp:
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            res[i] = 'connected' if e == 0 else name(e)
        else:
            try:
                s.recv(2048); res[i] = 'answered'
            except OSError as e:
                res[i] = name(e.errno)
        sel.unregister(s)
for key in list(sel.get_map().values()):
    res.setdefault(key.data[0], 'timeout')
print(json.dumps(res))
`;

// TCP listeners that accept and close, UDP listeners that echo (see startListeners).
const LISTENER = String.raw`
import json, selectors, socket, sys
cfg = json.loads(sys.argv[1])
sel = selectors.DefaultSelector()
for port in cfg['tcp']:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(1024); s.setblocking(False); sel.register(s, selectors.EVENT_READ, 't')
for port in cfg['udp']:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', port)); s.setblocking(False); sel.register(s, selectors.EVENT_READ, 'u')
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == 't':
                c, _ = s.accept(); c.close()
            else:
                d, a = s.recvfrom(2048); s.sendto(d, a)
        except OSError:
            pass
`;

export class KernelNatNet {
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private destroyed = false;
  backend: Backend | null = null;

  constructor(prefix = `kt${randomBytes(3).toString('hex')}`) {
    this.prefix = prefix;
  }

  ns(name: ClientNs): string { return `${this.prefix}-kn-${name}`; }

  exec(ns: ClientNs, cmd: string[], input?: string): string {
    return sh('ip', ['netns', 'exec', this.ns(ns), ...cmd], input);
  }

  private ip(ns: ClientNs, args: string): void { sh('ip', ['-n', this.ns(ns), ...args.split(/\s+/)]); }
  private sysctl(ns: ClientNs, ...kv: string[]): void { this.exec(ns, ['sysctl', '-qw', ...kv]); }

  private addNs(name: ClientNs): void {
    sh('ip', ['netns', 'add', this.ns(name)]);
    this.namespaces.push(this.ns(name));
    this.ip(name, 'link set lo up');
    this.sysctl(name, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0');
  }

  /** Creates the namespaces, links, addresses and routes (no rules yet). */
  build(): this {
    fs.mkdirSync(STATE_DIR, { recursive: true });
    fs.writeFileSync(path.join(STATE_DIR, this.prefix), `${process.pid}\n`);
    for (const n of ['node', 'out', 'pod', 'hp', 'sink'] as const) this.addNs(n);
    // The node: a router with kube-proxy's sysctls (route_localnet for localhost NodePorts) and no
    // ICMP rate limit, so every REJECT reaches its client.
    this.sysctl('node', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.route_localnet=1', 'net.ipv4.icmp_ratelimit=0',
      'net.ipv4.icmp_msgs_per_sec=1000000', 'net.ipv4.icmp_msgs_burst=1000000');
    sh('ip', ['link', 'add', 'em1', 'netns', this.ns('node'), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.ns('out')]);
    this.ip('node', `addr add ${NODE_IP}/24 dev em1`);
    this.ip('node', 'link set em1 up');
    for (const a of OUTSIDE_IPS) this.ip('out', `addr add ${a}/24 dev eth0`);
    this.ip('out', 'link set eth0 up');
    this.ip('out', `route add default via ${NODE_IP} dev eth0`);
    // tun0 (this kernel has no dummy or ipip driver): a veth whose peer sits alone in the sink
    // namespace; everything routed into it goes to a gateway MAC nobody has and is dropped there.
    sh('ip', ['link', 'add', 'tun0', 'netns', this.ns('node'), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.ns('sink')]);
    this.ip('sink', 'link set eth0 up');
    this.ip('node', `addr add ${TUNNEL_IP}/32 dev tun0`);
    this.ip('node', 'link set tun0 up');
    this.ip('node', `neigh add ${SINK_GW} lladdr 02:00:00:00:00:01 dev tun0 nud permanent`);
    this.ip('node', `route add default via ${SINK_GW} dev tun0 onlink`);
    for (const a of SINK_PODS) this.ip('node', `route add ${a}/32 via ${SINK_GW} dev tun0 onlink`);
    this.ip('node', `neigh add ${WORKER2_IP} lladdr 02:00:00:00:02:03 dev em1 nud permanent`);
    this.ip('node', `route add 10.1.236.128/26 via ${WORKER2_IP} dev em1`);
    for (const [ns, ip, hostIf] of [['pod', POD_IP, 'cali-pod'], ['hp', HAIRPIN_IP, 'cali-hp']] as const) {
      sh('ip', ['link', 'add', 'eth0', 'netns', this.ns(ns), 'type', 'veth', 'peer', 'name', hostIf, 'netns', this.ns('node'),
        'address', HOST_VETH_MAC]);
      this.ip(ns, `addr add ${ip}/32 dev eth0`);
      this.ip(ns, 'link set eth0 up');
      this.ip(ns, 'route add 169.254.1.1 dev eth0 scope link');
      this.ip(ns, 'route add default via 169.254.1.1 dev eth0');
      // Calico's gateway without an address on the node: a static neighbour instead of proxy ARP.
      this.ip(ns, `neigh add 169.254.1.1 lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`);
      this.ip('node', `link set ${hostIf} up`);
      this.ip('node', `route add ${ip}/32 dev ${hostIf} scope link`);
      this.sysctl('node', `net.ipv4.conf.${hostIf}.rp_filter=0`);
    }
    return this;
  }

  private iptablesBin(tool: 'iptables-restore' | 'iptables-save', backend: Backend | 'default'): string {
    return backend === 'default' ? tool : tool.replace(/^iptables/, `iptables-${backend}`);
  }

  /**
   * Loads `text` with `iptables-restore` in the node namespace: the default backend first
   * (iptables-nft here), iptables-legacy if that fails. Returns the backend used.
   */
  loadRules(text: string): Backend {
    const errors: string[] = [];
    for (const b of ['default', 'legacy'] as const) {
      try {
        this.exec('node', [this.iptablesBin('iptables-restore', b), '-w'], text);
        const v = b === 'default' ? this.exec('node', ['iptables', '--version']) : '(legacy)';
        this.backend = /nf_tables/.test(v) ? 'nft' : 'legacy';
        return this.backend;
      } catch (e) {
        errors.push(`${b}: ${(e as Error).message}`);
      }
    }
    throw new Error(`iptables-restore failed with every backend:\n${errors.join('\n')}`);
  }

  /** `iptables-save -t filter` + `iptables-save -t nat` of the backend the rules were loaded with. */
  saveRules(): string {
    const bin = this.backend === 'legacy' ? 'iptables-legacy-save' : 'iptables-nft-save';
    return this.exec('node', [bin, '-t', 'filter']) + this.exec('node', [bin, '-t', 'nat']);
  }

  /** The node namespace's IPv4 addresses (what `-m addrtype --*-type LOCAL` sees, plus 127/8). */
  localAddresses(): string[] {
    const out = this.exec('node', ['ip', '-4', '-o', 'addr', 'show']);
    return [...out.matchAll(/ inet (\d+\.\d+\.\d+\.\d+)\//g)].map((m) => m[1]);
  }

  /**
   * Listeners in `ns` (accept-and-close on TCP, echo on UDP). On the node they make local delivery
   * visible; on an endpoint that is a client namespace (hairpin) they keep its kernel from
   * answering a DNATed SYN with a RST, which would make conntrack drop the entry at once
   * (nf_conntrack_proto_tcp: a RST as the only reply kills the connection).
   */
  async startListeners(ns: ClientNs, tcp: number[], udp: number[]): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.ns(ns), 'python3', '-c', LISTENER, JSON.stringify({ tcp, udp })],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`listeners in ${ns} not ready after 10 s: ${err}`)), 10_000);
      child.stdout!.on('data', (d) => { if (String(d).includes('ready')) { clearTimeout(t); resolve(); } });
      child.once('exit', (code) => { clearTimeout(t); reject(new Error(`listeners in ${ns} exited ${code}: ${err}`)); });
    });
  }

  /** Sends every probe (one prober per namespace, all namespaces at once); returns id -> result. */
  async probe(probes: readonly Probe[], timeoutSec = 1.2): Promise<Map<number, ClientResult>> {
    const byNs = new Map<ClientNs, Probe[]>();
    for (const p of probes) {
      const l = byNs.get(p.ns) ?? [];
      l.push(p);
      byNs.set(p.ns, l);
    }
    const results = new Map<number, ClientResult>();
    await Promise.all([...byNs].map(([ns, list]) => new Promise<void>((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', this.ns(ns), 'python3', '-c', PROBER, String(timeoutSec)],
        { stdio: ['pipe', 'pipe', 'pipe'] });
      this.children.push(child);
      let out = '', err = '';
      child.stdout!.on('data', (d) => { out += d; });
      child.stderr!.on('data', (d) => { err += d; });
      child.once('error', reject);
      child.once('exit', (code) => {
        if (code !== 0) { reject(new Error(`prober in ${ns} exited ${code}: ${err}`)); return; }
        try {
          const r = JSON.parse(out) as Record<string, string>;
          for (const p of list) results.set(p.id, r[String(p.id)] ?? 'missing');
          resolve();
        } catch (e) {
          reject(new Error(`prober in ${ns}: bad output ${JSON.stringify(out)} ${err}`));
        }
      });
      child.stdin!.end(JSON.stringify(list.map(({ id, proto, src, sport, dst, dport }) => ({ id, proto, src, sport, dst, dport }))));
    })));
    return results;
  }

  /**
   * `conntrack -L` of the node namespace (TCP and UDP entries), with the NAT status bits. The
   * address alone does not tell a masquerade: a node-originated packet leaving through an
   * interface whose address is its own source keeps its address and gets a new port
   * (--random-fully), so IPS_SRC_NAT is read instead (`conntrack -L --src-nat`).
   */
  conntrack(): CtEntry[] {
    const all = parseConntrack(this.exec('node', ['conntrack', '-L']));
    const keys = (args: string[]) => new Set(parseConntrack(this.exec('node', ['conntrack', '-L', ...args])).map((e) => tupleKey(e.proto, e.orig)));
    const snat = keys(['--src-nat']), dnat = keys(['--dst-nat']);
    for (const e of all) {
      e.srcNat = snat.has(tupleKey(e.proto, e.orig));
      e.dstNat = dnat.has(tupleKey(e.proto, e.orig));
    }
    return all;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) {
      try {
        for (const pid of sh('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
          try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
        }
      } catch { /* namespace gone */ }
      try { sh('ip', ['netns', 'del', ns]); } catch { /* already gone */ }
    }
    fs.rmSync(path.join(STATE_DIR, this.prefix), { force: true });
  }
}

const TUPLE_RE = /src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/g;

export function parseConntrack(text: string): CtEntry[] {
  const out: CtEntry[] = [];
  for (const line of text.split('\n')) {
    const proto = line.startsWith('tcp ') ? 'tcp' : line.startsWith('udp ') ? 'udp' : null;
    if (!proto) continue;
    const t = [...line.matchAll(TUPLE_RE)].map((m) => ({ src: m[1], dst: m[2], sport: Number(m[3]), dport: Number(m[4]) }));
    if (t.length !== 2) throw new Error(`conntrack line with ${t.length} tuples: ${line}`);
    out.push({ proto, orig: t[0], reply: t[1], dstNat: false, srcNat: false, line: line.trim() });
  }
  return out;
}

export function tupleKey(proto: string, t: CtTuple): string {
  return `${proto} ${t.src}:${t.sport} > ${t.dst}:${t.dport}`;
}

/**
 * The kernel's decision for one probe. A conntrack entry means the first packet passed every hook
 * up to the confirmation: DNAT when the reply source is not the original destination
 * (reply src:sport = the endpoint; IPS_DST_NAT), masquerade when IPS_SRC_NAT is set (the reply
 * goes to another address or port than the original source; unique source ports rule out
 * conntrack's own clash-avoiding source-port rewrite). No entry: the packet died in a filter chain before confirmation; the client
 * tells REJECT (ICMP port unreachable -> ECONNREFUSED) from DROP (nothing; EPERM for a local UDP
 * send). An entry with a refused client and no DNAT is a REJECT after confirmation (a local
 * destination, rejected in filter INPUT after the loopback): the probed node ports all have
 * listeners, so an untouched delivery connects or is answered.
 */
export function kernelDecision(p: Probe, client: ClientResult, ct: CtEntry | undefined): KernelDecision {
  if (ct) {
    const dnat = ct.reply.src !== ct.orig.dst || ct.reply.sport !== ct.orig.dport;
    if (dnat !== ct.dstNat) return { outcome: 'UNKNOWN', masquerade: false, evidence: `${ct.line}: reply source and IPS_DST_NAT (${ct.dstNat}) disagree` };
    const changed = ct.reply.dst !== ct.orig.src || ct.reply.dport !== ct.orig.sport;
    if (changed !== ct.srcNat) return { outcome: 'UNKNOWN', masquerade: false, evidence: `${ct.line}: reply destination and IPS_SRC_NAT (${ct.srcNat}) disagree` };
    const masquerade = ct.srcNat;
    const evidence = `${ct.line}${ct.srcNat ? ' [SRC_NAT]' : ''}${ct.dstNat ? ' [DST_NAT]' : ''}`;
    if (dnat) return { outcome: 'DNAT', addr: ct.reply.src, port: ct.reply.sport, masquerade, evidence };
    if (client === 'refused') return { outcome: 'REJECT', masquerade, evidence: `${evidence} (client: refused)` };
    return { outcome: 'NONE', masquerade, evidence: `${evidence} (client: ${client})` };
  }
  const why = `no conntrack entry for ${p.proto} ${p.src}:${p.sport} > ${p.dst}:${p.dport} (client: ${client})`;
  if (client === 'refused') return { outcome: 'REJECT', masquerade: false, evidence: why };
  if (client === 'timeout' || client === 'eperm') return { outcome: 'DROP', masquerade: false, evidence: why };
  return { outcome: 'UNKNOWN', masquerade: false, evidence: why };
}
