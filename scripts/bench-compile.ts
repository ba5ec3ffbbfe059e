// Compile-speed and lookup benchmark for src/nat (issue 3 §4):
//   npx ts-node --transpile-only scripts/bench-compile.ts [services=10000] [endpointsPerService=2]
// Generates N ClusterIP+NodePort services with E endpoints each, times parse (YAML), buildRules,
// compileMatcher and renderIptablesSave; importing the iptables-save dump of those rules plus one
// trace (issue 3: "a dump with 10,000 services imports and traces in under a second"), and the
// YAML/JSON manifest load; then 1M match() calls on hits and misses, and the same hit loop against
// a 100-service matcher to show the lookup does not grow with the service count.
// Each phase: wall time of the first run (cold: the JIT has not seen that code yet), the best of
// the runs, and the process CPU time of the first run (all threads: on a busy machine, wall time
// also counts waiting for a core).
import { performance } from 'node:perf_hooks';
import { parseAllDocuments } from 'yaml';
import {
  ClusterState, EndpointInfo, NatDecision, NAT_DNAT, ServicePortInfo, buildRules, compileMatcher, defaultKubeTunConfig,
  formatIPv4, importIptablesSave, makeNodeSettings, parseCidr, parseConfig, renderIptablesSave, tracePacket,
} from '../src/nat';

const N = Number(process.argv[2] ?? 10000);
const E = Number(process.argv[3] ?? 2);
const CALLS = 1_000_000;

function clusterIP(i: number): number { return (0x0a600000 + i) >>> 0; } // 10.96.0.0 + i
function podIP(i: number, e: number): number { return (0x0a010000 + i * E + e) >>> 0; } // 10.1.0.0/16 + …

function generate(n: number): ClusterState {
  const config = { ...defaultKubeTunConfig(), clusterCIDR: parseCidr('10.0.0.0/8'), hostnameOverride: 'node-0', nodeIPs: [0xc0a80203] };
  const servicePorts: ServicePortInfo[] = [];
  const endpoints: Record<string, EndpointInfo[]> = {};
  for (let i = 0; i < n; i++) {
    const key = `bench/svc-${i}:http/TCP`;
    servicePorts.push({
      key, namespace: 'bench', name: `svc-${i}`, portName: 'http', protocol: 'TCP', type: 'NodePort',
      clusterIP: clusterIP(i), port: 80, targetPort: 8080, nodePort: 30000 + (i % 2768), externalIPs: [],
      loadBalancerVIPs: [], loadBalancerSourceRanges: [], externalPolicyLocal: false, internalPolicyLocal: false,
      healthCheckNodePort: 0, sessionAffinityClientIP: false, stickyMaxAgeSeconds: 10800, scheduler: 'random',
      source: { file: 'generated', doc: i + 1 },
    });
    const eps: EndpointInfo[] = [];
    for (let e = 0; e < E; e++) {
      const ip = podIP(i, e);
      eps.push({ ip, port: 8080, endpoint: `${formatIPv4(ip)}:8080`, nodeName: `node-${e}`, zone: null, ready: true, serving: true, terminating: false });
    }
    eps.sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
    endpoints[key] = eps;
  }
  servicePorts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { config, servicePorts, endpoints, nodes: [] };
}

function yamlFor(n: number): string {
  const docs = ['apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunConfiguration\nclusterCIDR: 10.0.0.0/8\nhostnameOverride: node-0\nnodeIPs: [192.168.2.3]'];
  for (let i = 0; i < n; i++) {
    docs.push(`apiVersion: v1\nkind: Service\nmetadata: { name: svc-${i}, namespace: bench }\nspec: { type: NodePort, clusterIP: ${formatIPv4(clusterIP(i))}, ports: [ { name: http, port: 80, targetPort: 8080, nodePort: ${30000 + (i % 2768)} } ] }`);
    const eps = Array.from({ length: E }, (_, e) => `{ addresses: [${formatIPv4(podIP(i, e))}], nodeName: node-${e} }`).join(', ');
    docs.push(`apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: svc-${i}-x, namespace: bench, labels: { kubernetes.io/service-name: svc-${i} } }\naddressType: IPv4\nports: [ { name: http, port: 8080 } ]\nendpoints: [ ${eps} ]`);
  }
  return docs.join('\n---\n');
}

type Results = Record<string, [first: number, best: number, firstCpu: number, reps: number]>;

/** Runs f `reps` times; records the first (cold) and the best (warm) wall time, and the first run's CPU time. */
function time<T>(label: string, f: () => T, results: Results, reps = 3): T {
  let v!: T;
  let first = 0, best = Infinity, firstCpu = 0;
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    v = f();
    const dt = performance.now() - t0;
    if (i === 0) {
      first = dt;
      const c = process.cpuUsage(c0);
      firstCpu = (c.user + c.system) / 1000;
    }
    best = Math.min(best, dt);
  }
  results[label] = [first, best, firstCpu, reps];
  return v;
}

function lookupBench(n: number, label: string): { hitNs: number; missNs: number; hits: number } {
  const state = generate(n);
  const node = makeNodeSettings(state, {});
  const m = compileMatcher(buildRules(state, node), node);
  const dst = new Uint32Array(4096), port = new Uint16Array(4096), mdst = new Uint32Array(4096);
  let seed = 12345;
  for (let i = 0; i < 4096; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    dst[i] = clusterIP(seed % n);
    port[i] = 80;
    mdst[i] = (0x08080000 + (seed & 0xffff)) >>> 0; // 8.8.x.x: no service
  }
  const d = new NatDecision();
  const src = 0x0a020305;
  let ok = 0;
  for (let i = 0; i < 200_000; i++) m.match(6, src, dst[i & 4095], 1024 + (i & 0x7fff), 80, i, d); // warm-up
  let t0 = performance.now();
  for (let i = 0; i < CALLS; i++) {
    m.match(6, src, dst[i & 4095], 1024 + (i & 0x7fff), port[i & 4095], i, d);
    if (d.action === NAT_DNAT) ok++;
  }
  const hitNs = ((performance.now() - t0) * 1e6) / CALLS;
  for (let i = 0; i < 200_000; i++) m.match(6, src, mdst[i & 4095], 1024, 443, i, d);
  t0 = performance.now();
  for (let i = 0; i < CALLS; i++) m.match(6, src, mdst[i & 4095], 1024 + (i & 0x7fff), 443, i, d);
  const missNs = ((performance.now() - t0) * 1e6) / CALLS;
  console.log(`${label.padEnd(22)} ${n} services: hit ${hitNs.toFixed(0)} ns/match (${ok}/${CALLS} DNAT), miss ${missNs.toFixed(0)} ns/match`);
  return { hitNs, missNs, hits: ok };
}

function main(): void {
  const r: Results = {};
  const state = time('generate state', () => generate(N), r);
  const node = makeNodeSettings(state, {});
  const rs = time('buildRules', () => buildRules(state, node), r);
  const m = time('compileMatcher', () => compileMatcher(rs, node), r);
  const text = time('renderIptablesSave', () => renderIptablesSave(rs), r);
  const save = time('render iptables-save fmt', () => renderIptablesSave(rs, { format: 'iptables-save' }), r);
  // `kube-tun trace --rules dump`: import the dump, trace one packet to a ClusterIP.
  const svc = N >> 1;
  const pkt = { proto: 'tcp', src: 0x0a020305, dst: clusterIP(svc), dport: 80 };
  const traced = time('import + trace (dump)', () => tracePacket(importIptablesSave(save), pkt, node), r, 5);
  const want = Array.from({ length: E }, (_, e) => formatIPv4(podIP(svc, e))).sort();
  if (traced.outcome !== 'DNAT' || JSON.stringify(traced.destinations.map((d) => d.addr).sort()) !== JSON.stringify(want)) {
    throw new Error(`trace of the imported dump: ${traced.outcome} ${JSON.stringify(traced.destinations)}, want DNAT to ${want.join(', ')}`);
  }
  const imported = time('importIptablesSave (dump)', () => importIptablesSave(save).rules, r);
  time('trace (imported dump)', () => tracePacket(imported, pkt, node), r);
  time('importIptablesSave (restore)', () => importIptablesSave(text).rules, r);
  time('import + compile (dump)', () => compileMatcher(importIptablesSave(save).rules, node), r);
  const yaml = yamlFor(N);
  const parsed = time('parseConfig (YAML)', () => parseConfig([{ file: 'bench.yaml', text: yaml }]), r, 2);
  const node2 = makeNodeSettings(parsed, {});
  const objs = parseAllDocuments(yaml).map((d) => d.toJS());
  const json = JSON.stringify([objs[0], { apiVersion: 'v1', kind: 'List', items: objs.slice(1) }]);
  time('parseConfig (JSON List)', () => parseConfig([{ file: 'bench.json', text: json }]), r);
  time('JSON -> matcher total', () => compileMatcher(buildRules(parseConfig([{ file: 'bench.json', text: json }]), node2), node2), r);
  console.log(`${N} services x ${E} endpoints: ${m.ruleCount} rules, restore text ${(text.length / 1e6).toFixed(1)} MB (${(save.length / 1e6).toFixed(1)} MB as iptables-save)`);
  console.log(`  ${'phase'.padEnd(28)} ${'first'.padStart(9)} ${'best of n'.padStart(13)} ${'first, CPU'.padStart(11)}`);
  for (const [k, [first, best, cpu, reps]] of Object.entries(r)) {
    console.log(`  ${k.padEnd(28)} ${first.toFixed(0).padStart(6)} ms ${best.toFixed(0).padStart(7)} ms (${reps}) ${cpu.toFixed(0).padStart(6)} ms`);
  }
  console.log(`  ${'buildRules + compileMatcher'.padEnd(28)} ${(r.buildRules[0] + r.compileMatcher[0]).toFixed(0).padStart(6)} ms ${(r.buildRules[1] + r.compileMatcher[1]).toFixed(0).padStart(7)} ms`);
  console.log(`  trace: ${traced.steps.length} steps, ${traced.outcome} to ${traced.destinations.map((d) => `${d.addr}:${d.port}`).join(', ')}`);
  console.log(`  matcher: ${m.describe()}`);
  lookupBench(N, 'lookup');
  lookupBench(100, 'lookup (small)');
}

main();
