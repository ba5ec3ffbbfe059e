// The change path of watch and file mode: the bounded-frequency runner, stateChanges, the one
// applyState (affinity carried across swaps, nothing done when nothing changed) and topology hints.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { ClusterState, NatDecision, NAT_DNAT, applyTopology, canUseTopology, formatIPv4, parseConfig, parseIPv4 } from '../src/nat';
import { IPPROTO_TCP } from '../src/netstack/proto';
import { ConntrackTable } from '../src/conntrack';
import { BoundedFrequencyRunner } from '../src/control/bounded-runner';
import { Reloader } from '../src/control/reloader';
import { stateChanges, type DaemonOptions } from '../src/control/sync';
import type { DesiredState } from '../src/control/desired-state';
import type { Pipeline } from '../src/datapath/pipeline';
import { until } from './support/api-double';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kubeSource } from '../src/cli/run';

const CONFIG = `apiVersion: kubetun.dev/v1alpha1
kind: KubeTunConfiguration
serviceCIDR: 10.96.0.0/12
clusterCIDR: 10.1.0.0/16
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/zone: zone-a}}
spec: {podCIDR: 10.1.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.1}]}
`;

function service(name: string, ip: string, extra = ''): string {
  return `---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default${extra.includes('annotations') ? '' : ''}}
spec: {clusterIP: ${ip}, ports: [{port: 80, targetPort: 8080}]${extra}}
`;
}

function slice(svc: string, eps: { ip: string; zones?: string[]; ready?: boolean }[]): string {
  const list = eps.map((e) => `{addresses: [${e.ip}], conditions: {ready: ${e.ready ?? true}}${e.zones ? `, hints: {forZones: [${e.zones.map((z) => `{name: ${z}}`).join(', ')}]}` : ''}}`);
  return `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${svc}-x, namespace: default, labels: {kubernetes.io/service-name: ${svc}}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [${list.join(', ')}]
`;
}

const state = (...docs: string[]): ClusterState => parseConfig([{ file: 't.yaml', text: CONFIG + docs.join('') }]);

describe('BoundedFrequencyRunner', () => {
  it('after a quiet spell runs at once (two in a row: burst 2), then once per min interval, coalescing bursts; periodic resync', async () => {
    const runs: { at: number; periodic: boolean }[] = [];
    const t0 = Date.now();
    const r = new BoundedFrequencyRunner((periodic) => runs.push({ at: Date.now() - t0, periodic }), 300, 60_000);
    r.start(); // the first sync took a token
    await new Promise((res) => setTimeout(res, 350)); // refilled: two tokens
    r.run();
    await until(() => expect(runs.length).toBe(1));
    r.run();
    await until(() => expect(runs.length).toBe(2));
    expect(runs[1].at).toBeLessThan(350 + 250); // both at once, not a min interval apart
    for (let i = 0; i < 20; i++) r.run(); // no token left: one run, when the next token is due
    expect(r.queued).toBe(true);
    await until(() => expect(runs.length).toBe(3));
    expect(runs[2].at - runs[1].at).toBeGreaterThanOrEqual(150);
    await new Promise((res) => setTimeout(res, 100));
    expect(runs.length).toBe(3);
    expect(runs.every((x) => !x.periodic)).toBe(true);
    r.stop();
    const p: boolean[] = [];
    const q = new BoundedFrequencyRunner((periodic) => p.push(periodic), 10, 60);
    q.start();
    await until(() => expect(p.length).toBeGreaterThanOrEqual(2));
    q.stop();
    expect(p.every((x) => x)).toBe(true);
  });
});

describe('stateChanges', () => {
  const base = state(service('a', '10.96.0.10'), slice('a', [{ ip: '10.1.1.5' }]), service('b', '10.96.0.11'));
  it('names the Services whose endpoints or ports changed, nothing when nothing did, all for a Node', () => {
    expect([...(stateChanges(base, state(service('a', '10.96.0.10'), slice('a', [{ ip: '10.1.1.5' }]), service('b', '10.96.0.11'))) as Set<string>)]).toEqual([]);
    expect([...(stateChanges(base, state(service('a', '10.96.0.10'), slice('a', [{ ip: '10.1.1.6' }]), service('b', '10.96.0.11'))) as Set<string>)]).toEqual(['default/a']);
    expect([...(stateChanges(base, state(service('a', '10.96.0.10'), slice('a', [{ ip: '10.1.1.5' }]))) as Set<string>)]).toEqual(['default/b']);
    const moved = parseConfig([{ file: 't.yaml', text: CONFIG.replace('zone-a', 'zone-b') + service('a', '10.96.0.10') + slice('a', [{ ip: '10.1.1.5' }]) + service('b', '10.96.0.11') }]);
    expect(stateChanges(base, moved)).toBe('all');
  });
});

function options(): DaemonOptions {
  return {
    node: 'n1', tun: 'kt-x', ctMax: 1024, configFiles: [], controlSocket: '/nonexistent', watch: false, keepRouting: false,
    metricsBindAddress: '', healthzBindAddress: '', syncPeriodMs: 60_000, minSyncPeriodMs: 0, kube: null,
  };
}

describe('Reloader.applyState', () => {
  const sticky = ', sessionAffinity: ClientIP';
  const before = state(service('s', '10.96.0.20', sticky), slice('s', [{ ip: '10.1.1.5' }, { ip: '10.1.1.6' }]));
  const after = state(service('s', '10.96.0.20', sticky), slice('s', [{ ip: '10.1.1.5' }, { ip: '10.1.1.6' }, { ip: '10.1.1.7' }, { ip: '10.1.1.8' }]));

  function reloader(initial: ClusterState, next: () => ClusterState, everything = false) {
    const synced: { services: number; endpoints: number }[] = [];
    const source: DesiredState = { kind: 'test', read: (prev) => { const s = next(); return { state: s, changed: everything ? 'all' : stateChanges(prev, s) }; } };
    const r = new Reloader(options(), pino({ level: 'silent' }), (_s, c) => synced.push(c), initial, source);
    const pipeline = { matcher: r.loaded.matcher, ct: new ConntrackTable({ max: 1024 }) } as unknown as Pipeline;
    r.start(pipeline);
    return { r, pipeline, synced };
  }

  function endpointOf(p: Pipeline, client: number, now: number): string {
    const d = new NatDecision();
    p.matcher.match(IPPROTO_TCP, client, parseIPv4('10.96.0.20'), 40000, 80, now, d);
    expect(d.action).toBe(NAT_DNAT);
    return formatIPv4(d.addr);
  }

  // Per Service, the proxier patches the running matcher (same object); 'all' (a Node or the
  // configuration changed) compiles a new one, which must take the xt_recent tables over.
  it.each([['per Service: the matcher patched', false], ['everything: a new matcher', true]] as const)(
    'keeps every client on its endpoint across an endpoint change (%s)', (_what, everything) => {
    const { r, pipeline } = reloader(before, () => after, everything);
    const clients = Array.from({ length: 40 }, (_, i) => parseIPv4(`10.1.2.${i + 10}`));
    const first = clients.map((c) => endpointOf(pipeline, c, 1000));
    const old = pipeline.matcher;
    expect(r.reload('test')).toBe(true);
    if (everything) expect(pipeline.matcher).not.toBe(old);
    else expect(pipeline.matcher).toBe(old);
    r.stop();
    // Without the carried tables 40 clients over 4 endpoints would nearly all move (p of none moving ~ 2^-40).
    expect(clients.map((c) => endpointOf(pipeline, c, 2000))).toEqual(first);
    // New clients do reach the added endpoints.
    const fresh = new Set(Array.from({ length: 60 }, (_, i) => endpointOf(pipeline, parseIPv4(`10.1.3.${i + 10}`), 2000)));
    expect([...fresh].some((e) => e === '10.1.1.7' || e === '10.1.1.8')).toBe(true);
  });

  it('a resync of an unchanged state swaps nothing and counts no change; a change counts one endpoint change', () => {
    let cur = before;
    const { r, pipeline, synced } = reloader(before, () => cur);
    const m = pipeline.matcher;
    expect(r.reload('periodic resync')).toBe(true);
    expect(pipeline.matcher).toBe(m);
    expect(r.rebuildCount).toBe(0);
    expect(synced).toHaveLength(1); // the first load only: a no-op resync is not a rules sync
    cur = after;
    expect(r.reload('change')).toBe(true);
    expect(r.rebuildCount).toBe(1);
    expect(synced.at(-1)).toEqual({ services: 0, endpoints: 1 });
    r.stop();
  });

  it('a refused state keeps the previous rules and leaves the change pending', () => {
    const { r, pipeline } = reloader(before, () => { throw new Error('bad file'); });
    const m = pipeline.matcher;
    r.noteChange('x');
    expect(r.reload('x')).toBe(false);
    expect(pipeline.matcher).toBe(m);
    expect(r.pendingSince).toBeGreaterThan(0);
    r.stop();
  });
});

describe('topology hints (kube-proxy topology.go)', () => {
  const auto = ', trafficDistribution: PreferClose';
  const eps = (st: ClusterState) => (st.endpoints['default/t:/TCP'] ?? []).map((e) => formatIPv4(e.ip));
  const routed = (...docs: string[]) => eps(applyTopology(state(...docs), 'n1'));

  it('uses only the endpoints hinted for the node zone when every ready endpoint has hints and one matches', () => {
    expect(routed(service('t', '10.96.0.30', auto), slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6', zones: ['zone-b'] }])))
      .toEqual(['10.1.1.5']);
    // the annotation works as well
    const annotated = service('t', '10.96.0.30').replace('namespace: default', 'namespace: default, annotations: {service.kubernetes.io/topology-mode: Auto}');
    expect(routed(annotated, slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6', zones: ['zone-b'] }]))).toEqual(['10.1.1.5']);
  });

  it('falls back to all endpoints: a ready endpoint without hints, no hint for this zone, no opt-in, no zone label', () => {
    expect(routed(service('t', '10.96.0.30', auto), slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6' }])))
      .toEqual(['10.1.1.5', '10.1.1.6']);
    expect(routed(service('t', '10.96.0.30', auto), slice('t', [{ ip: '10.1.1.5', zones: ['zone-c'] }, { ip: '10.1.1.6', zones: ['zone-b'] }])))
      .toEqual(['10.1.1.5', '10.1.1.6']);
    expect(routed(service('t', '10.96.0.30'), slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6', zones: ['zone-b'] }])))
      .toEqual(['10.1.1.5', '10.1.1.6']);
    const noZone = parseConfig([{ file: 't', text: CONFIG.replace(', labels: {topology.kubernetes.io/zone: zone-a}', '') + service('t', '10.96.0.30', auto) + slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6', zones: ['zone-b'] }]) }]);
    expect(eps(applyTopology(noZone, 'n1'))).toEqual(['10.1.1.5', '10.1.1.6']);
  });

  it('a not-ready endpoint without hints does not disable hints (only ready ones are checked)', () => {
    const st = state(service('t', '10.96.0.30', auto), slice('t', [{ ip: '10.1.1.5', zones: ['zone-a'] }, { ip: '10.1.1.6', zones: ['zone-b'] }, { ip: '10.1.1.7', ready: false }]));
    expect(canUseTopology(st.servicePorts[0], st.endpoints['default/t:/TCP'], 'zone-a')).toBe(true);
    expect(eps(applyTopology(st, 'n1'))).toEqual(['10.1.1.5', '10.1.1.7']);
    expect(canUseTopology(st.servicePorts[0], st.endpoints['default/t:/TCP'], null)).toBe(false);
  });
});

describe('kube-tun run: where the state comes from', () => {
  it('--kubeconfig; else in-cluster with KUBERNETES_SERVICE_HOST and settings-only (or no) --config; else files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-src-'));
    try {
      const settings = path.join(dir, 'settings.yaml'), full = path.join(dir, 'full.yaml');
      fs.writeFileSync(settings, CONFIG.split('---')[0]);
      fs.writeFileSync(full, CONFIG);
      const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1' };
      expect(kubeSource({ kubeconfig: 'k', config: [full] }, {})).toEqual({ kubeconfig: 'k' });
      expect(() => kubeSource({ kubeconfig: 'k', rules: 'd' }, {})).toThrow(/exclude each other/);
      expect(kubeSource({}, env)).toEqual({});
      expect(kubeSource({ config: [settings] }, env)).toEqual({});
      expect(kubeSource({ config: [full] }, env)).toBeNull(); // a Node in the files: file mode
      expect(kubeSource({ config: [settings] }, {})).toBeNull();
      expect(kubeSource({ config: [settings], rules: 'd' }, env)).toBeNull();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
