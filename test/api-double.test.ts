// The API server double: the Kubernetes API conventions it promises (discovery, Status errors,
// list with resourceVersion, watch as JSON event lines with BOOKMARK and 410 after compaction,
// patches), and Debian's kubectl driving it: apply, get, get -w, delete.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ApiDouble, until } from './support/api-double';
import { strategicMergePatch } from './support/api-double-conventions';

const ROOT = path.resolve(__dirname, '..');
const labYaml = parseAllDocuments(fs.readFileSync(path.join(ROOT, 'lab/cluster.yaml'), 'utf8'));
const labDocs = labYaml.map((d) => d.toJS()).filter((d) => d);
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-api-double-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

interface Reply { status: number; headers: http.IncomingHttpHeaders; body: any }

function request(d: ApiDouble, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(`${d.url}${p}`, { method, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const t = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, body: t === '' ? null : JSON.parse(t) });
      });
    });
    req.on('error', reject);
    req.end(text);
  });
}

interface WatchStream { events: any[]; headers: http.IncomingHttpHeaders; ended: boolean; close(): void }

/** A watch: its events as they arrive, parsed line by line. */
function watch(d: ApiDouble, p: string): Promise<WatchStream> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${d.url}${p}`, (res) => {
      const w: WatchStream = { events: [], headers: res.headers, ended: false, close: () => req.destroy() };
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          w.events.push(JSON.parse(buf.slice(0, i)));
          buf = buf.slice(i + 1);
        }
      });
      res.on('end', () => { w.ended = true; });
      res.on('error', () => { w.ended = true; });
      res.on('close', () => { w.ended = true; });
      resolve(w);
    });
    req.on('error', reject);
  });
}


const svc = (name: string, port = 80) => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' },
  spec: { clusterIP: '10.96.0.10', ports: [{ port, protocol: 'TCP', targetPort: 8080 }] },
});

let d: ApiDouble;
const streams: WatchStream[] = [];
beforeAll(async () => { d = await ApiDouble.start(); });
afterAll(async () => { await d.close(); });
afterEach(() => { for (const s of streams.splice(0)) s.close(); });

async function openWatch(p: string): Promise<WatchStream> {
  const w = await watch(d, p);
  streams.push(w);
  return w;
}

describe('api double: conventions', () => {
  it('serves discovery for the three resources, legacy and aggregated, and /version', async () => {
    expect((await request(d, 'GET', '/api')).body).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    const core = (await request(d, 'GET', '/api/v1')).body;
    expect(core.kind).toBe('APIResourceList');
    expect(core.resources.map((r: any) => [r.name, r.namespaced, r.kind])).toEqual([['services', true, 'Service'], ['nodes', false, 'Node']]);
    expect(core.resources[0].verbs).toEqual(expect.arrayContaining(['list', 'watch', 'patch']));
    expect((await request(d, 'GET', '/apis')).body.groups.map((g: any) => g.preferredVersion.groupVersion)).toEqual(['discovery.k8s.io/v1']);
    expect((await request(d, 'GET', '/apis/discovery.k8s.io')).body).toMatchObject({ kind: 'APIGroup', name: 'discovery.k8s.io' });
    expect((await request(d, 'GET', '/apis/discovery.k8s.io/v1')).body.resources[0]).toMatchObject({ name: 'endpointslices', kind: 'EndpointSlice', namespaced: true });
    const agg = await request(d, 'GET', '/apis', undefined, { Accept: 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json' });
    expect(agg.headers['content-type']).toBe('application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList');
    expect(agg.body.items[0].versions[0].resources[0]).toMatchObject({ resource: 'endpointslices', scope: 'Namespaced' });
    expect((await request(d, 'GET', '/version')).body).toMatchObject({ major: '1', gitVersion: expect.stringMatching(/^v1\./) });
    expect((await request(d, 'GET', '/apis/apps/v1')).status).toBe(404);
  });

  it('answers errors with Status objects: 404 NotFound, 409 AlreadyExists and Conflict', async () => {
    const nf = await request(d, 'GET', '/api/v1/namespaces/default/services/nope');
    expect(nf.status).toBe(404);
    expect(nf.body).toEqual({
      kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'services "nope" not found', reason: 'NotFound',
      details: { name: 'nope', kind: 'services' }, code: 404,
    });
    const created = await request(d, 'POST', '/api/v1/namespaces/default/services', svc('errs'));
    expect(created.status).toBe(201);
    expect(created.body.metadata).toMatchObject({ name: 'errs', namespace: 'default', uid: expect.any(String), resourceVersion: String(d.resourceVersion) });
    const again = await request(d, 'POST', '/api/v1/namespaces/default/services', svc('errs'));
    expect([again.status, again.body.reason, again.body.message]).toEqual([409, 'AlreadyExists', 'services "errs" already exists']);
    const stale = await request(d, 'PUT', '/api/v1/namespaces/default/services/errs', { ...svc('errs', 81), metadata: { name: 'errs', resourceVersion: '1' } });
    expect([stale.status, stale.body.reason]).toEqual([409, 'Conflict']);
    const sliceNf = await request(d, 'DELETE', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/x');
    expect([sliceNf.status, sliceNf.body.message]).toEqual([404, 'endpointslices.discovery.k8s.io "x" not found']);
    await request(d, 'DELETE', '/api/v1/namespaces/default/services/errs');
  });

  it('lists with the current resourceVersion; every write moves one global counter', async () => {
    const rv0 = d.resourceVersion;
    await request(d, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    await request(d, 'POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' } });
    const l = (await request(d, 'GET', '/api/v1/services?resourceVersion=0')).body;
    expect(l).toMatchObject({ kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: String(rv0 + 2) } });
    expect(l.items.map((o: any) => o.metadata.name)).toEqual(['a']);
    expect(l.items[0].kind).toBeUndefined(); // items of a list carry no kind on the wire
    expect(l.items[0].metadata.resourceVersion).toBe(String(rv0 + 1));
    expect((await request(d, 'GET', '/api/v1/nodes/n1')).body.metadata.resourceVersion).toBe(String(rv0 + 2));
    expect((await request(d, 'GET', '/api/v1/namespaces/other/services')).body.items).toEqual([]);
    await request(d, 'DELETE', '/api/v1/namespaces/default/services/a');
    await request(d, 'DELETE', '/api/v1/nodes/n1');
  });

  it('watches: JSON event lines from a resourceVersion, chunked, with BOOKMARK when allowed', async () => {
    const from = d.resourceVersion;
    d.apply(svc('w1'));
    const w = await openWatch(`/api/v1/services?watch=1&resourceVersion=${from}&allowWatchBookmarks=true`);
    const plain = await openWatch(`/api/v1/services?watch=true&resourceVersion=${from}`);
    expect(w.headers['transfer-encoding']).toBe('chunked');
    expect(w.headers['content-type']).toBe('application/json');
    d.apply(svc('w1', 81));
    d.remove('Service', 'w1');
    await until(() => expect(w.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']));
    expect(w.events.map((e) => e.object.metadata.resourceVersion)).toEqual([from + 1, from + 2, from + 3].map(String));
    expect(w.events[1].object).toMatchObject({ kind: 'Service', apiVersion: 'v1', spec: { ports: [{ port: 81 }] } });
    d.sendBookmarks();
    await until(() => expect(w.events).toHaveLength(4));
    expect(w.events[3]).toEqual({ type: 'BOOKMARK', object: { kind: 'Service', apiVersion: 'v1', metadata: { resourceVersion: String(d.resourceVersion) } } });
    await until(() => expect(plain.events).toHaveLength(3));
    expect(plain.events.some((e) => e.type === 'BOOKMARK')).toBe(false);
    // Nodes' watch sees no Service events; resourceVersion 0 starts with the current objects.
    d.apply(svc('w2'));
    const all = await openWatch('/api/v1/services?watch=1&resourceVersion=0');
    await until(() => expect(all.events.map((e) => [e.type, e.object.metadata.name])).toEqual([['ADDED', 'w2']]));
    expect(d.dropWatches()).toBe(3);
    await until(() => expect(w.ended && plain.ended && all.ended).toBe(true));
    expect(d.openWatches).toBe(0);
    d.remove('Service', 'w2');
  });

  it('410 Expired for a watch from before the compaction point (as an ERROR event, or an HTTP Status)', async () => {
    const old = d.resourceVersion;
    d.apply(svc('c1'));
    const at = d.compact();
    const w = await openWatch(`/api/v1/services?watch=1&resourceVersion=${old}`);
    await until(() => expect(w.ended).toBe(true));
    expect(w.events).toEqual([{ type: 'ERROR', object: {
      kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${old} (${at})`, reason: 'Expired', code: 410,
    } }]);
    const ok = await openWatch(`/api/v1/services?watch=1&resourceVersion=${at}`);
    d.remove('Service', 'c1');
    await until(() => expect(ok.events.map((e) => e.type)).toEqual(['DELETED']));
    const d2 = await ApiDouble.start({ expiredWatchAs: 'status' });
    try {
      d2.apply(svc('c2'));
      d2.compact();
      const r = await request(d2, 'GET', '/api/v1/services?watch=1&resourceVersion=1');
      expect([r.status, r.body.kind, r.body.reason, r.body.code]).toEqual([410, 'Status', 'Expired', 410]);
    } finally {
      await d2.close();
    }
  });

  it('patches: strategic merge by the ports\' merge key, JSON merge patch, field selectors', async () => {
    const live = { spec: { ports: [{ port: 80, targetPort: 8080 }, { port: 443, targetPort: 8443 }], type: 'ClusterIP' }, metadata: { labels: { a: '1', b: '2' } } };
    const patched = strategicMergePatch('Service', live, {
      metadata: { labels: { b: null, c: '3' } },
      spec: { $setElementOrder: undefined, '$setElementOrder/ports': [{ port: 443 }, { port: 8080 }], ports: [{ port: 8080, targetPort: 80 }, { $patch: 'delete', port: 80 }] },
    });
    expect(patched).toEqual({ spec: { ports: [{ port: 443, targetPort: 8443 }, { port: 8080, targetPort: 80 }], type: 'ClusterIP' }, metadata: { labels: { a: '1', c: '3' } } });
    d.apply(svc('p1'));
    const r = await request(d, 'PATCH', '/api/v1/namespaces/default/services/p1', { spec: { ports: [{ port: 80, protocol: 'TCP', targetPort: 9090 }] } },
      { 'Content-Type': 'application/merge-patch+json' });
    expect([r.status, r.body.spec.ports[0].targetPort]).toEqual([200, 9090]);
    const sel = await request(d, 'GET', '/api/v1/services?fieldSelector=metadata.name%3Dp1');
    expect(sel.body.items.map((o: any) => o.metadata.name)).toEqual(['p1']);
    d.remove('Service', 'p1');
  });
});

// ---------------------------------------------------------------------------------------------

const KUBECTL = '/usr/bin/kubectl';
const hasKubectl = fs.existsSync(KUBECTL);

function kubectl(server: ApiDouble, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    // Async: the double answers from this process's event loop.
    execFile(KUBECTL, ['--server', server.url, '--cache-dir', path.join(TMP, 'kcache'), ...args],
      { env: { ...process.env, KUBECONFIG: '/dev/null', HOME: TMP }, timeout: 30_000 }, (err, out, errText) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out, err: errText });
      });
  });
}

describe.skipIf(!hasKubectl)('api double: driven by kubectl', () => {
  let k: ApiDouble;
  const children: ChildProcess[] = [];
  const manifest = path.join(TMP, 'services.yaml');
  const docs = labDocs.filter((x) => x.kind === 'Service' || x.kind === 'EndpointSlice');
  beforeAll(async () => {
    k = await ApiDouble.start();
    // The lab's own YAML text of those documents, comments and all.
    const texts = labYaml.filter((y) => ['Service', 'EndpointSlice'].includes(y.toJS()?.kind)).map((y) => y.toString());
    fs.writeFileSync(manifest, texts.join('---\n'));
  });
  afterAll(async () => {
    for (const c of children) c.kill();
    await k.close();
  });

  it('apply -f creates the lab\'s Services and EndpointSlices; get lists them; apply again changes nothing', async () => {
    const r = await kubectl(k, 'apply', '-f', manifest);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines).toHaveLength(docs.length);
    expect(lines).toContain('service/test created');
    expect(lines).toContain('endpointslice.discovery.k8s.io/test-abcde created');
    expect(k.list('Service').length + k.list('EndpointSlice').length).toBe(docs.length);
    const get = await kubectl(k, 'get', 'svc');
    expect(get.out.split('\n')[0].split(/\s+/)).toEqual(['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'AGE']);
    expect(get.out).toMatch(/^test\s+ClusterIP\s+10\.99\.64\.233\s+<none>\s+9999\/TCP\s/m);
    const all = await kubectl(k, 'get', 'svc,endpointslices', '-A', '-o', 'name');
    expect(all.out.trim().split('\n').sort()).toEqual(docs.map((x) => `${x.kind === 'Service' ? 'service' : 'endpointslice.discovery.k8s.io'}/${x.metadata.name}`).sort());
    const json = JSON.parse((await kubectl(k, 'get', 'endpointslice', 'test-abcde', '-o', 'json')).out);
    expect(json.endpoints.map((e: any) => e.addresses[0])).toEqual(['10.1.139.84', '10.1.139.93']);
    const again = await kubectl(k, 'apply', '-f', manifest);
    expect(again.out.trim().split('\n').every((l) => l.endsWith(' unchanged'))).toBe(true);
  });

  it('apply of a changed manifest patches (client-side: strategic merge patch; --server-side: apply patch)', async () => {
    const changed = path.join(TMP, 'changed.yaml');
    const one = structuredClone(docs.filter((x) => x.metadata.name === 'test' || x.metadata.name === 'test-abcde'));
    one[0].spec.ports[0].port = 9998;
    one[1].endpoints[1].addresses = ['10.1.139.94'];
    fs.writeFileSync(changed, one.map((x) => stringify(x)).join('---\n'));
    const r = await kubectl(k, 'apply', '-f', changed);
    expect(r.out.trim().split('\n')).toEqual(['service/test configured', 'endpointslice.discovery.k8s.io/test-abcde configured']);
    expect(k.requests.filter((q) => q.method === 'PATCH').map((q) => q.contentType)).toEqual(['application/strategic-merge-patch+json', 'application/strategic-merge-patch+json']);
    expect(k.get('Service', 'test')!.spec.ports).toEqual([{ port: 9998, protocol: 'TCP', targetPort: 80 }]);
    expect(k.get('EndpointSlice', 'test-abcde')!.endpoints.map((e: any) => e.addresses[0])).toEqual(['10.1.139.84', '10.1.139.94']);
    one[0].spec.ports[0].port = 9997;
    fs.writeFileSync(changed, one.map((x) => stringify(x)).join('---\n'));
    const ss = await kubectl(k, 'apply', '--server-side', '--force-conflicts', '-f', changed);
    expect(ss.out.trim().split('\n')).toEqual(['service/test serverside-applied', 'endpointslice.discovery.k8s.io/test-abcde serverside-applied']);
    expect(k.get('Service', 'test')!.spec.ports).toEqual([{ port: 9997, protocol: 'TCP', targetPort: 80 }]);
  });

  it('get -w prints the changes kubectl makes; delete removes', async () => {
    const child = spawn(KUBECTL, ['--server', k.url, '--cache-dir', path.join(TMP, 'kcache'), 'get', 'endpointslices', '-w', '--output-watch-events'],
      { env: { ...process.env, KUBECONFIG: '/dev/null', HOME: TMP } });
    children.push(child);
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    await until(() => expect(out).toMatch(/^ADDED\s+test-abcde\s/m));
    await until(() => expect(k.openWatches).toBe(1));
    const scaled = structuredClone(docs.find((x) => x.metadata.name === 'test-abcde'));
    scaled.endpoints.push({ addresses: ['10.1.139.95'], conditions: { ready: true }, nodeName: 'worker-1' });
    const f = path.join(TMP, 'scaled.yaml');
    fs.writeFileSync(f, JSON.stringify(scaled));
    expect((await kubectl(k, 'apply', '-f', f)).out.trim()).toBe('endpointslice.discovery.k8s.io/test-abcde configured');
    await until(() => expect(out).toMatch(/^MODIFIED\s+test-abcde\s+IPv4\s+80\s+10\.1\.139\.84,10\.1\.139\.93,10\.1\.139\.95\s/m));
    const del = await kubectl(k, 'delete', '-f', f);
    expect(del.out.trim()).toBe('endpointslice.discovery.k8s.io "test-abcde" deleted');
    await until(() => expect(out).toMatch(/^DELETED\s+test-abcde\s/m));
    expect(k.get('EndpointSlice', 'test-abcde')).toBeUndefined();
    const gone = await kubectl(k, 'get', 'endpointslice', 'test-abcde');
    expect(gone.code).not.toBe(0);
    expect(gone.err.trim()).toBe('Error from server (NotFound): endpointslices.discovery.k8s.io "test-abcde" not found');
    const svcDel = await kubectl(k, 'delete', 'svc', 'test');
    expect(svcDel.out.trim()).toBe('service "test" deleted');
  });
});
