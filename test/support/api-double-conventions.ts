// The Kubernetes API conventions the API server double follows, as data and pure functions:
// the three resources it serves, their discovery documents (legacy and aggregated), Status
// objects, selectors, strategic merge patch and the Table form `kubectl get` asks for.
// Kept apart from the HTTP plumbing in api-double.ts.

export type Obj = Record<string, any>;

export interface ResourceDef {
  readonly group: string; // '' for the core group
  readonly version: string;
  readonly plural: string;
  readonly singular: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
}

export const RESOURCES: readonly ResourceDef[] = [
  { group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true, shortNames: ['svc'] },
  { group: '', version: 'v1', plural: 'nodes', singular: 'node', kind: 'Node', namespaced: false, shortNames: ['no'] },
  { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice', namespaced: true, shortNames: [] },
];

export const VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];

export function apiVersionOf(r: ResourceDef): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

export function findResource(group: string, version: string, plural: string): ResourceDef | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

function groups(): string[] {
  return [...new Set(RESOURCES.map((r) => r.group).filter((g) => g !== ''))];
}

/** GET /api */
export function apiVersions(serverAddress: string): Obj {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function groupDoc(g: string): Obj {
  const gv = { groupVersion: `${g}/v1`, version: 'v1' };
  return { name: g, versions: [gv], preferredVersion: gv };
}

/** GET /apis */
export function apiGroupList(): Obj {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups().map(groupDoc) };
}

/** GET /apis/<group> */
export function apiGroup(g: string): Obj | null {
  return groups().includes(g) ? { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(g) } : null;
}

/** GET /api/v1, /apis/<group>/v1 */
export function apiResourceList(group: string, version: string): Obj | null {
  const rs = RESOURCES.filter((r) => r.group === group && r.version === version);
  if (rs.length === 0) return null;
  return {
    kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group === '' ? version : `${group}/${version}`,
    resources: rs.map((r) => ({
      name: r.plural, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: VERBS,
      ...(r.shortNames.length ? { shortNames: r.shortNames } : {}), ...(r.group === '' && r.plural === 'services' ? { categories: ['all'] } : {}),
    })),
  };
}

/** Aggregated discovery (apidiscovery.k8s.io/v2) for /api (legacy = true) or /apis. */
export function aggregatedDiscovery(legacy: boolean, apiVersion: string): Obj {
  const names = legacy ? [''] : groups();
  return {
    kind: 'APIGroupDiscoveryList', apiVersion, metadata: {},
    items: names.map((g) => ({
      metadata: { name: g, creationTimestamp: null },
      versions: [{
        version: 'v1', freshness: 'Current',
        resources: RESOURCES.filter((r) => r.group === g).map((r) => ({
          resource: r.plural, singularResource: r.singular, scope: r.namespaced ? 'Namespaced' : 'Cluster',
          responseKind: { group: g, version: r.version, kind: r.kind }, verbs: VERBS,
          ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
        })),
      }],
    })),
  };
}

export class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Obj) {
    super(message);
  }
}

/** metav1.Status for a failure. */
export function statusOf(e: ApiError): Obj {
  return {
    kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason,
    ...(e.details ? { details: e.details } : {}), code: e.code,
  };
}

export function notFound(r: ResourceDef, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${r.plural}${r.group ? `.${r.group}` : ''} "${name}" not found`, { name, group: r.group || undefined, kind: r.plural });
}

export function alreadyExists(r: ResourceDef, name: string): ApiError {
  return new ApiError(409, 'AlreadyExists', `${r.plural}${r.group ? `.${r.group}` : ''} "${name}" already exists`, { name, group: r.group || undefined, kind: r.plural });
}

export function conflict(r: ResourceDef, name: string): ApiError {
  return new ApiError(409, 'Conflict',
    `Operation cannot be fulfilled on ${r.plural}${r.group ? `.${r.group}` : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group: r.group || undefined, kind: r.plural });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, 'BadRequest', message);
}

export function expired(requested: string, oldest: number): ApiError {
  return new ApiError(410, 'Expired', `too old resource version: ${requested} (${oldest})`);
}

// ---------------------------------------------------------------------------------------------
// Selectors: labelSelector equality/existence terms and the metadata.name / metadata.namespace
// field selectors (what kubectl's `delete --wait` and `get NAME -w` send).

export type Selector = (o: Obj) => boolean;

export function labelSelector(text: string | null): Selector {
  if (!text) return () => true;
  const terms = text.split(',').map((t) => t.trim()).filter((t) => t !== '').map((t): Selector => {
    const labels = (o: Obj): Obj => o.metadata?.labels ?? {};
    let m = /^([^!=]+?)\s*(==|=|!=)\s*(.*)$/.exec(t);
    if (m) {
      const [, k, op, v] = m;
      return op === '!=' ? (o) => labels(o)[k] !== v : (o) => labels(o)[k] === v;
    }
    m = /^!\s*(.+)$/.exec(t);
    if (m) { const k = m[1]; return (o) => !(k in labels(o)); }
    if (/\s(in|notin)\s/.test(t)) throw badRequest(`unable to parse requirement: set-based selectors are not supported by the double: ${t}`);
    return (o) => t in labels(o);
  });
  return (o) => terms.every((f) => f(o));
}

export function fieldSelector(text: string | null): Selector {
  if (!text) return () => true;
  const terms = text.split(',').filter((t) => t !== '').map((t): Selector => {
    const m = /^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$/.exec(t);
    if (!m) throw badRequest(`field label not supported: ${t.split(/[!=]/)[0]}`);
    const field = m[1] === 'metadata.name' ? 'name' : 'namespace';
    const v = m[3];
    return m[2] === '!=' ? (o) => (o.metadata?.[field] ?? '') !== v : (o) => (o.metadata?.[field] ?? '') === v;
  });
  return (o) => terms.every((f) => f(o));
}

// ---------------------------------------------------------------------------------------------
// Patches. kubectl's client-side apply sends application/strategic-merge-patch+json for built-in
// types; `kubectl patch --type merge|json` sends the other two; `kubectl apply --server-side`
// sends application/apply-patch+yaml (JSON text, which is YAML).

/** patchMergeKey of the lists the three resources have (from the Go struct tags); other lists are atomic. */
const MERGE_KEYS: Record<string, string> = {
  'Service:spec.ports': 'port',
  'Node:status.addresses': 'type',
  'Node:status.conditions': 'type',
  'Node:spec.taints': 'key',
  'Service:status.conditions': 'type',
};

function isMap(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isMap(patch)) return patch;
  const out: Obj = isMap(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/**
 * Strategic merge patch for the lists the three kinds have: maps merge (null deletes), lists with
 * a patchMergeKey merge by it (`$patch: delete` removes an element, `$setElementOrder/<field>`
 * orders them), other lists are replaced; `$retainKeys` and `$deleteFromPrimitiveList` are
 * dropped (the double's kinds have no field that uses them).
 */
export function strategicMergePatch(kind: string, target: unknown, patch: unknown, path = ''): unknown {
  if (!isMap(patch)) return patch;
  if (patch.$patch === 'replace') { const { $patch: _, ...rest } = patch; return rest; }
  if (patch.$patch === 'delete') return undefined;
  const out: Obj = isMap(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    const sub = path ? `${path}.${k}` : k;
    if (v === null) { delete out[k]; continue; }
    const mergeKey = MERGE_KEYS[`${kind}:${sub}`];
    if (Array.isArray(v) && mergeKey) {
      out[k] = mergeList(kind, sub, Array.isArray(out[k]) ? out[k] : [], v, mergeKey, patch[`$setElementOrder/${k}`]);
    } else if (isMap(v)) {
      const r = strategicMergePatch(kind, out[k], v, sub);
      if (r === undefined) delete out[k]; else out[k] = r;
    } else {
      out[k] = v;
    }
  }
  for (const k of Object.keys(patch)) {
    const m = /^\$setElementOrder\/(.+)$/.exec(k);
    if (m && !(m[1] in patch) && Array.isArray(out[m[1]])) {
      const key = MERGE_KEYS[`${kind}:${path ? `${path}.${m[1]}` : m[1]}`];
      if (key) out[m[1]] = mergeList(kind, path, out[m[1]], [], key, patch[k]);
    }
  }
  return out;
}

function mergeList(kind: string, path: string, base: unknown[], patch: unknown[], key: string, order: unknown): unknown[] {
  const out = base.map((e) => e);
  const idx = (v: unknown) => out.findIndex((e) => isMap(e) && e[key] === v);
  for (const p of patch) {
    if (!isMap(p)) continue;
    const i = idx(p[key]);
    if (p.$patch === 'delete') { if (i >= 0) out.splice(i, 1); continue; }
    if (i >= 0) out[i] = strategicMergePatch(kind, out[i], p, path);
    else { const { $patch: _, ...rest } = p; out.push(rest); }
  }
  if (Array.isArray(order)) {
    const rank = (e: unknown) => { const r = order.findIndex((o) => isMap(o) && isMap(e) && o[key] === e[key]); return r < 0 ? order.length : r; };
    out.sort((a, b) => rank(a) - rank(b));
  }
  return out;
}

/** RFC 6902 JSON patch (add, remove, replace, test; paths with ~0 ~1 escapes). */
export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('json patch must be a list of operations');
  let root = structuredClone(doc);
  for (const op of ops as Obj[]) {
    const parts = String(op.path).split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (parts.length === 0) { root = op.value; continue; }
    let parent: any = root;
    for (const p of parts.slice(0, -1)) {
      parent = parent?.[Array.isArray(parent) ? Number(p) : p];
      if (parent === undefined) throw badRequest(`json patch: path ${op.path} does not exist`);
    }
    const last = parts[parts.length - 1];
    const arr = Array.isArray(parent);
    if (op.op === 'test') {
      if (JSON.stringify(parent[last]) !== JSON.stringify(op.value)) throw new ApiError(422, 'Invalid', `json patch test failed at ${op.path}`);
    } else if (op.op === 'remove') {
      if (arr) parent.splice(Number(last), 1); else delete parent[last];
    } else if (op.op === 'add' || op.op === 'replace') {
      if (arr && op.op === 'add') parent.splice(last === '-' ? parent.length : Number(last), 0, op.value);
      else parent[arr ? Number(last) : last] = op.value;
    } else {
      throw badRequest(`json patch: operation ${String(op.op)} is not supported by the double`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------------------------
// Table (meta.k8s.io/v1), what `kubectl get` asks for: the same columns as the real server prints.

function age(o: Obj, now: number): string {
  const t = Date.parse(o.metadata?.creationTimestamp ?? '');
  if (!Number.isFinite(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

function columnsOf(r: ResourceDef): string[] {
  if (r.kind === 'Service') return ['Name', 'Type', 'Cluster-IP', 'External-IP', 'Port(s)', 'Age'];
  if (r.kind === 'EndpointSlice') return ['Name', 'AddressType', 'Ports', 'Endpoints', 'Age'];
  return ['Name', 'Status', 'Roles', 'Age', 'Version'];
}

function cellsOf(r: ResourceDef, o: Obj, now: number): unknown[] {
  const name = o.metadata?.name;
  if (r.kind === 'Service') {
    const spec = o.spec ?? {};
    const ext = [...(spec.externalIPs ?? []), ...((o.status?.loadBalancer?.ingress ?? []).map((i: Obj) => i.ip ?? i.hostname))];
    const ports = (spec.ports ?? []).map((p: Obj) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`).join(',');
    const extText = spec.type === 'ExternalName' ? spec.externalName : ext.length ? ext.join(',') : spec.type === 'LoadBalancer' ? '<pending>' : '<none>';
    return [name, spec.type ?? 'ClusterIP', spec.clusterIP ?? '<none>', extText, ports || '<none>', age(o, now)];
  }
  if (r.kind === 'EndpointSlice') {
    const ports = (o.ports ?? []).map((p: Obj) => p.port).filter((p: unknown) => p !== undefined).join(',');
    const addrs = (o.endpoints ?? []).flatMap((e: Obj) => e.addresses ?? []);
    const eps = addrs.length === 0 ? '<none>' : addrs.slice(0, 3).join(',') + (addrs.length > 3 ? ` + ${addrs.length - 3} more...` : '');
    return [name, o.addressType, ports || '<unset>', eps, age(o, now)];
  }
  const ready = (o.status?.conditions ?? []).find((c: Obj) => c.type === 'Ready');
  return [name, ready?.status === 'True' ? 'Ready' : ready ? 'NotReady' : 'Unknown', '<none>', age(o, now), o.status?.nodeInfo?.kubeletVersion ?? ''];
}

/** A Table of objects; rows carry the object's metadata (includeObject=Metadata, the default). */
export function tableOf(r: ResourceDef, items: readonly Obj[], resourceVersion: string, withColumns = true): Obj {
  const now = Date.now();
  return {
    kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: { resourceVersion },
    ...(withColumns ? {
      columnDefinitions: columnsOf(r).map((name, i) => ({
        name, type: name === 'Name' ? 'string' : 'string', format: name === 'Name' ? 'name' : '', description: name, priority: i === 0 ? 0 : 0,
      })),
    } : {}),
    rows: items.map((o) => ({
      cells: cellsOf(r, o, now),
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
    })),
  };
}

/** Does an Accept header ask for a Table (as=Table;g=meta.k8s.io)? */
export function wantsTable(accept: string | undefined): boolean {
  return !!accept && /as=Table/.test(accept) && /g=meta\.k8s\.io/.test(accept);
}

/** The aggregated discovery version an Accept header asks for, if any (v2 first, as kubectl orders it). */
export function wantsAggregated(accept: string | undefined): string | null {
  if (!accept) return null;
  for (const part of accept.split(',')) {
    if (/as=APIGroupDiscoveryList/.test(part) && /g=apidiscovery\.k8s\.io/.test(part)) {
      const v = /v=(v2beta1|v2)\b/.exec(part);
      if (v) return v[1];
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// OpenAPI v3, only as much as kubectl reads: apply/create/replace ask whether the server does
// field validation (a `fieldValidation` query parameter on the kind's PATCH operation) and then
// leave validation to the server instead of downloading schemas. No schemas are published, so
// client-side apply builds its strategic merge patch from kubectl's compiled-in Go types.

function gvPath(group: string, version: string): string {
  return group === '' ? `api/${version}` : `apis/${group}/${version}`;
}

/** GET /openapi/v3 */
export function openApiV3Root(): Obj {
  const paths: Obj = {};
  for (const r of RESOURCES) {
    const p = gvPath(r.group, r.version);
    paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${r.group === '' ? 'CORE' : 'DISCOVERY'}0001` };
  }
  return { paths };
}

/** GET /openapi/v3/api/v1, /openapi/v3/apis/<group>/<version> */
export function openApiV3Doc(path: string): Obj | null {
  const rs = RESOURCES.filter((r) => gvPath(r.group, r.version) === path);
  if (rs.length === 0) return null;
  const paths: Obj = {};
  for (const r of rs) {
    const gvk = { group: r.group, version: r.version, kind: r.kind };
    const item = `/${path}${r.namespaced ? '/namespaces/{namespace}' : ''}/${r.plural}/{name}`;
    const params = ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } }));
    paths[item] = {
      get: { operationId: `read${r.kind}`, 'x-kubernetes-action': 'get', 'x-kubernetes-group-version-kind': gvk, responses: {} },
      patch: { operationId: `patch${r.kind}`, 'x-kubernetes-action': 'patch', 'x-kubernetes-group-version-kind': gvk, parameters: params, responses: {} },
    };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.32.0-apidouble' }, paths, components: { schemas: {} } };
}

/**
 * Server-side apply for one field manager, without managedFields: what the manager applied last
 * time and no longer applies is removed (maps by key, merge-key lists by item), then the new
 * configuration is merged in (strategic merge: merge-key lists by item, other lists replaced).
 * Enough for kubectl's `apply --server-side` (manager "kubectl") next to the annotation-only apply
 * of manager "kubectl-last-applied"; conflicts between managers are not detected.
 */
export function serverSideApply(kind: string, live: Obj, previous: Obj | undefined, config: Obj): Obj {
  const pruned = previous ? prune(kind, live, previous, config, '') : live;
  return strategicMergePatch(kind, pruned, config) as Obj;
}

function prune(kind: string, live: unknown, prev: unknown, next: unknown, path: string): unknown {
  if (!isMap(live) || !isMap(prev)) return live;
  const out: Obj = { ...live };
  const nextMap = isMap(next) ? next : {};
  for (const [k, pv] of Object.entries(prev)) {
    const sub = path ? `${path}.${k}` : k;
    if (!(k in nextMap)) { delete out[k]; continue; }
    const key = MERGE_KEYS[`${kind}:${sub}`];
    if (key && Array.isArray(pv) && Array.isArray(out[k])) {
      const keep = new Set((nextMap[k] as unknown[]).filter(isMap).map((e) => e[key]));
      const dropped = new Set(pv.filter(isMap).map((e) => e[key]).filter((v) => !keep.has(v)));
      out[k] = (out[k] as unknown[]).filter((e) => !(isMap(e) && dropped.has(e[key])));
    } else if (isMap(pv)) {
      out[k] = prune(kind, out[k], pv, nextMap[k], sub);
    }
  }
  return out;
}
