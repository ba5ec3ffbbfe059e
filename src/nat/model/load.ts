// Manifest files -> ClusterState: each source read as JSON, through the fast YAML path, or by the
// yaml package; KubeTunConfiguration documents first; then the objects cross-referenced.
import * as fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { formatIPv4 } from '../ip';
import { ClusterState, EndpointInfo, KubeTunConfig, NodeInfo, ServicePortInfo, defaultKubeTunConfig, servicePortNameString } from './state';
import { ConfigError, DocCtx, Obj } from './doc';
export { parseServiceObject, parseEndpointSliceObject, parseNodeObject } from './objects';
export type { ParsedService, ParsedSlice, RawEndpoint } from './objects';
import { Collected, ParsedService, ParsedSlice, handleObject } from './objects';
import { fastYamlDocuments } from './yaml-fast';

export interface ConfigSource { readonly file: string; readonly text: string }

/** Parses manifests (already read) into the desired state. Throws ConfigError. */
export function parseConfig(sources: readonly ConfigSource[]): ClusterState {
  const col: Collected = { config: null, configSource: null, services: new Map(), slices: new Map(), nodes: new Map() };
  // The configuration may come after the services that depend on it (serviceCIDR check):
  // handle KubeTunConfiguration documents first.
  const docs: { ctx: DocCtx; value: unknown; isConfig: boolean }[] = [];
  for (const src of sources) {
    // JSON (kubectl get -o json) is YAML too, but JSON.parse is ~100x faster than the yaml package.
    const head = src.text.trimStart()[0];
    if (head === '{' || head === '[') {
      let value: unknown;
      try { value = JSON.parse(src.text); } catch { value = undefined; }
      if (value !== undefined) {
        const list = Array.isArray(value) ? value : [value];
        list.forEach((v, i) => {
          if (v === null) return;
          const isConfig = typeof v === 'object' && (v as Obj).kind === 'KubeTunConfiguration';
          docs.push({ ctx: new DocCtx(src.file, i + 1), value: v, isConfig });
        });
        continue;
      }
    }
    // The plain YAML most manifests are written in: the same values, an order of magnitude faster.
    const fast = fastYamlDocuments(src.text);
    if (fast !== null) {
      fast.forEach((value, i) => {
        if (value === null || value === undefined) return; // empty document
        const isConfig = typeof value === 'object' && (value as Obj).kind === 'KubeTunConfiguration';
        docs.push({ ctx: new DocCtx(src.file, i + 1), value, isConfig });
      });
      continue;
    }
    const parsed = parseAllDocuments(src.text, { uniqueKeys: true });
    const list = Array.isArray(parsed) ? parsed : [parsed];
    list.forEach((d, i) => {
      const ctx = new DocCtx(src.file, i + 1);
      if (d.errors.length > 0) {
        const e = d.errors[0];
        const line = e.linePos?.[0]?.line;
        ctx.fail('', `YAML: ${e.message.split('\n')[0]}${line ? ` (line ${line})` : ''}`);
      }
      const value: unknown = d.toJS({ maxAliasCount: 100 });
      if (value === null || value === undefined) return; // empty document
      const isConfig = typeof value === 'object' && (value as Obj).kind === 'KubeTunConfiguration';
      docs.push({ ctx, value, isConfig });
    });
  }
  for (const d of docs) if (d.isConfig) handleObject(d.ctx, d.value, col, '');
  for (const d of docs) if (!d.isConfig) handleObject(d.ctx, d.value, col, '');
  return assembleState(col.config, col.services.values(), col.slices.values(), col.nodes.values());
}

/** Reads and parses manifest files. Throws ConfigError (also for unreadable files). */
export function loadConfig(files: string | readonly string[]): ClusterState {
  const list = typeof files === 'string' ? [files] : files;
  const sources = list.map((file) => {
    try {
      return { file, text: fs.readFileSync(file, 'utf8') };
    } catch (e) {
      throw new ConfigError(`${file}: ${(e as Error).message}`, file);
    }
  });
  return parseConfig(sources);
}

/**
 * The objects cross-referenced into the desired state (file mode and watch mode alike): service
 * ports sorted, each Service's slices merged, nodes sorted. `config` null = the defaults.
 */
export function assembleState(
  config: KubeTunConfig | null, services: Iterable<ParsedService>, slices: Iterable<ParsedSlice>, nodes: Iterable<NodeInfo>,
): ClusterState {
  const servicePorts: ServicePortInfo[] = [];
  for (const { ports } of services) servicePorts.push(...ports);
  servicePorts.sort((a, b) => {
    const an = servicePortNameString(a), bn = servicePortNameString(b);
    return an < bn ? -1 : an > bn ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0;
  });
  // endpointslicecache: per (service, port name, protocol) the endpoints of all slices, deduplicated
  // by IP, then sorted by Endpoint.String() ("ip:port", string order).
  const byKey = new Map<string, Map<number, EndpointInfo>>();
  const sorted = [...slices].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const s of sorted) {
    for (const p of s.ports) {
      const key = `${s.service}:${p.name}/${p.protocol}`;
      let m = byKey.get(key);
      if (!m) byKey.set(key, (m = new Map()));
      for (const e of s.endpoints) {
        if (m.has(e.ip)) continue;
        m.set(e.ip, {
          ip: e.ip, port: p.port, endpoint: `${formatIPv4(e.ip)}:${p.port}`, nodeName: e.nodeName, zone: e.zone,
          ready: e.ready, serving: e.serving, terminating: e.terminating, zoneHints: e.zoneHints,
        });
      }
    }
  }
  const endpoints: Record<string, EndpointInfo[]> = {};
  for (const [key, m] of byKey) {
    const list = [...m.values()];
    list.sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
    endpoints[key] = list;
  }
  const nodeList = [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { config: config ?? defaultKubeTunConfig(), servicePorts, endpoints, nodes: nodeList };
}
