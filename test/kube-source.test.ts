// Informer semantics of watch mode's source against the API server double: initial list, watch
// events, a dropped watch resumed from its resourceVersion without a relist, 410 Gone -> relist,
// bookmarks, several slices per Service merged, terminating endpoints, the service-proxy-name
// label, node heartbeats that change nothing, kubeconfig and in-cluster connections.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ApiDouble, ApiDoubleOptions, until } from './support/api-double';
import { KubeChange, KubeSource, connectKubeSource } from '../src/control/kube-source';
import { KubeConnectError, loadKubeConfig } from '../src/control/kube-client';
import { ClusterState, categorizeEndpoints, formatIPv4, loadConfig } from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const LAB = path.join(ROOT, 'lab/cluster.yaml');
const labDocs = parseAllDocuments(fs.readFileSync(LAB, 'utf8')).map((d) => d.toJS()).filter((d) => d);
const labObjects = labDocs.filter((d) => d.kind !== 'KubeTunConfiguration');
const configText = JSON.stringify(labDocs.find((d) => d.kind === 'KubeTunConfiguration'));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-kube-source-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

function kubeconfigFor(d: ApiDouble, name: string, extra = ''): string {
  const file = path.join(TMP, `${name}.kubeconfig`);
  // client-node 1.x refuses plain http unless TLS verification is explicitly off.
  if (d.url.startsWith('http:')) extra += ', insecure-skip-tls-verify: true';
  fs.writeFileSync(file, [
    'apiVersion: v1', 'kind: Config', 'current-context: double',
    `clusters: [{ name: double, cluster: { server: "${d.url}"${extra} } }]`,
    'users: [{ name: tester, user: { token: "t0ken" } }]',
    'contexts: [{ name: double, context: { cluster: double, user: tester } }]', '',
  ].join('\n'));
  return file;
}


/** Service ports and endpoints without source references, for comparing states. */
function content(s: ClusterState): unknown {
  return JSON.parse(JSON.stringify({ ports: s.servicePorts, endpoints: s.endpoints, nodes: s.nodes }, (k, v) => (k === 'source' ? undefined : v)));
}

function endpointsOf(s: ClusterState, portKey: string): string[] {
  return (s.endpoints[portKey] ?? []).map((e) => e.endpoint);
}

function slice(name: string, service: string, ips: string[], extra: Record<string, unknown> = {}, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service, ...labels } },
    addressType: 'IPv4', ports: [{ name: '', protocol: 'TCP', port: 80 }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'worker-1', ...extra })),
  };
}

function service(name: string, clusterIP: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default', labels },
    spec: { type: 'ClusterIP', clusterIP, ports: [{ protocol: 'TCP', port: 80, targetPort: 8080 }] },
  };
}

interface Rig { d: ApiDouble; src: KubeSource; changes: KubeChange[] }
const rigs: Rig[] = [];

async function rig(opts: ApiDoubleOptions = {}, serviceProxyName?: string): Promise<Rig> {
  const d = await ApiDouble.start(opts);
  d.apply(...structuredClone(labObjects));
  const src = connectKubeSource({ kubeconfig: kubeconfigFor(d, `rig${rigs.length}`) }, {
    configSources: [{ file: 'config.json', text: configText }], serviceProxyName,
    backoff: { initialMs: 50, maxMs: 400, jitter: 0 }, watchTimeoutSeconds: 0,
  });
  const changes: KubeChange[] = [];
  src.on('change', (c: KubeChange) => changes.push(c));
  const r = { d, src, changes };
  rigs.push(r);
  src.start();
  await src.waitForSync();
  return r;
}

afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await r.src.stop();
    await r.d.close();
  }
});

function requests(d: ApiDouble, kindPath: string, watch: boolean) {
  return d.requests.filter((q) => q.method === 'GET' && q.path === kindPath && (q.query.watch === 'true') === watch);
}

describe('kube source: informer semantics against the API double', () => {
  it('lists everything first: the state equals the YAML file mode\'s', async () => {
    const { src, d } = await rig();
    expect(content(src.state())).toEqual(content(loadConfig(LAB)));
    // list, then one watch per resource from the list's resourceVersion, with bookmarks allowed
    for (const p of ['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices', '/api/v1/nodes']) {
      expect(requests(d, p, false)).toHaveLength(1);
      await until(() => expect(requests(d, p, true)).toHaveLength(1));
      const w = requests(d, p, true)[0].query;
      expect(w.resourceVersion).toBe(String(d.resourceVersion));
      expect(w.allowWatchBookmarks).toBe('true');
    }
  });

  it('follows watch events: a changed slice is one endpoints change of its Service', async () => {
    const { src, d, changes } = await rig();
    await until(() => expect(d.openWatches).toBe(3));
    changes.length = 0;
    src.takeChanges();
    d.apply(slice('test-abcde', 'test', ['10.1.139.84', '10.1.139.99']));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.84:80', '10.1.139.99:80']));
    expect(changes).toEqual([{ kind: 'endpoints', key: 'default/test' }]);
    expect([...src.takeChanges().endpoints]).toEqual(['default/test']);
    d.apply(service('fresh', '10.96.7.7'));
    await until(() => expect(src.state().servicePorts.map((s) => s.key)).toContain('default/fresh:/TCP'));
    d.remove('Service', 'test');
    await until(() => expect(src.state().servicePorts.map((s) => s.key)).not.toContain('default/test:/TCP'));
    expect(changes.slice(1)).toEqual([{ kind: 'service', key: 'default/fresh' }, { kind: 'service', key: 'default/test' }]);
    expect(src.stats().Service.lists).toBe(1);
  });

  it('resumes a dropped watch from the last resourceVersion without a relist', async () => {
    const { src, d } = await rig();
    await until(() => expect(d.openWatches).toBe(3));
    d.apply(slice('test-abcde', 'test', ['10.1.139.84']));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.84:80']));
    const seen = String(d.resourceVersion);
    expect(d.dropWatches(true)).toBe(3); // sockets destroyed mid-stream
    d.apply(slice('test-abcde', 'test', ['10.1.139.85'])); // happens while nobody watches
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.85:80']));
    const watches = requests(d, '/apis/discovery.k8s.io/v1/endpointslices', true);
    expect(watches.length).toBeGreaterThanOrEqual(2);
    expect(watches[watches.length - 1].query.resourceVersion).toBe(seen);
    expect(requests(d, '/apis/discovery.k8s.io/v1/endpointslices', false)).toHaveLength(1);
    const st = src.stats().EndpointSlice;
    expect(st.lists).toBe(1);
    expect(st.resumes).toBeGreaterThanOrEqual(1);
    // A clean end (the server's watch timeout) is resumed the same way.
    await until(() => expect(d.openWatches).toBe(3));
    d.dropWatches(false);
    d.apply(slice('test-abcde', 'test', ['10.1.139.86']));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.86:80']));
    expect(src.stats().EndpointSlice.lists).toBe(1);
  });

  it('moves its resourceVersion on bookmarks, so a resume after compaction needs no relist', async () => {
    const { src, d } = await rig();
    await until(() => expect(d.openWatches).toBe(3));
    for (let i = 0; i < 5; i++) d.apply(service(`other-${i}`, `10.96.8.${i}`)); // Service events only
    await until(() => expect(src.stats().Service.events).toBe(5));
    expect(src.stats().Node.lastSyncResourceVersion).not.toBe(String(d.resourceVersion));
    d.sendBookmarks();
    await until(() => expect(src.stats().Node.lastSyncResourceVersion).toBe(String(d.resourceVersion)));
    expect(src.stats().Node.bookmarks).toBe(1);
    d.compact();
    d.dropWatches(true);
    await until(() => expect(d.openWatches).toBe(3));
    expect(src.stats().Node.lists).toBe(1);
    expect(src.stats().Node.relists).toBe(0);
  });

  for (const expiredWatchAs of ['event', 'status'] as const) {
    it(`relists after 410 Gone (${expiredWatchAs === 'event' ? 'an ERROR event with an Expired Status' : 'an HTTP 410 Status'}), reporting only what changed`, async () => {
      const { src, d, changes } = await rig({ expiredWatchAs });
      await until(() => expect(d.openWatches).toBe(3));
      changes.length = 0;
      d.dropWatches(true);
      d.apply(slice('test-abcde', 'test', ['10.1.139.70']));
      d.remove('Service', 'sticky', 'default');
      d.compact(); // the events above are forgotten: resuming from before them is 410
      await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.70:80']));
      await until(() => expect(src.stats().Service.relists).toBe(1));
      expect(src.stats().EndpointSlice.relists).toBe(1);
      expect(src.state().servicePorts.map((s) => s.name)).not.toContain('sticky');
      await until(() => expect(d.openWatches).toBe(3));
      // The relist re-delivered every object; only the two that changed are reported.
      expect(changes).toEqual(expect.arrayContaining([{ kind: 'endpoints', key: 'default/test' }, { kind: 'service', key: 'default/sticky' }]));
      expect(changes).toHaveLength(2);
      expect(content(src.state())).toEqual(content(await freshState(d)));
    });
  }

  it('merges several slices of one Service, de-duplicated by address', async () => {
    const { src, d, changes } = await rig();
    changes.length = 0;
    d.apply(slice('test-second', 'test', ['10.1.139.93', '10.1.139.120']));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.120:80', '10.1.139.84:80', '10.1.139.93:80']));
    d.remove('EndpointSlice', 'test-abcde');
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.120:80', '10.1.139.93:80']));
    expect(changes).toEqual([{ kind: 'endpoints', key: 'default/test' }, { kind: 'endpoints', key: 'default/test' }]);
  });

  it('keeps terminating endpoints, used when no ready ones are left', async () => {
    const { src, d } = await rig();
    const terminating = { conditions: { ready: false, serving: true, terminating: true } };
    d.apply(slice('test-abcde', 'test', ['10.1.139.84']), slice('test-old', 'test', ['10.1.139.50'], terminating));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.50:80', '10.1.139.84:80']));
    const cat = () => {
      const s = src.state();
      const sp = s.servicePorts.find((p) => p.key === 'default/test:/TCP')!;
      return categorizeEndpoints(s.endpoints[sp.key], sp, 'worker-1').cluster.map((e) => formatIPv4(e.ip));
    };
    expect(cat()).toEqual(['10.1.139.84']);
    d.apply(slice('test-abcde', 'test', ['10.1.139.84'], { conditions: { ready: false, serving: false, terminating: true } }));
    await until(() => expect(cat()).toEqual(['10.1.139.50']));
    const e = src.state().endpoints['default/test:/TCP'].find((x) => x.endpoint === '10.1.139.50:80')!;
    expect([e.ready, e.serving, e.terminating, e.nodeName]).toEqual([false, true, true, 'worker-1']);
  });

  it('leaves Services and slices of another service proxy (and headless slices) alone', async () => {
    const { src, d, changes } = await rig();
    changes.length = 0;
    const other = { 'service.kubernetes.io/service-proxy-name': 'other-proxy' };
    d.apply(service('elsewhere', '10.96.9.9', other), slice('elsewhere-1', 'elsewhere', ['10.1.1.1']));
    d.apply(slice('test-headless', 'test', ['10.1.139.200'], {}, { 'service.kubernetes.io/headless': '' }));
    d.apply(slice('test-foreign', 'test', ['10.1.139.201'], {}, other));
    await until(() => expect(src.stats().EndpointSlice.events).toBe(3));
    const s = src.state();
    expect(s.servicePorts.map((p) => p.name)).not.toContain('elsewhere');
    expect(endpointsOf(s, 'default/test:/TCP')).toEqual(['10.1.139.84:80', '10.1.139.93:80']);
    expect(changes.filter((c) => c.kind !== 'endpoints' || c.key !== 'default/elsewhere')).toEqual([]);
    // The label removed: the Service is kube-tun's now.
    d.apply(service('elsewhere', '10.96.9.9'));
    await until(() => expect(src.state().servicePorts.map((p) => p.name)).toContain('elsewhere'));
    expect(changes).toContainEqual({ kind: 'service', key: 'default/elsewhere' });
  });

  it('with a service proxy name takes only the objects labelled with it', async () => {
    const { src, d } = await rig({}, 'kube-tun');
    expect(src.state().servicePorts).toEqual([]);
    const mine = { 'service.kubernetes.io/service-proxy-name': 'kube-tun' };
    d.apply(service('mine', '10.96.5.5', mine), { ...slice('mine-1', 'mine', ['10.1.2.3']), metadata: { name: 'mine-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'mine', ...mine } } });
    await until(() => expect(endpointsOf(src.state(), 'default/mine:/TCP')).toEqual(['10.1.2.3:80']));
    expect(src.state().servicePorts.map((p) => p.name)).toEqual(['mine']);
  });

  it('reports node changes that matter, not heartbeats; refuses invalid objects without stopping', async () => {
    const { src, d, changes } = await rig();
    changes.length = 0;
    const node = d.get('Node', 'worker-1')!;
    d.apply({ ...node, status: { ...node.status, conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: new Date().toISOString() }] } });
    await until(() => expect(src.stats().Node.events).toBe(1));
    expect(changes).toEqual([]);
    d.apply({ ...node, metadata: { ...node.metadata, annotations: { 'projectcalico.org/IPv4IPIPTunnelAddr': '10.1.139.65' } } });
    await until(() => expect(changes).toEqual([{ kind: 'node', key: 'worker-1' }]));
    expect(formatIPv4(src.state().nodes.find((n) => n.name === 'worker-1')!.tunnelAddr!)).toBe('10.1.139.65');
    const bad = service('bad', '10.200.0.1'); // outside the configuration's serviceCIDR
    d.apply(bad);
    await until(() => expect(changes.some((c) => c.kind === 'invalid')).toBe(true));
    const inv = changes.find((c) => c.kind === 'invalid') as { message: string; key: string };
    expect(inv.key).toBe('Service/default/bad');
    expect(inv.message).toMatch(/apiserver:Service\/default\/bad: .*spec\.clusterIP: 10\.200\.0\.1 is outside serviceCIDR/);
    expect(src.state().servicePorts.map((p) => p.name)).not.toContain('bad');
  });

  it('backs off while the server is away and resumes when it is back', async () => {
    const { src, d } = await rig();
    await until(() => expect(d.openWatches).toBe(3));
    const before = d.requests.length;
    d.dropWatches(true);
    // Refuse the next watches (unauthorised), then let them in again.
    const orig = d.requests.length;
    d.requireToken('nope');
    await until(() => expect(src.stats().Service.errors).toBeGreaterThanOrEqual(3), 15_000);
    // Delays grow: 50, 100, 200, 400 (max) ms, so few requests in the meantime.
    expect(d.requests.length - orig).toBeLessThan(40);
    d.requireToken(undefined);
    d.apply(slice('test-abcde', 'test', ['10.1.139.77']));
    await until(() => expect(endpointsOf(src.state(), 'default/test:/TCP')).toEqual(['10.1.139.77:80']));
    expect(src.stats().EndpointSlice.lists).toBe(1);
    expect(d.requests.length).toBeGreaterThan(before);
  });
});

/** A fresh source's view of the double's objects (what a relist must converge to). */
async function freshState(d: ApiDouble): Promise<ClusterState> {
  const fixed = (kind: string) => ({
    kind,
    list: async () => ({ items: d.list(kind) as never[], resourceVersion: String(d.resourceVersion) }),
    watch: async () => ({ abort: () => undefined }), // a watch that stays open and quiet
  });
  const src = new KubeSource({
    services: fixed('Service'), endpointSlices: fixed('EndpointSlice'), nodes: fixed('Node'),
    configSources: [{ file: 'config.json', text: configText }],
  });
  src.start();
  await src.waitForSync();
  const s = src.state();
  await src.stop();
  return s;
}

describe.skipIf(!fs.existsSync('/usr/bin/openssl'))('kube source: connections', () => {
  let d: ApiDouble;
  const dir = path.join(TMP, 'sa');
  beforeAll(async () => {
    fs.mkdirSync(path.join(dir, 'var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
    const sa = path.join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(TMP, 'tls.key'), '-out', path.join(sa, 'ca.crt')], { stdio: 'ignore' });
    fs.writeFileSync(path.join(sa, 'token'), 'sa-token-123');
    fs.writeFileSync(path.join(sa, 'namespace'), 'kube-system');
    d = await ApiDouble.start({ token: 'sa-token-123', tls: { key: fs.readFileSync(path.join(TMP, 'tls.key'), 'utf8'), cert: fs.readFileSync(path.join(sa, 'ca.crt'), 'utf8') } });
    d.apply(...structuredClone(labObjects));
  });
  afterAll(async () => { await d?.close(); });

  it('in a cluster: the service account token and CA, KUBERNETES_SERVICE_HOST/PORT', async () => {
    const src = connectKubeSource({ serviceAccountPrefix: dir, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(d.port) } }, {
      configSources: [{ file: 'config.json', text: configText }], backoff: { initialMs: 50, jitter: 0 },
    });
    src.start();
    try {
      await src.waitForSync();
      expect(content(src.state())).toEqual(content(loadConfig(LAB)));
    } finally {
      await src.stop();
    }
  });

  it('says why it cannot connect', () => {
    expect(() => loadKubeConfig({ env: {} })).toThrow(KubeConnectError);
    expect(() => loadKubeConfig({ env: {} })).toThrow(/not in a cluster/);
    expect(() => loadKubeConfig({ kubeconfig: path.join(TMP, 'missing') })).toThrow(/no such file/);
    expect(() => loadKubeConfig({ serviceAccountPrefix: path.join(TMP, 'none'), env: { KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '1' } })).toThrow(/no service account token/);
  });

  it('a kubeconfig with a wrong token: errors are counted, nothing is synced', async () => {
    const file = kubeconfigFor(d, 'badtoken', `, certificate-authority: "${path.join(dir, 'var/run/secrets/kubernetes.io/serviceaccount/ca.crt')}"`);
    const src = connectKubeSource({ kubeconfig: file }, { backoff: { initialMs: 20, maxMs: 50, jitter: 0 } });
    src.start();
    try {
      await until(() => expect(src.stats().Service.errors).toBeGreaterThanOrEqual(2));
      expect(src.synced).toBe(false);
      expect(src.stats().Service.lastError).toMatch(/list: .*401/s);
    } finally {
      await src.stop();
    }
  });
});
