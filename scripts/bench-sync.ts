// Incremental sync benchmark (issue 11 §2): a one-endpoint change at N services, applied by a
// full buildRules + compileMatcher and by IncrementalProxier.update, and the memory each holds;
// also a Service removed and added back (that re-lays the shared chains, KUBE-SERVICES, …).
//   npx ts-node --transpile-only scripts/bench-sync.ts [sizes=1000,10000,50000] [changes=50]
// Services as scripts/bench/gen-config.ts writes them (ClusterIP, one endpoint each); the last one
// has a second endpoint, which the change makes ready and unready again, alternately (the total
// stays put: crossing largeClusterEndpointsThreshold would rebuild every service, as in kube-proxy). Bounded: one full
// build per size, `changes` updates; run with --expose-gc for the heap figures.
import { performance } from 'node:perf_hooks';
import {
  ClusterState, EndpointInfo, IncrementalProxier, ServicePortInfo, buildRules, compileMatcher, defaultKubeTunConfig, formatIPv4,
  makeNodeSettings, parseCidr, renderIptablesSave,
} from '../src/nat';

const SIZES = (process.argv[2] ?? '1000,10000,50000').split(',').map(Number);
const CHANGES = Number(process.argv[3] ?? 50);
const NS = 'aaa-scale';

function endpoint(ip: number, ready = true): EndpointInfo {
  return { ip, port: 80, endpoint: `${formatIPv4(ip)}:80`, nodeName: 'worker-1', zone: null, ready, serving: ready, terminating: false };
}

function scaleState(n: number): ClusterState {
  const config = { ...defaultKubeTunConfig(), clusterCIDR: parseCidr('10.1.0.0/16'), hostnameOverride: 'worker-1', nodeIPs: [0xc0a80203] };
  const servicePorts: ServicePortInfo[] = [];
  const endpoints: Record<string, EndpointInfo[]> = {};
  for (let i = 0; i < n; i++) {
    const name = `s${String(i).padStart(6, '0')}`;
    const key = `${NS}/${name}:/TCP`;
    servicePorts.push({
      key, namespace: NS, name, portName: '', protocol: 'TCP', type: 'ClusterIP', clusterIP: (0x0a640001 + i) >>> 0, port: 8080,
      targetPort: 80, nodePort: 0, externalIPs: [], loadBalancerVIPs: [], loadBalancerSourceRanges: [], externalPolicyLocal: false,
      internalPolicyLocal: false, healthCheckNodePort: 0, sessionAffinityClientIP: false, stickyMaxAgeSeconds: 10800,
      scheduler: 'random', source: { file: 'generated', doc: i + 1 },
    });
    endpoints[key] = [endpoint(PRIMARY)];
  }
  return { config, servicePorts, endpoints, nodes: [] };
}

/** The state with service `i`'s endpoints replaced (a new object, as a watch event's state would be). */
function withEndpoints(s: ClusterState, i: number, eps: EndpointInfo[]): ClusterState {
  return { ...s, endpoints: { ...s.endpoints, [s.servicePorts[i].key]: eps } };
}
const PRIMARY = 0x0a018b54, EXTRA = 0x0a018b5d;

/** JS heap plus typed arrays (the compiled rules live in ArrayBuffers, outside the heap). */
function heapMB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return (m.heapUsed + m.arrayBuffers) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

for (const n of SIZES) {
  const base = withEndpoints(scaleState(n), n - 1, [endpoint(PRIMARY), endpoint(EXTRA, false)]);
  const node = makeNodeSettings(base, {});
  const h0 = heapMB();
  const t0 = performance.now();
  const fullMatcher = compileMatcher(buildRules(base, node), node);
  const fullMs = performance.now() - t0;
  const hFull = heapMB() - h0;
  void fullMatcher;

  const h1 = heapMB();
  const p = new IncrementalProxier(node);
  const first = p.full(base);
  const hIncr = heapMB() - h1;
  const target = n - 1;
  const name = new Set([`${NS}/${base.servicePorts[target].name}`]);
  const two = withEndpoints(base, target, [endpoint(PRIMARY), endpoint(EXTRA)]);
  const ms: number[] = [];
  let state = base;
  for (let c = 0; c < CHANGES; c++) {
    state = c % 2 === 0 ? two : base;
    const r = p.update(state, name);
    if (r.full) throw new Error(`update ${c} fell back to a full sync`);
    ms.push(r.ms);
  }
  const same = renderIptablesSave(p.rules()) === renderIptablesSave(buildRules(state, node));
  if (!same) throw new Error('incremental rules differ from a full build');
  // A Service removed, then added back.
  const mid = base.servicePorts[n >> 1];
  const without: ClusterState = { ...state, servicePorts: state.servicePorts.filter((sp) => sp !== mid) };
  // (At 1,000 services this crosses largeClusterEndpointsThreshold: every Service changes, a full sync.)
  const svcMs: number[] = [];
  let fulls = 0;
  for (let c = 0; c < Math.min(CHANGES, 20); c++) {
    const r = p.update(c % 2 === 0 ? without : state, new Set([`${NS}/${mid.name}`]));
    if (r.full) fulls++;
    svcMs.push(r.ms);
  }
  const cr = p.matcher.compiled;
  console.log(`${String(n).padStart(6)} services: full build+compile ${fullMs.toFixed(0)} ms (memory +${hFull.toFixed(0)} MB); `
    + `IncrementalProxier.full ${first.ms.toFixed(0)} ms (memory +${hIncr.toFixed(0)} MB); one-endpoint update median `
    + `${median(ms).toFixed(3)} ms, max ${Math.max(...ms).toFixed(3)} ms over ${CHANGES} (${(fullMs / median(ms)).toFixed(0)}x); `
    + `Service removed/added median ${median(svcMs).toFixed(2)} ms, max ${Math.max(...svcMs).toFixed(2)} ms (${fulls} of ${svcMs.length} full); `
    + `garbage ${cr.garbageRules} of ${cr.ruleCount} rules; text equal to a full build`);
}
