// A Kubernetes API server double on loopback (node:http, port 0) for v1 Services, v1 Nodes and
// discovery.k8s.io/v1 EndpointSlices: discovery (legacy and aggregated), /version, list, get,
// create, update, patch (strategic merge, merge, JSON, apply), delete and watch, with one global
// resourceVersion counter, BOOKMARK events, a compaction point behind which watches get
// 410 Expired, and hooks for tests to drop every watch. Faithful enough for Debian's kubectl and
// @kubernetes/client-node; conventions in api-double-conventions.ts.
import * as http from 'node:http';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';
import {
  ApiError, Obj, RESOURCES, ResourceDef, Selector, aggregatedDiscovery, alreadyExists, apiGroup, apiGroupList,
  apiResourceList, apiVersionOf, apiVersions, badRequest, conflict, expired, fieldSelector, findResource, jsonPatch,
  labelSelector, mergePatch, notFound, openApiV3Doc, openApiV3Root, serverSideApply, statusOf, strategicMergePatch, tableOf, wantsAggregated, wantsTable,
} from './api-double-conventions';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent { rv: number; res: ResourceDef; type: WatchEventType; obj: Obj; prev: Obj | null }

interface Watcher {
  resource: ResourceDef;
  namespace: string | null;
  match: Selector;
  table: boolean;
  bookmarks: boolean;
  out: http.ServerResponse;
  timer: NodeJS.Timeout | null;
}

export interface RequestRecord { method: string; path: string; query: Record<string, string>; accept: string; contentType: string }

export interface ApiDoubleOptions {
  /** Send BOOKMARK events to watches that allow them every this many ms (0 = only on sendBookmarks()). */
  bookmarkIntervalMs?: number;
  /**
   * How a watch from behind the compaction point fails: 'event' (the real server's way: 200 and
   * one ERROR event carrying a 410 Expired Status) or 'status' (an HTTP 410 Status response).
   */
  expiredWatchAs?: 'event' | 'status';
  /** Demand `Authorization: Bearer <token>` (401 Unauthorized otherwise). */
  token?: string;
  /** Serve HTTPS with this key and certificate (PEM), as an in-cluster API server does. */
  tls?: { key: string; cert: string };
}

const JSON_TYPE = 'application/json';

export class ApiDouble {
  private readonly server: http.Server | https.Server;
  private readonly store = new Map<ResourceDef, Map<string, Obj>>(RESOURCES.map((r) => [r, new Map()]));
  private events: StoredEvent[] = [];
  private rv = 1;
  private compactedRV = 0;
  private uidSeq = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly applied = new Map<string, Map<string, Obj>>();
  private bookmarkTimer: NodeJS.Timeout | null = null;
  /** Every request served, oldest first (tests assert relists and watch resumptions with it). */
  readonly requests: RequestRecord[] = [];
  port = 0;

  private constructor(private readonly opts: ApiDoubleOptions) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => { void this.handle(req, res); };
    this.server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : http.createServer(handler);
  }

  static async start(opts: ApiDoubleOptions = {}): Promise<ApiDouble> {
    const d = new ApiDouble({ ...opts });
    await new Promise<void>((resolve) => d.server.listen(0, '127.0.0.1', resolve));
    d.port = (d.server.address() as AddressInfo).port;
    if (opts.bookmarkIntervalMs) d.bookmarkTimer = setInterval(() => d.sendBookmarks(), opts.bookmarkIntervalMs);
    return d;
  }

  get url(): string { return `${this.opts.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`; }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): number { return this.rv; }

  get openWatches(): number { return this.watchers.size; }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.dropWatches(true);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Forgets the event history: a watch from a resourceVersion before now gets 410 Expired. */
  compact(): number {
    this.compactedRV = this.rv;
    this.events = [];
    return this.rv;
  }

  /** Ends every open watch (abruptly: destroys the sockets; else ends the chunked responses). */
  dropWatches(abrupt = false): number {
    const n = this.watchers.size;
    for (const w of [...this.watchers]) this.endWatch(w, abrupt);
    return n;
  }

  /** From now on demand `Authorization: Bearer <token>` (undefined: accept anyone), e.g. to refuse a client for a while. */
  requireToken(token: string | undefined): void {
    this.opts.token = token;
  }

  /** A BOOKMARK with the current resourceVersion to every watch that allows bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watchers) if (w.bookmarks) this.sendBookmark(w);
  }

  // --- direct store access for tests (the same path as the HTTP verbs) ---

  list(kind: string, namespace?: string): Obj[] {
    const r = RESOURCES.find((x) => x.kind === kind)!;
    return [...this.store.get(r)!.values()].filter((o) => namespace === undefined || o.metadata.namespace === namespace).map((o) => structuredClone(o));
  }

  get(kind: string, name: string, namespace = 'default'): Obj | undefined {
    const r = RESOURCES.find((x) => x.kind === kind)!;
    const o = this.store.get(r)!.get(this.key(r, r.namespaced ? namespace : '', name));
    return o && structuredClone(o);
  }

  /** Creates or replaces objects (kind and apiVersion must name one of the three resources). */
  apply(...objs: Obj[]): void {
    for (const o of objs) {
      const r = RESOURCES.find((x) => x.kind === o.kind && apiVersionOf(x) === o.apiVersion);
      if (!r) throw new Error(`api double: unsupported ${o.apiVersion} ${o.kind}`);
      const ns = r.namespaced ? (o.metadata?.namespace ?? 'default') : '';
      const existing = this.store.get(r)!.get(this.key(r, ns, o.metadata.name));
      if (existing) this.update(r, ns, o.metadata.name, { ...o, metadata: { ...o.metadata, resourceVersion: undefined } });
      else this.create(r, ns, o);
    }
  }

  remove(kind: string, name: string, namespace = 'default'): void {
    const r = RESOURCES.find((x) => x.kind === kind)!;
    this.delete(r, r.namespaced ? namespace : '', name);
  }

  // --- the store ---

  private key(r: ResourceDef, ns: string, name: string): string {
    return r.namespaced ? `${ns}/${name}` : name;
  }

  private nextRV(): number {
    return ++this.rv;
  }

  private validate(r: ResourceDef, ns: string, o: unknown, name?: string): Obj {
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw badRequest('the body must be an object');
    const obj = o as Obj;
    if (obj.kind !== undefined && obj.kind !== r.kind) throw badRequest(`the kind ${String(obj.kind)} does not match ${r.kind}`);
    if (obj.apiVersion !== undefined && obj.apiVersion !== apiVersionOf(r)) throw badRequest(`the API version ${String(obj.apiVersion)} does not match ${apiVersionOf(r)}`);
    const md = obj.metadata;
    if (typeof md !== 'object' || md === null || typeof md.name !== 'string' || md.name === '') {
      throw new ApiError(422, 'Invalid', `${r.kind} "" is invalid: metadata.name: Required value: name or generateName is required`);
    }
    if (name !== undefined && md.name !== name) throw badRequest(`the name of the object (${md.name}) does not match the name on the URL (${name})`);
    if (r.namespaced && md.namespace !== undefined && md.namespace !== ns) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    return obj;
  }

  private record(r: ResourceDef, type: WatchEventType, obj: Obj, prev: Obj | null): void {
    const ev: StoredEvent = { rv: Number(obj.metadata.resourceVersion), res: r, type, obj, prev };
    this.events.push(ev);
    for (const w of this.watchers) if (w.resource === r) this.deliver(w, ev);
  }

  private create(r: ResourceDef, ns: string, body: unknown): Obj {
    const o = structuredClone(this.validate(r, ns, body));
    const k = this.key(r, ns, o.metadata.name);
    const m = this.store.get(r)!;
    if (m.has(k)) throw alreadyExists(r, o.metadata.name);
    const rv = this.nextRV();
    o.apiVersion = apiVersionOf(r);
    o.kind = r.kind;
    const { resourceVersion: _rv, uid: _uid, creationTimestamp: _ct, ...md } = o.metadata;
    o.metadata = {
      ...md, ...(r.namespaced ? { namespace: ns } : {}), uid: this.uid(), resourceVersion: String(rv),
      creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    if (r.kind === 'Service') this.defaultService(o);
    m.set(k, o);
    this.record(r, 'ADDED', o, null);
    return o;
  }

  /** Server defaults kubectl output expects (the double allocates nothing: clusterIP stays as given). */
  private defaultService(o: Obj): void {
    o.spec ??= {};
    o.spec.type ??= 'ClusterIP';
    o.spec.sessionAffinity ??= 'None';
    for (const p of o.spec.ports ?? []) {
      p.protocol ??= 'TCP';
      p.targetPort ??= p.port;
    }
    if (o.spec.clusterIP && !o.spec.clusterIPs) o.spec.clusterIPs = [o.spec.clusterIP];
  }

  private update(r: ResourceDef, ns: string, name: string, body: unknown): Obj {
    const o = structuredClone(this.validate(r, ns, body, name));
    const k = this.key(r, ns, name);
    const m = this.store.get(r)!;
    const prev = m.get(k);
    if (!prev) throw notFound(r, name);
    const want = o.metadata.resourceVersion;
    if (want !== undefined && want !== null && want !== '' && want !== prev.metadata.resourceVersion) throw conflict(r, name);
    o.apiVersion = apiVersionOf(r);
    o.kind = r.kind;
    o.metadata = { ...o.metadata, namespace: prev.metadata.namespace, uid: prev.metadata.uid, creationTimestamp: prev.metadata.creationTimestamp };
    if (!r.namespaced) delete o.metadata.namespace;
    if (r.kind === 'Service') this.defaultService(o);
    // Like the real server: an update that changes nothing keeps the resourceVersion and sends no event.
    o.metadata.resourceVersion = prev.metadata.resourceVersion;
    if (JSON.stringify(o) === JSON.stringify(prev)) return prev;
    o.metadata.resourceVersion = String(this.nextRV());
    m.set(k, o);
    this.record(r, 'MODIFIED', o, prev);
    return o;
  }

  private delete(r: ResourceDef, ns: string, name: string): Obj {
    const k = this.key(r, ns, name);
    const m = this.store.get(r)!;
    const prev = m.get(k);
    if (!prev) throw notFound(r, name);
    m.delete(k);
    this.applied.delete(`${r.plural}/${k}`);
    const gone = { ...prev, metadata: { ...prev.metadata, resourceVersion: String(this.nextRV()) } };
    this.record(r, 'DELETED', gone, prev);
    return gone;
  }

  private uid(): string {
    const n = (++this.uidSeq).toString(16).padStart(12, '0');
    return `00000000-0000-4000-8000-${n}`;
  }

  // --- HTTP ---

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(u.searchParams);
    const accept = req.headers.accept ?? '';
    this.requests.push({ method: req.method ?? 'GET', path: u.pathname, query, accept, contentType: req.headers['content-type'] ?? '' });
    try {
      if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
        throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      }
      const body = await readBody(req);
      await this.route(req.method ?? 'GET', u.pathname.replace(/\/+$/, '') || '/', u.searchParams, accept, req.headers['content-type'] ?? '', body, res);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, 'InternalError', `api double: ${(e as Error).stack ?? String(e)}`);
      if (!res.headersSent) send(res, err.code, statusOf(err));
      else res.destroy();
    }
  }

  private async route(method: string, path: string, q: URLSearchParams, accept: string, ctype: string, body: string, res: http.ServerResponse): Promise<void> {
    if (method === 'GET') {
      const agg = wantsAggregated(accept);
      if (path === '/version') return send(res, 200, VERSION);
      if (path === '/openapi/v3') return send(res, 200, openApiV3Root());
      if (path.startsWith('/openapi/v3/')) { const d = openApiV3Doc(path.slice('/openapi/v3/'.length)); if (d) return send(res, 200, d); }
      if (path === '/api' && agg) return sendAggregated(res, aggregatedDiscovery(true, `apidiscovery.k8s.io/${agg}`), agg);
      if (path === '/apis' && agg) return sendAggregated(res, aggregatedDiscovery(false, `apidiscovery.k8s.io/${agg}`), agg);
      if (path === '/api') return send(res, 200, apiVersions(`127.0.0.1:${this.port}`));
      if (path === '/apis') return send(res, 200, apiGroupList());
      let m = /^\/apis\/([^/]+)$/.exec(path);
      if (m) { const g = apiGroup(m[1]); if (g) return send(res, 200, g); }
      m = /^\/api\/(v1)$/.exec(path) ?? /^\/apis\/([^/]+\/[^/]+)$/.exec(path);
      if (m) {
        const [g, v] = m[1].includes('/') ? m[1].split('/') : ['', m[1]];
        const l = apiResourceList(g, v);
        if (l) return send(res, 200, l);
      }
    }
    // /api/v1[/namespaces/NS]/PLURAL[/NAME]  and  /apis/G/V[/namespaces/NS]/PLURAL[/NAME]
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    const r = m ? findResource(m[2] ?? '', m[1] ?? m[3], m[5]) : undefined;
    if (!m || !r || (m[4] !== undefined && !r.namespaced)) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
    }
    const ns = m[4] ?? null;
    const name = m[6] === undefined ? null : decodeURIComponent(m[6]);
    if (r.namespaced && ns === null && (name !== null || method !== 'GET')) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
    }
    const nsText = ns === null ? '' : decodeURIComponent(ns);
    const parse = (): unknown => {
      try {
        return ctype.startsWith('application/apply-patch+yaml') ? parseYaml(body) : JSON.parse(body);
      } catch (e) {
        throw badRequest(`the body of the request was in an unknown format: ${(e as Error).message}`);
      }
    };
    if (method === 'GET' && name === null) {
      if (q.get('watch') === 'true' || q.get('watch') === '1') return this.watch(r, ns === null ? null : nsText, q, accept, res);
      return this.listResponse(r, ns === null ? null : nsText, q, accept, res);
    }
    if (method === 'GET') {
      const o = this.store.get(r)!.get(this.key(r, nsText, name!));
      if (!o) throw notFound(r, name!);
      return send(res, 200, wantsTable(accept) ? tableOf(r, [o], o.metadata.resourceVersion) : o);
    }
    if (method === 'POST' && name === null) return send(res, 201, this.create(r, nsText, parse()));
    if (method === 'PUT' && name !== null) return send(res, 200, this.update(r, nsText, name, parse()));
    if (method === 'DELETE' && name !== null) return send(res, 200, this.delete(r, nsText, name));
    if (method === 'PATCH' && name !== null) return this.patch(r, nsText, name, ctype, parse(), q, res);
    throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
  }

  /** What each field manager applied last to one object (server-side apply). */
  private appliedBy(r: ResourceDef, ns: string, name: string): Map<string, Obj> {
    const k = `${r.plural}/${this.key(r, ns, name)}`;
    let m = this.applied.get(k);
    if (!m) this.applied.set(k, (m = new Map()));
    return m;
  }

  private patch(r: ResourceDef, ns: string, name: string, ctype: string, patch: unknown, q: URLSearchParams, res: http.ServerResponse): void {
    const prev = this.store.get(r)!.get(this.key(r, ns, name));
    const type = ctype.split(';')[0].trim();
    if (type === 'application/apply-patch+yaml') {
      // Server-side apply (kubectl apply --server-side): per field manager, see serverSideApply.
      const applied = patch as Obj;
      const managers = this.appliedBy(r, ns, name);
      const manager = q.get('fieldManager') ?? '';
      let out: Obj;
      if (!prev) out = this.create(r, ns, applied);
      else {
        // kubectl moves the fields of an earlier client-side apply to its server-side manager
        // (csaupgrade): the last-applied annotation stands for what "kubectl" applied before.
        const lastApplied = prev.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration'];
        const before = managers.get(manager) ?? (manager === 'kubectl' && lastApplied ? JSON.parse(lastApplied) as Obj : undefined);
        const next = serverSideApply(r.kind, prev, before, applied);
        out = this.update(r, ns, name, { ...next, metadata: { ...next.metadata, resourceVersion: undefined } });
      }
      managers.set(manager, structuredClone(applied));
      return send(res, prev ? 200 : 201, out);
    }
    if (!prev) throw notFound(r, name);
    let next: unknown;
    if (type === 'application/strategic-merge-patch+json') next = strategicMergePatch(r.kind, prev, patch);
    else if (type === 'application/merge-patch+json') next = mergePatch(prev, patch);
    else if (type === 'application/json-patch+json') next = jsonPatch(prev, patch);
    else throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`);
    const n = next as Obj;
    // A patch that sets metadata.resourceVersion is a precondition; otherwise the live one applies.
    const wanted = (patch as Obj)?.metadata?.resourceVersion;
    send(res, 200, this.update(r, ns, name, { ...n, metadata: { ...n.metadata, resourceVersion: wanted ?? prev.metadata.resourceVersion } }));
  }

  private listResponse(r: ResourceDef, ns: string | null, q: URLSearchParams, accept: string, res: http.ServerResponse): void {
    const match = this.selector(q);
    // resourceVersion "", "0" or N (NotOlderThan): the double always answers with the latest state.
    const items = [...this.store.get(r)!.values()].filter((o) => (ns === null || o.metadata.namespace === ns) && match(o));
    items.sort((a, b) => this.key(r, a.metadata.namespace ?? '', a.metadata.name).localeCompare(this.key(r, b.metadata.namespace ?? '', b.metadata.name)));
    const rv = String(this.rv);
    if (wantsTable(accept)) return send(res, 200, tableOf(r, items, rv));
    // Items of a list carry no kind/apiVersion on the wire (the list's kind says them).
    const bare = items.map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    send(res, 200, { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion: rv }, items: bare });
  }

  private selector(q: URLSearchParams): Selector {
    const l = labelSelector(q.get('labelSelector')), f = fieldSelector(q.get('fieldSelector'));
    return (o) => l(o) && f(o);
  }

  private watch(r: ResourceDef, ns: string | null, q: URLSearchParams, accept: string, res: http.ServerResponse): void {
    const rvText = q.get('resourceVersion') ?? '';
    const match = this.selector(q);
    const from = rvText === '' || rvText === '0' ? null : Number(rvText);
    if (from !== null && !Number.isInteger(from)) throw badRequest(`invalid resourceVersion ${rvText}`);
    if (from !== null && from < this.compactedRV) {
      const err = expired(rvText, this.compactedRV);
      if (this.opts.expiredWatchAs === 'status') throw err;
      res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Cache-Control': 'no-cache, private' });
      res.end(`${JSON.stringify({ type: 'ERROR', object: statusOf(err) })}\n`);
      return;
    }
    const table = wantsTable(accept);
    res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const nsMatch: Selector = (o) => ns === null || o.metadata.namespace === ns;
    const w: Watcher = {
      resource: r, namespace: ns, match: (o) => nsMatch(o) && match(o), table, out: res, timer: null,
      bookmarks: q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1',
    };
    if (from === null) {
      // "Start at most recent": the current objects as synthetic ADDED events, then changes.
      for (const o of this.store.get(r)!.values()) if (w.match(o)) this.write(w, 'ADDED', o);
    } else {
      for (const ev of this.events) if (ev.res === r && ev.rv > from) this.deliver(w, ev);
    }
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0) w.timer = setTimeout(() => this.endWatch(w, false), timeout * 1000);
    res.on('close', () => this.forget(w));
  }

  /** One stored event to one watch, as the watch's selectors see it (leaving the selection is DELETED). */
  private deliver(w: Watcher, ev: StoredEvent): void {
    const now = w.match(ev.obj), before = ev.prev !== null && w.match(ev.prev);
    if (ev.type === 'DELETED') { if (before) this.write(w, 'DELETED', ev.obj); return; }
    if (now) this.write(w, before || ev.type === 'ADDED' ? ev.type : 'ADDED', ev.obj);
    else if (before) this.write(w, 'DELETED', ev.obj);
  }

  private write(w: Watcher, type: string, o: Obj): void {
    const object = w.table ? tableOf(w.resource, [o], o.metadata.resourceVersion) : o;
    w.out.write(`${JSON.stringify({ type, object })}\n`);
  }

  private sendBookmark(w: Watcher): void {
    const object = { kind: w.resource.kind, apiVersion: apiVersionOf(w.resource), metadata: { resourceVersion: String(this.rv) } };
    w.out.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
  }

  private endWatch(w: Watcher, abrupt: boolean): void {
    this.forget(w);
    if (abrupt) w.out.destroy();
    else w.out.end();
  }

  private forget(w: Watcher): void {
    if (w.timer) clearTimeout(w.timer);
    this.watchers.delete(w);
  }
}

const VERSION = {
  major: '1', minor: '32', gitVersion: 'v1.32.0-apidouble', gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean', buildDate: '2026-12-01T00:00:00Z', goVersion: 'go1.23.0', compiler: 'gc', platform: 'linux/amd64',
};

function send(res: http.ServerResponse, code: number, obj: unknown): void {
  const text = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
  res.end(text);
}

function sendAggregated(res: http.ServerResponse, obj: unknown, version: string): void {
  const text = JSON.stringify(obj);
  res.writeHead(200, {
    'Content-Type': `application/json;g=apidiscovery.k8s.io;v=${version};as=APIGroupDiscoveryList`,
    'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private',
  });
  res.end(text);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Polls until check() returns without throwing, or throws its last error after `ms` (for tests of the double and its clients). */
export async function until<T>(check: () => T, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
