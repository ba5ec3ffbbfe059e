// The benchmark's cases. Each sample runs one bounded load on one side and then proves which path
// carried it: on the kube-tun side its own counters (DNAT decisions, packets read from the TUN,
// IPIP packets) must have moved by at least what the load generator reports; on the kernel side the
// packet counters of the service's KUBE-SVC chain in iptables must have; the pod-direct baselines
// must not have been NATed at all. A sample that went the wrong way throws: the case fails loudly.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NodeName, renderKernelRules, IptablesBackend, sleep } from '../lab';
import { BenchEnv, SVC, ServiceTarget, BASE_CONFIGS, CT_MAX } from './env';
import { CaseResult, MetricDef, VariantId, newCase, summarizeCase, directNotes, VARIANT_SHORT, isKubeTun } from './results';
import { ab, nstat, delta, iperf3, rr, connectLatency, flood } from './tools';
import { writeScaleConfig, EXTRA_ENDPOINT } from './gen-config';
import { partialRestore, fullSyncRestore, countRules } from './rules-diff';
import { nsText, runIn, abort } from './exec';
import { fmt } from './stats';

export interface Params {
  mode: 'full' | 'quick' | 'tiny';
  reps: number;
  backends: IptablesBackend[];
  tunDirect: boolean;          // also measure pod-direct through kube-tun (TUN without DNAT)
  connSeconds: number;
  concurrency: number;
  bulkSeconds: number;
  bulkStreams: number[];
  udpSeconds: number;
  rrCount: number;
  crossSeconds: number;
  scaleNs: number[];
  scaleConnSeconds: number;
  connectCount: number;
  rulesNs: number[];
  memTargets: number[];
  memKernelTarget: number;
  floodRate: number;
}

export interface Ctx { env: BenchEnv; p: Params; log: (s: string) => void }

export class PathError extends Error {}

const isKernel = (v: VariantId): v is 'kernel-legacy' | 'kernel-nft' => v === 'kernel-legacy' || v === 'kernel-nft';
const isDirect = (v: VariantId) => v === 'direct' || v === 'kube-tun-direct';
const kernels = (p: Params): VariantId[] => p.backends.map((b) => `kernel-${b}` as VariantId);
function trafficVariants(p: Params): VariantId[] {
  return ['kube-tun', ...kernels(p), 'direct', ...(p.tunDirect ? ['kube-tun-direct' as VariantId] : [])];
}
function dest(v: VariantId, t: ServiceTarget): { host: string; port: number } {
  return isDirect(v) ? { host: t.direct, port: t.directPort } : { host: t.vip, port: t.port };
}

interface Expect { conns?: number; packets?: number; bytes?: number; ipip?: boolean }

/**
 * Snapshot the counters of the path a variant must take; the returned function checks that they
 * moved as the load says they must and describes what moved.
 */
async function pathProbe(ctx: Ctx, v: VariantId, node: NodeName, t: ServiceTarget): Promise<(e: Expect) => Promise<string>> {
  const env = ctx.env;
  if (isKubeTun(v)) {
    const s0 = await env.ktStats(node);
    const peer: NodeName = node === 'worker-1' ? 'worker-2' : 'worker-1';
    const p0 = await env.ktStats(peer);
    return async (e) => {
      const s1 = await env.ktStats(node), p1 = await env.ktStats(peer);
      const d = (a: Record<string, number>, b: Record<string, number>, k: string) => (b[k] ?? 0) - (a[k] ?? 0);
      const dnat = d(s0.connections, s1.connections, 'dnat');
      const rx = d(s0.packets, s1.packets, 'rxTun'), rxB = d(s0.packets, s1.packets, 'rxTunBytes');
      const ipipOut = d(s0.packets, s1.packets, 'txIpip'), ipipIn = d(p0.packets, p1.packets, 'rxIpip');
      const what = `kube-tun ${node}: +${dnat} DNAT, +${rx} packets (${fmt(rxB / 1e6)} MB) read from its TUN` +
        (e.ipip ? `, +${ipipOut} IPIP out, ${peer} +${ipipIn} IPIP in` : '');
      const fail = (why: string) => { throw new PathError(`${VARIANT_SHORT[v]} did not go through kube-tun as expected (${why}): ${what}`); };
      if (v !== 'kube-tun-direct') {
        if (e.conns !== undefined && dnat < e.conns) fail(`expected >= ${Math.ceil(e.conns)} DNAT decisions`);
      } else if (dnat !== 0) fail('pod-direct traffic was DNATed');
      if (e.packets !== undefined && rx < e.packets) fail(`expected >= ${Math.ceil(e.packets)} packets`);
      if (e.bytes !== undefined && rxB < e.bytes) fail(`expected >= ${Math.ceil(e.bytes)} bytes`);
      if (e.ipip && (ipipOut < (e.packets ?? 1) || ipipIn < 1)) fail('expected IPIP between the nodes');
      return what;
    };
  }
  const backend = env.backendOf(v)!;
  const c0 = env.kernelServicePackets(backend, node, t);
  const chain = env.serviceChain(node, t);
  return async (e) => {
    const n = env.kernelServicePackets(backend, node, t) - c0;
    const what = `iptables-${backend} ${node} ${chain}: +${n} packets`;
    if (isKernel(v)) {
      if (n < Math.max(1, e.conns ?? 1)) throw new PathError(`${VARIANT_SHORT[v]} did not go through the kernel's NAT rules (expected >= ${Math.ceil(e.conns ?? 1)}): ${what}`);
    } else if (n !== 0) {
      throw new PathError(`pod-direct traffic hit the service's NAT rules: ${what}`);
    }
    return what;
  };
}

async function alternate(ctx: Ctx, c: CaseResult, group: string, variants: VariantId[],
  fn: (v: VariantId, rep: number) => Promise<{ values: Record<string, number>; check: string; info?: Record<string, unknown> }>,
  reps = ctx.p.reps): Promise<void> {
  if (!c.groups.includes(group)) c.groups.push(group);
  for (let rep = 0; rep < reps; rep++) {
    for (const v of variants) {
      if (abort.requested) throw new Error('aborted');
      const at = new Date().toISOString(), load1 = +os.loadavg()[0].toFixed(2);
      const r = await fn(v, rep);
      c.samples.push({ variant: v, group, rep, values: r.values, check: r.check, info: r.info, at, load1 });
      const shown = c.metrics.filter((m) => Number.isFinite(r.values[m.key])).slice(0, 4)
        .map((m) => `${m.key}=${fmt(r.values[m.key])}`).join(' ');
      ctx.log(`    ${c.id} | ${group} | rep ${rep + 1}/${reps} | ${VARIANT_SHORT[v].padEnd(17)} | ${shown}`);
    }
  }
}

async function runCase(ctx: Ctx, c: CaseResult, body: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  ctx.log(`  ${c.title}`);
  try {
    await body();
  } catch (e: any) {
    c.error = (e instanceof PathError ? 'wrong path: ' : '') + (e?.message ?? String(e));
    ctx.log(`  !! ${c.id} FAILED: ${c.error}`);
  } finally {
    c.seconds += (Date.now() - t0) / 1000;
    summarizeCase(c);
    directNotes(c);
  }
}

// ------------------------------------------------------------------ connection rate

const CONN_METRICS: MetricDef[] = [
  { key: 'connPerSec', label: 'connections/s', unit: 'conn/s', better: 'higher', chart: true },
  { key: 'p50Ms', label: 'p50 latency', unit: 'ms', better: 'lower' },
  { key: 'p99Ms', label: 'p99 latency', unit: 'ms', better: 'lower' },
  { key: 'synRetrans', label: 'SYN retransmissions', unit: '', better: 'lower' },
  { key: 'failed', label: 'failed requests', unit: '', better: 'lower' },
];

async function connRateSample(ctx: Ctx, v: VariantId, clientPod: string, t: ServiceTarget, seconds: number) {
  const env = ctx.env, lab = env.labFor(v);
  const node: NodeName = clientPod === 'client' ? 'worker-2' : 'worker-1';
  const ns = lab.podNs(clientPod), srv = lab.podNs('nginx1');
  await env.flushConntrack(v);
  const { host, port } = dest(v, t);
  const check = await pathProbe(ctx, v, node, t);
  const c0 = nstat(ns), s0 = nstat(srv);
  const r = await ab(ns, `http://${host}:${port}/`, seconds, ctx.p.concurrency);
  const c1 = nstat(ns), s1 = nstat(srv);
  const ok = Math.max(0, r.complete - r.failed);
  if (ok === 0) throw new Error(`${VARIANT_SHORT[v]}: ab completed no request to ${host}:${port} (${r.failed} failed)`);
  const what = await check({ conns: ok * 0.9, packets: ok * 3, ipip: node === 'worker-2' && v === 'kube-tun' });
  const cd = delta(c0, c1, ['TcpActiveOpens', 'TcpRetransSegs', 'TcpExtTCPSynRetrans', 'TcpAttemptFails', 'TcpEstabResets']);
  const sd = delta(s0, s1, ['TcpPassiveOpens', 'TcpExtPAWSTimewait', 'TcpExtPAWSEstab', 'TcpExtListenDrops', 'TcpExtListenOverflows', 'TcpExtTCPTimeWaitOverflow', 'TcpExtTW']);
  return {
    values: { connPerSec: r.rps, p50Ms: r.p50Ms, p99Ms: r.p99Ms, synRetrans: cd.TcpExtTCPSynRetrans, retransSegs: cd.TcpRetransSegs, failed: r.failed + r.non2xx },
    check: what,
    info: { url: `http://${host}:${port}/`, complete: r.complete, seconds: r.seconds, meanMs: r.meanMs, client: cd, server: sd },
  };
}

export async function connRate(ctx: Ctx): Promise<CaseResult> {
  const c = newCase('conn-rate', 'Connection rate',
    'short HTTP/1.0 connections (no keep-alive) from pod client1 to the ClusterIP of bench/web (one nginx endpoint on the same node); direct = the pod IP. SYN retransmissions counted with nstat in the client namespace.',
    CONN_METRICS, trafficVariants(ctx.p));
  c.command.push(`ab -q -r -s 5 -c ${ctx.p.concurrency} -t ${ctx.p.connSeconds} -n 50000000 http://${SVC.web.vip}/`);
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    await alternate(ctx, c, 'pod → ClusterIP', c.variants, (v) => connRateSample(ctx, v, 'client1', SVC.web, ctx.p.connSeconds));
    synNote(c);
  });
  return c;
}

function synNote(c: CaseResult): void {
  const byV = new Map<VariantId, number>();
  for (const s of c.samples) byV.set(s.variant, (byV.get(s.variant) ?? 0) + (s.values.synRetrans ?? 0));
  c.notes.push(`SYN retransmissions summed over all samples: ${[...byV].map(([v, n]) => `${VARIANT_SHORT[v]} ${n}`).join(', ')}` +
    ' (a retransmitted SYN costs its connection 1-3 s: PAWS against TIME_WAIT, see PERF-NOTES).');
}

// ------------------------------------------------------------------ bulk TCP

export async function bulk(ctx: Ctx): Promise<CaseResult> {
  const c = newCase('bulk', 'Bulk TCP',
    'iperf3 from pod client1 to the ClusterIP of bench/iperf (one endpoint: iperf3 -s in nginx1, same node).',
    [{ key: 'gbps', label: 'throughput', unit: 'Gbit/s', better: 'higher', chart: true },
      { key: 'retransmits', label: 'TCP retransmits', unit: '', better: 'lower' }], trafficVariants(ctx.p));
  c.command.push(`iperf3 -c ${SVC.iperf.vip} -p 5201 -t ${ctx.p.bulkSeconds} [-P 4] -J`);
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    for (const streams of ctx.p.bulkStreams) {
      await alternate(ctx, c, `${streams} stream${streams > 1 ? 's' : ''}`, c.variants, async (v) => {
        const lab = ctx.env.labFor(v), { host, port } = dest(v, SVC.iperf);
        const check = await pathProbe(ctx, v, 'worker-1', SVC.iperf);
        const r = await iperf3(lab.podNs('client1'), host, port, ctx.p.bulkSeconds, { streams });
        const what = await check({ conns: 1, bytes: r.bytes * 0.9 });
        return { values: { gbps: r.gbps, retransmits: r.retransmits }, check: what, info: { bytes: r.bytes, seconds: r.seconds } };
      });
    }
  });
  return c;
}

// ------------------------------------------------------------------ small UDP packets

export async function udp(ctx: Ctx): Promise<CaseResult> {
  const c = newCase('udp', 'Small UDP packets',
    'iperf3 -u, 64-byte datagrams, unlimited rate, one sender in pod client1 to the ClusterIP of bench/iperf (UDP 5201); packets/s the server received.',
    [{ key: 'rxKpps', label: 'received', unit: 'kpps', better: 'higher', chart: true },
      { key: 'lossPct', label: 'loss', unit: '%', better: 'lower' },
      { key: 'txKpps', label: 'offered', unit: 'kpps', better: 'none' }], trafficVariants(ctx.p));
  c.command.push(`iperf3 -u -b 0 -l 64 -c ${SVC.iperfUdp.vip} -p 5201 -t ${ctx.p.udpSeconds} -J`);
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    await alternate(ctx, c, '64-byte datagrams', c.variants, async (v) => {
      const lab = ctx.env.labFor(v), { host, port } = dest(v, SVC.iperfUdp);
      await ctx.env.flushConntrack(v);
      const check = await pathProbe(ctx, v, 'worker-1', SVC.iperfUdp);
      const r = await iperf3(lab.podNs('client1'), host, port, ctx.p.udpSeconds, { udp: true, len: 64 });
      const received = (r.packets ?? 0) - (r.lost ?? 0);
      const what = await check({ conns: 1, packets: received * 0.9 });
      return { values: { rxKpps: r.pps! / 1000, lossPct: r.lossPct!, txKpps: r.sentPps! / 1000 }, check: what, info: { packets: r.packets, lost: r.lost, seconds: r.seconds } };
    });
    c.notes.push("iperf3's UDP sender tops out near 190 kpps on this class of machine (PERF-NOTES): the kernel figures may be the sender's limit, not NAT's.");
  });
  return c;
}

// ------------------------------------------------------------------ request latency

export async function latency(ctx: Ctx): Promise<CaseResult> {
  const c = newCase('latency', 'Request latency',
    `one TCP connection (TCP_NODELAY) from pod client1 to the ClusterIP of bench/echo, ${ctx.p.rrCount} sequential 64-byte request/response round trips (Node echo server and client on both sides).`,
    [{ key: 'p50Us', label: 'p50 round trip', unit: 'µs', better: 'lower', chart: true },
      { key: 'p99Us', label: 'p99 round trip', unit: 'µs', better: 'lower', chart: true },
      { key: 'meanUs', label: 'mean round trip', unit: 'µs', better: 'lower' }], trafficVariants(ctx.p));
  c.command.push(`node dist/scripts/bench/probe.js rr ${SVC.echo.vip} ${SVC.echo.port} ${ctx.p.rrCount} 64`);
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    await alternate(ctx, c, '64-byte request/response', c.variants, async (v) => {
      const lab = ctx.env.labFor(v), { host, port } = dest(v, SVC.echo);
      const check = await pathProbe(ctx, v, 'worker-1', SVC.echo);
      const r = await rr(lab.podNs('client1'), host, port, ctx.p.rrCount, 64);
      const what = await check({ conns: 1, packets: ctx.p.rrCount });
      return { values: { p50Us: r.p50, p99Us: r.p99, meanUs: r.mean }, check: what, info: { n: r.n, p90Us: r.p90, minUs: r.min, maxUs: r.max } };
    });
  });
  return c;
}

// ------------------------------------------------------------------ cross-node

export async function crossNode(ctx: Ctx): Promise<CaseResult> {
  const c = newCase('cross-node', 'Cross-node',
    'pod client on worker-2 to ClusterIPs whose endpoint is on worker-1: kube-tun DNATs on worker-2 and carries the packets in IPIP; the kernel side routes the pod CIDRs over the underlay without a tunnel.',
    [{ key: 'connPerSec', label: 'connections/s', unit: 'conn/s', better: 'higher', chart: true },
      { key: 'p99Ms', label: 'p99 latency', unit: 'ms', better: 'lower' },
      { key: 'synRetrans', label: 'SYN retransmissions', unit: '', better: 'lower' },
      { key: 'gbps', label: 'throughput', unit: 'Gbit/s', better: 'higher', chart: true }],
    ['kube-tun', ...kernels(ctx.p), 'direct']);
  c.command.push(`ab -c ${ctx.p.concurrency} -t ${ctx.p.crossSeconds} http://${SVC.web.vip}/`, `iperf3 -c ${SVC.iperf.vip} -t ${ctx.p.crossSeconds}`);
  c.notes.push('This kernel has no IPIP module (CONFIG_NET_IPIP unset), so the kernel side cannot tunnel: it routes 10.1.139.64/26 via 192.168.2.2 directly. kube-tun pays 20 bytes of IPIP header per packet and its userspace encapsulation/decapsulation on both nodes.');
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    await alternate(ctx, c, 'connections', c.variants, async (v) => {
      const r = await connRateSample(ctx, v, 'client', SVC.web, ctx.p.crossSeconds);
      return { ...r, values: { connPerSec: r.values.connPerSec, p99Ms: r.values.p99Ms, synRetrans: r.values.synRetrans } };
    });
    await alternate(ctx, c, 'bulk TCP, 1 stream', c.variants, async (v) => {
      const lab = ctx.env.labFor(v), { host, port } = dest(v, SVC.iperf);
      const check = await pathProbe(ctx, v, 'worker-2', SVC.iperf);
      const r = await iperf3(lab.podNs('client'), host, port, ctx.p.crossSeconds, {});
      const what = await check({ conns: 1, bytes: r.bytes * 0.9, ipip: v === 'kube-tun' });
      return { values: { gbps: r.gbps }, check: what, info: { bytes: r.bytes, retransmits: r.retransmits } };
    });
  });
  return c;
}

// ------------------------------------------------------------------ offload on / off

/**
 * Bulk TCP through kube-tun with its TUN offloads on (TSO super-packets through the TUN, software
 * GSO/GRO around IPIP) and off (the daemons restarted with --offload off), same node and
 * cross-node, next to the kernel. Variant order flips between the two groups so that each rep
 * restarts the daemons as few times as possible.
 */
export async function offload(ctx: Ctx): Promise<CaseResult> {
  const k = kernels(ctx.p)[0];
  const c = newCase('offload', 'TUN offloads on / off',
    'iperf3, 1 stream, to the ClusterIP of bench/iperf (endpoint in nginx1 on worker-1): from pod client1 (same node) and from pod client on worker-2 (IPIP); kube-tun with --offload on (default) and restarted with --offload off.',
    [{ key: 'gbps', label: 'throughput', unit: 'Gbit/s', better: 'higher', chart: true },
      { key: 'retransmits', label: 'TCP retransmits', unit: '', better: 'lower' },
      { key: 'kbPerRead', label: 'kB per TUN read', unit: 'kB', better: 'none' }],
    ['kube-tun', 'kube-tun-offload-off', k]);
  c.command.push(`kube-tun run --offload on|off; iperf3 -c ${SVC.iperf.vip} -p 5201 -t ${ctx.p.bulkSeconds} -J`);
  const groups: [string, NodeName, string, VariantId[]][] = [
    ['same node, 1 stream', 'worker-1', 'client1', ['kube-tun', k, 'kube-tun-offload-off']],
    ['cross-node (IPIP), 1 stream', 'worker-2', 'client', ['kube-tun-offload-off', k, 'kube-tun']],
  ];
  await runCase(ctx, c, async () => {
    await ctx.env.ensureServices(0);
    try {
      for (const [group, node, pod, order] of groups) {
        await alternate(ctx, c, group, order, async (v) => {
          if (isKubeTun(v)) await ctx.env.setOffload(v === 'kube-tun-offload-off' ? 'off' : 'on');
          const lab = ctx.env.labFor(v), { host, port } = dest(v, SVC.iperf);
          const s0 = isKubeTun(v) ? await ctx.env.ktStats(node) : undefined;
          const check = await pathProbe(ctx, v, node, SVC.iperf);
          const r = await iperf3(lab.podNs(pod), host, port, ctx.p.bulkSeconds, {});
          const what = await check({ conns: 1, bytes: r.bytes * 0.9, ipip: node === 'worker-2' && isKubeTun(v) });
          const values: Record<string, number> = { gbps: r.gbps, retransmits: r.retransmits };
          if (s0 !== undefined) {
            const s1 = await ctx.env.ktStats(node), d = (key: string) => (s1.packets[key] ?? 0) - (s0.packets[key] ?? 0);
            values.kbPerRead = d('rxTunBytes') / Math.max(1, d('rxTun')) / 1000;
          }
          return { values, check: what, info: { bytes: r.bytes, seconds: r.seconds } };
        });
      }
    } finally {
      await ctx.env.setOffload('on');
    }
    c.notes.push('Offload on: the TUN has IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6): the kernel hands kube-tun TSO super-packets of up to 64 KiB; towards IPIP kube-tun cuts them into 1480-byte packets itself and sends them with one sendmmsg() per batch on its raw IPIP socket, and coalesces what arrives over IPIP (GRO). "kB per TUN read" shows the super-packets.');
  });
  return c;
}

// ------------------------------------------------------------------ memory

function slabConntrack(): { active: number; objsize: number } {
  const line = fs.readFileSync('/proc/slabinfo', 'utf8').split('\n').find((l) => l.startsWith('nf_conntrack '));
  if (!line) return { active: NaN, objsize: NaN };
  const f = line.split(/\s+/);
  return { active: Number(f[1]), objsize: Number(f[3]) };
}

export async function memory(ctx: Ctx): Promise<CaseResult> {
  const p = ctx.p, env = ctx.env;
  const variants: VariantId[] = ['kube-tun', ...(env.kernel.legacy ? ['kernel-legacy' as VariantId] : kernels(p).slice(0, 1))];
  const c = newCase('memory', 'Memory',
    `conntrack entries made by TCP SYNs from distinct (source, port) pairs (a TUN device in pod client1 writes them) to bench/sink, whose endpoint never answers: entries stay in SYN_SENT. kube-tun: daemon RSS (--ct-max ${CT_MAX.toLocaleString('en-US')}, table preallocated); kernel: nf_conntrack slab objects.`,
    [{ key: 'memMiB', label: 'memory (RSS / slab)', unit: 'MiB', better: 'none', chart: true },
      { key: 'bytesPerEntry', label: 'bytes per entry', unit: 'B', better: 'lower', chart: true },
      { key: 'entries', label: 'entries', unit: '', better: 'none' }], variants);
  c.command.push(`node dist/scripts/bench/probe.js flood gen0 ${SVC.sink.vip} 9 … (SYNs at ${p.floodRate} pps)`);
  const kv = variants.find(isKernel);
  await runCase(ctx, c, async () => {
    await env.ensureServices(0);
    const groups = [0, ...p.memTargets].map((n) => `${n.toLocaleString('en-US')} entries`);
    for (const g of groups) c.groups.push(g);
    for (let rep = 0; rep < p.reps; rep++) {
      // kube-tun: a fresh daemon, then top the table up to each target in turn.
      const d = await env.restartDaemon('worker-1', BASE_CONFIGS);
      await sleep(1000);
      const ns = env.kt.podNs('client1');
      const st0 = await env.ktStats('worker-1');
      const e0 = st0.conntrack.entries, rss0 = env.ktRssKb('worker-1').rss;
      const push = (group: string, values: Record<string, number>, check: string, info?: Record<string, unknown>, v: VariantId = 'kube-tun') =>
        c.samples.push({ variant: v, group, rep, values, check, info, at: new Date().toISOString(), load1: +os.loadavg()[0].toFixed(2) });
      push(groups[0], { memMiB: rss0 / 1024, entries: e0 }, `kube-tun worker-1 pid ${d.child.pid}: ${e0} entries`);
      let sent = 0;
      for (let i = 0; i < p.memTargets.length; i++) {
        const target = p.memTargets[i];
        const check = await pathProbe(ctx, 'kube-tun', 'worker-1', SVC.sink);
        const before = (await env.ktStats('worker-1')).conntrack.entries;
        let entries = 0;
        const t0 = Date.now();
        for (let round = 0; round < 6; round++) {
          const st = await env.ktStats('worker-1');
          entries = st.conntrack.entries;
          if (entries >= target * 0.99) break;
          const want = Math.ceil((target - entries) * (round === 0 ? 1.0 : 1.02));
          await flood(ns, SVC.sink.vip, SVC.sink.port, sent, want, p.floodRate);
          sent += want;
          entries = await settle(() => env.ktStats('worker-1').then((s) => s.conntrack.entries));
        }
        const genMs = Date.now() - t0;
        const rss = env.ktRssKb('worker-1');
        const what = await check({ conns: (entries - before) * 0.9 });
        const values = { memMiB: rss.rss / 1024, entries, bytesPerEntry: ((rss.rss - rss0) * 1024) / Math.max(1, entries - e0) };
        push(groups[i + 1], values, what, { rssKb: rss.rss, hwmKb: rss.hwm, rss0Kb: rss0, synsSent: sent, ms: genMs });
        ctx.log(`    memory | ${groups[i + 1]} | rep ${rep + 1}/${p.reps} | kube-tun          | ${entries} entries, RSS ${fmt(rss.rss / 1024)} MiB (+${fmt(values.bytesPerEntry)} B/entry) in ${genMs} ms`);
      }
      // kernel: the same SYNs into the kernel lab; nf_conntrack's slab grows by one object per entry.
      if (kv) {
        const lab = env.labFor(kv), backend = env.backendOf(kv)!;
        await env.flushConntrack(kv, ['worker-1']);
        await sleep(300);
        const slab0 = slabConntrack();
        const check = await pathProbe(ctx, kv, 'worker-1', SVC.sink);
        const count = () => Number(nsText(lab.nodeNs('worker-1'), ['sh', '-c', 'conntrack -C 2>/dev/null || cat /proc/sys/net/netfilter/nf_conntrack_count']).trim());
        const target = p.memKernelTarget;
        const kgroup = `${target.toLocaleString('en-US')} entries`;
        if (!c.groups.includes(kgroup)) c.groups.push(kgroup);
        let ksent = 0, entries = 0;
        for (let round = 0; round < 4; round++) {
          entries = count();
          if (entries >= target * 0.99) break;
          const want = target - entries;
          await flood(lab.podNs('client1'), SVC.sink.vip, SVC.sink.port, ksent, want, p.floodRate);
          ksent += want;
          entries = await settle(async () => count());
        }
        const slab1 = slabConntrack();
        const what = await check({ conns: entries * 0.9 });
        const bpe = ((slab1.active - slab0.active) * slab1.objsize) / Math.max(1, entries);
        push(kgroup, { memMiB: ((slab1.active - slab0.active) * slab1.objsize) / 2 ** 20, entries, bytesPerEntry: bpe }, what,
          { slabObjsize: slab1.objsize, slabActiveBefore: slab0.active, slabActiveAfter: slab1.active, backend }, kv);
        ctx.log(`    memory | ${kgroup} | rep ${rep + 1}/${p.reps} | ${VARIANT_SHORT[kv].padEnd(17)} | ${entries} entries, slab +${slab1.active - slab0.active} objects × ${slab1.objsize} B`);
        await env.flushConntrack(kv, ['worker-1']);
      }
    }
    await env.restartDaemon('worker-1', BASE_CONFIGS);
    const slab = slabConntrack();
    c.notes.push(`Kernel: nf_conntrack slab object size ${slab.objsize} B (/proc/slabinfo), plus its hash bucket; /proc/slabinfo is host-wide, so other namespaces' connections add noise to the kernel figure. ` +
      `nf_conntrack_max is ${fs.readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8').trim()} on this host (a global setting the benchmark leaves alone), so the kernel side stops at ${p.memKernelTarget.toLocaleString('en-US')} entries.`);
    c.notes.push(`kube-tun preallocates its table for --ct-max entries (typed arrays): RSS at 0 entries already holds the index; "bytes per entry" is RSS growth over the empty daemon divided by the entries added.`);
  });
  return c;
}

/** Poll a counter until it stops growing (bounded: 10 s). */
async function settle(read: () => Promise<number>): Promise<number> {
  let last = await read();
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    await sleep(300);
    const n = await read();
    if (n <= last) return n;
    last = n;
  }
  return last;
}

// ------------------------------------------------------------------ scale

export function scaleCase(ctx: Ctx): CaseResult {
  const c = newCase('scale', 'Scale',
    'connection rate and first-packet latency (connect() time of sequential new connections) to bench/web from pod client1, with N generated services whose KUBE-SERVICES rules come first (kube-proxy layout: one rule per service port).',
    [{ key: 'connPerSec', label: 'connections/s', unit: 'conn/s', better: 'higher', chart: true },
      { key: 'p99Ms', label: 'p99 latency', unit: 'ms', better: 'lower' },
      { key: 'synRetrans', label: 'SYN retransmissions', unit: '', better: 'lower' },
      { key: 'connectP50Us', label: 'first packet (connect) p50', unit: 'µs', better: 'lower', chart: true },
      { key: 'connectP99Us', label: 'first packet (connect) p99', unit: 'µs', better: 'lower' }],
    ['kube-tun', ...kernels(ctx.p)]);
  c.command.push(`ab -c ${ctx.p.concurrency} -t ${ctx.p.scaleConnSeconds} http://${SVC.web.vip}/`, `node probe.js connect ${SVC.web.vip} 80 ${ctx.p.connectCount}`);
  return c;
}

export async function scaleStep(ctx: Ctx, c: CaseResult, n: number): Promise<void> {
  await runCase(ctx, c, async () => {
    const info = await ctx.env.ensureServices(n);
    const group = `${n.toLocaleString('en-US')} service${n === 1 ? '' : 's'} ahead`;
    if (info.rules !== undefined) {
      const ready = info.kubeTunReady as Record<string, number>;
      c.notes.push(`${group}: ${info.kubeServicesRulesAhead} KUBE-SERVICES rules ahead of bench/web's, ${info.rules} rules in all (rendered by \`kube-tun rules\` in ${info.renderMs} ms); ` +
        `loaded by ${ctx.p.backends.map((b) => `iptables-${b}-restore in ${info[`restoreMs_${b}`]} ms`).join(', ')}; kube-tun started with ${ready.services} service ports (${ready.rules} rules) compiled in ${Math.round(ready.ms)} ms.`);
    }
    await alternate(ctx, c, group, c.variants, async (v) => {
      const r = await connRateSample(ctx, v, 'client1', SVC.web, ctx.p.scaleConnSeconds);
      const lab = ctx.env.labFor(v);
      const check = await pathProbe(ctx, v, 'worker-1', SVC.web);
      const cl = await connectLatency(lab.podNs('client1'), SVC.web.vip, SVC.web.port, ctx.p.connectCount);
      if (cl.n < ctx.p.connectCount * 0.9) throw new Error(`${VARIANT_SHORT[v]}: only ${cl.n} of ${ctx.p.connectCount} connects succeeded (${cl.failures} failed)`);
      const what = await check({ conns: cl.n * 0.9 });
      return {
        values: { connPerSec: r.values.connPerSec, p99Ms: r.values.p99Ms, synRetrans: r.values.synRetrans, connectP50Us: cl.p50, connectP99Us: cl.p99 },
        check: `${r.check}; connect: ${what}`, info: { ...r.info, connect: cl },
      };
    });
  });
}

// ------------------------------------------------------------------ rule updates

export function rulesCase(ctx: Ctx): CaseResult {
  const c = newCase('rules', 'Rule updates',
    'time to apply a one-endpoint change (a second endpoint for one service) and a full resync on worker-1. Kernel: iptables-restore --noflush of the changed chains only (kube-proxy partial sync) and of every KUBE chain (full sync). kube-tun: config rewrite + reload over the control socket: it recompiles everything and swaps the matcher, so both are a full compile.',
    [{ key: 'oneEndpointMs', label: 'one-endpoint change', unit: 'ms', better: 'lower', chart: true },
      { key: 'fullResyncMs', label: 'full resync', unit: 'ms', better: 'lower', chart: true }],
    ['kube-tun', ...kernels(ctx.p)]);
  c.command.push('iptables-{legacy,nft}-restore -w --noflush < changed chains | all KUBE chains', 'kube-tun control socket {"cmd":"reload"}');
  return c;
}

function countIn(text: string, needle: string): number { return text.split(needle).length - 1; }

/** Wall time of `iptables-<backend>-restore -w --noflush < file`, measured inside the namespace. */
async function timedRestore(ns: string, backend: IptablesBackend, file: string): Promise<number> {
  const script = `s=$(date +%s%N); iptables-${backend}-restore -w --noflush < "$1" || exit 3; e=$(date +%s%N); echo $((e - s))`;
  const r = await runIn(ns, ['sh', '-c', script, 'sh', file], 300_000);
  if (r.code !== 0 || r.timedOut) throw new Error(`iptables-${backend}-restore < ${file} failed: ${r.stderr.trim().slice(0, 500)}`);
  return Number(r.stdout.trim()) / 1e6;
}

export async function rulesStep(ctx: Ctx, c: CaseResult, n: number): Promise<void> {
  const env = ctx.env;
  await runCase(ctx, c, async () => {
    await env.ensureServices(n);
    const group = `${n.toLocaleString('en-US')} services`;
    const file = path.join(env.kt.dir, `scale-${n}.yaml`);
    const changedFile = path.join(env.kt.dir, `scale-${n}-changed.yaml`);
    writeScaleConfig(changedFile, n, true);
    const base = env.rendered.get(n)!.text;
    const changed = renderKernelRules('worker-1', [changedFile, ...BASE_CONFIGS]);
    fs.rmSync(changedFile, { force: true });
    const fwd = partialRestore(base, changed), back = partialRestore(changed, base);
    const full = fullSyncRestore(base);
    const needle = `--to-destination ${EXTRA_ENDPOINT}:80`;
    const baseCount = countIn(base, needle);
    if (countIn(changed, needle) !== baseCount + 1) throw new Error(`the changed rules do not add one DNAT to ${needle}`);
    const files = { fwd: path.join(env.kt.dir, `restore-${n}-change.txt`), back: path.join(env.kt.dir, `restore-${n}-revert.txt`), full: path.join(env.kt.dir, `restore-${n}-full.txt`) };
    fs.writeFileSync(files.fwd, fwd.text); fs.writeFileSync(files.back, back.text); fs.writeFileSync(files.full, full);
    c.notes.push(`${group}: the partial restore touches ${fwd.changed.length} chain(s) (${fwd.changed.join(', ')}), the full sync ${countRules(full)} rules. ` +
      'Kernel times are iptables-restore\'s own run (started and timed by a shell inside the node namespace, as kube-proxy execs it); kube-tun times are the control-socket round trip of the reload.');
    const expectedKubeServices = countRules(base, 'KUBE-SERVICES ');
    await alternate(ctx, c, group, c.variants, async (v, rep) => {
      if (v === 'kube-tun') {
        const s0 = await env.ktStats('worker-1');
        writeScaleConfig(file, n, true);
        let t = process.hrtime.bigint();
        const out1 = await env.ktRequest('worker-1', 'reload');
        const oneMs = Number(process.hrtime.bigint() - t) / 1e6;
        let live = '';
        if (rep === 0) live = await env.ktRequest('worker-1', 'rules');
        writeScaleConfig(file, n, false);
        await env.ktRequest('worker-1', 'reload');
        t = process.hrtime.bigint();
        const out3 = await env.ktRequest('worker-1', 'reload');
        const fullMs = Number(process.hrtime.bigint() - t) / 1e6;
        const s1 = await env.ktStats('worker-1');
        const syncs = s1.sync.count - s0.sync.count;
        if (syncs !== 3) throw new PathError(`kube-tun applied ${syncs} of 3 reloads (${out1.trim()} / ${out3.trim()})`);
        if (rep === 0 && countIn(live, needle) !== baseCount + 1) throw new PathError(`kube-tun's live rules do not show the new endpoint ${needle} after the reload`);
        return { values: { oneEndpointMs: oneMs, fullResyncMs: fullMs }, check: `kube-tun worker-1: +${syncs} syncs (${out1.trim()})${rep === 0 ? `, live rules show ${needle}` : ''}` };
      }
      const backend = env.backendOf(v)!, lab = env.kernel[backend]!;
      const save = () => lab.iptables('worker-1', 'iptables-save', ['-t', 'nat'], { backend });
      const oneMs = await timedRestore(lab.nodeNs('worker-1'), backend, files.fwd);
      const after = save();
      if (countIn(after, needle) !== baseCount + 1) throw new PathError(`iptables-${backend}: the one-endpoint change is not in the nat table`);
      await timedRestore(lab.nodeNs('worker-1'), backend, files.back);
      const fullMs = await timedRestore(lab.nodeNs('worker-1'), backend, files.full);
      const final = save();
      const ks = countRules(final, 'KUBE-SERVICES ');
      if (countIn(final, needle) !== baseCount || ks !== expectedKubeServices) {
        throw new PathError(`iptables-${backend}: after the full resync the nat table has ${ks} KUBE-SERVICES rules (want ${expectedKubeServices})`);
      }
      return { values: { oneEndpointMs: oneMs, fullResyncMs: fullMs }, check: `iptables-${backend}-save: new endpoint present after the change, ${ks} KUBE-SERVICES rules after the full resync` };
    });
  });
}
