// Watch mode's source of desired state: informers (kube-reflector.ts) for v1 Services,
// discovery.k8s.io/v1 EndpointSlices and v1 Nodes keep the current objects; each object is read by
// the same per-object parsers as the YAML file mode (nat/model parseServiceObject,
// parseEndpointSliceObject, parseNodeObject) when it arrives, and what it
// means to the proxier is compared with what it meant before, so a change is reported only when
// it changes the proxier's input: per Service ('service'), per Service's endpoints ('endpoints',
// any of its slices) and per Node ('node'; node heartbeats change nothing). The caller debounces
// (drain the pending set with takeChanges()) and asks for the ClusterState with state().
//
// What counts, as kube-proxy's informers select it: Services and EndpointSlices labelled
// service.kubernetes.io/service-proxy-name belong to another proxy (kube-tun takes only those
// whose label equals its own serviceProxyName, when it has one), and those labelled
// service.kubernetes.io/headless are not proxied. Headless and ExternalName Services, IPv6 and
// FQDN slices and the endpoint conditions are the parsers' business (nat/model, nat/rules).
import { EventEmitter } from 'node:events';
import {
  ClusterState, ConfigError, ConfigSource, KubeTunConfig, NodeInfo, ParsedService, ParsedSlice,
  assembleState, parseConfig, parseEndpointSliceObject, parseNodeObject, parseServiceObject,
} from '../nat';
import { KubeConnectOptions, KubeObject, ListerWatcher, kubeListerWatchers, loadKubeConfig } from './kube-client';
import { BackoffOptions, Reflector, ReflectorStats, WatchEventType } from './kube-reflector';

export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export type KubeChange =
  | { readonly kind: 'service'; readonly key: string } // <namespace>/<name> of the Service
  | { readonly kind: 'endpoints'; readonly key: string } // <namespace>/<name> of the Service the slices belong to
  | { readonly kind: 'node'; readonly key: string } // Node name
  | { readonly kind: 'synced' } // every resource has been listed once: state() is complete
  | { readonly kind: 'invalid'; readonly key: string; readonly message: string }; // an object the parsers refuse (left out)

/** Changes collected since the last takeChanges(), de-duplicated. */
export interface PendingChanges {
  services: Set<string>;
  endpoints: Set<string>;
  nodes: Set<string>;
}

export interface KubeSourceOptions {
  services: ListerWatcher;
  endpointSlices: ListerWatcher;
  nodes: ListerWatcher;
  /** Documents read with every object (the KubeTunConfiguration: serviceCIDR checks, scheduler default). */
  configSources?: readonly ConfigSource[];
  /** Take only objects labelled service.kubernetes.io/service-proxy-name=<this> (default: only unlabelled ones, like kube-proxy). */
  serviceProxyName?: string | null;
  backoff?: BackoffOptions;
  watchTimeoutSeconds?: number;
  log?: (msg: string) => void;
}

type Kind = 'Service' | 'EndpointSlice' | 'Node';

type Parsed = ParsedService | ParsedSlice | NodeInfo;

/** One object the source holds. */
interface Held {
  readonly obj: KubeObject;
  /** What the parsers made of it; null when it is not taken (or refused, or an IPv6/FQDN slice). */
  readonly parsed: Parsed | null;
  /** What the proxier sees of it (parsed, without source references); '' when it is not taken. */
  readonly meaning: string;
  /** The Service a slice belongs to (slices), else the object's own key. */
  readonly service: string;
  readonly valid: boolean;
}

/**
 * Does a proxy named `serviceProxyName` (null: kube-proxy itself) take a Service or EndpointSlice
 * with these labels? kube-proxy's informers select `!service.kubernetes.io/service-proxy-name,
 * !service.kubernetes.io/headless`. The YAML file mode does not apply it yet: it can call this.
 */
export function takenByProxy(labels: Readonly<Record<string, string>> | undefined, serviceProxyName: string | null): boolean {
  const l = labels ?? {};
  if (HEADLESS_LABEL in l) return false;
  const proxy = l[SERVICE_PROXY_NAME_LABEL];
  return serviceProxyName === null ? proxy === undefined : proxy === serviceProxyName;
}

function objectKey(kind: Kind, o: KubeObject): string {
  return kind === 'Node' ? o.metadata.name : `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

/** JSON without the `source` fields the parser adds (they name the document, not the content). */
function meaningOf(p: Parsed | null): string {
  return p === null ? '-' : JSON.stringify(p, (k, v) => (k === 'source' ? undefined : v));
}

export class KubeSource extends EventEmitter {
  private readonly held: Record<Kind, Map<string, Held>> = { Service: new Map(), EndpointSlice: new Map(), Node: new Map() };
  private readonly listed = new Set<Kind>();
  private readonly reflectors: Record<Kind, Reflector>;
  private pending: PendingChanges = { services: new Set(), endpoints: new Set(), nodes: new Set() };
  private syncedFlag = false;
  /** The KubeTunConfiguration of opts.configSources (or the defaults). */
  private readonly config: KubeTunConfig;

  constructor(private readonly opts: KubeSourceOptions) {
    super();
    this.config = parseConfig(opts.configSources ?? []).config;
    const mk = (kind: Kind, lw: ListerWatcher): Reflector => new Reflector(lw, {
      replace: (items) => this.replace(kind, items),
      event: (type, obj) => this.event(kind, type, obj),
    }, { backoff: opts.backoff, watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300), log: opts.log });
    this.reflectors = { Service: mk('Service', opts.services), EndpointSlice: mk('EndpointSlice', opts.endpointSlices), Node: mk('Node', opts.nodes) };
  }

  start(): void {
    for (const r of Object.values(this.reflectors)) r.start();
  }

  async stop(): Promise<void> {
    await Promise.all(Object.values(this.reflectors).map((r) => r.stop()));
  }

  /** True once Services, EndpointSlices and Nodes have each been listed (kube-proxy's "synced"). */
  get synced(): boolean { return this.syncedFlag; }

  /** Resolves when synced (at once if it is). */
  waitForSync(): Promise<void> {
    if (this.syncedFlag) return Promise.resolve();
    return new Promise((resolve) => {
      const on = (c: KubeChange): void => { if (c.kind === 'synced') { this.off('change', on); resolve(); } };
      this.on('change', on);
    });
  }

  stats(): Record<Kind, ReflectorStats & { objects: number; lastSyncResourceVersion: string | null; lastError: string | null }> {
    const one = (k: Kind) => ({
      ...this.reflectors[k].stats, objects: this.held[k].size,
      lastSyncResourceVersion: this.reflectors[k].lastSyncResourceVersion, lastError: this.reflectors[k].lastError,
    });
    return { Service: one('Service'), EndpointSlice: one('EndpointSlice'), Node: one('Node') };
  }

  /** The objects held (as received, kind and apiVersion filled in), taken or not. */
  objects(kind: Kind): KubeObject[] {
    return [...this.held[kind].values()].map((h) => h.obj);
  }

  /** The changes since the last call (for a caller that debounces). */
  takeChanges(): PendingChanges {
    const p = this.pending;
    this.pending = { services: new Set(), endpoints: new Set(), nodes: new Set() };
    return p;
  }

  /**
   * The desired state from every object taken (configuration from opts.configSources), assembled
   * as the file mode assembles its documents. Objects the parsers refused on arrival are left out.
   */
  state(): ClusterState {
    const pick = <T extends Parsed>(kind: Kind): T[] => {
      const out: T[] = [];
      for (const h of this.held[kind].values()) if (h.parsed !== null) out.push(h.parsed as T);
      return out;
    };
    return assembleState(this.config, pick<ParsedService>('Service'), pick<ParsedSlice>('EndpointSlice'), pick<NodeInfo>('Node'));
  }

  // --- store updates (informer handlers) ---

  private hold(kind: Kind, obj: KubeObject): Held {
    const key = objectKey(kind, obj);
    const service = kind === 'EndpointSlice'
      ? `${obj.metadata.namespace ?? 'default'}/${obj.metadata.labels?.[SERVICE_NAME_LABEL] ?? ''}`
      : key;
    if (kind !== 'Node' && !takenByProxy(obj.metadata.labels, this.opts.serviceProxyName ?? null)) return { obj, parsed: null, meaning: '', service, valid: true };
    const ref = { file: `apiserver:${kind}/${key}`, doc: 1 };
    try {
      const parsed = kind === 'Service' ? parseServiceObject(obj, this.config, ref)
        : kind === 'EndpointSlice' ? parseEndpointSliceObject(obj, ref) : parseNodeObject(obj, ref);
      return { obj, parsed, meaning: meaningOf(parsed), service, valid: true };
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.emitChange({ kind: 'invalid', key: `${kind}/${key}`, message: e.message });
      return { obj, parsed: null, meaning: '', service, valid: false };
    }
  }

  private put(kind: Kind, key: string, next: Held | null): void {
    const m = this.held[kind];
    const prev = m.get(key) ?? null;
    if (next) m.set(key, next);
    else m.delete(key);
    const before = prev?.meaning ?? '', after = next?.meaning ?? '';
    if (kind === 'EndpointSlice') {
      // A slice that moves to another Service changes both.
      const from = before === '' ? null : prev!.service, to = after === '' ? null : next!.service;
      if (before === after && from === to) return;
      if (from !== null) this.changed('endpoints', from);
      if (to !== null && to !== from) this.changed('endpoints', to);
    } else if (before !== after) {
      this.changed(kind === 'Node' ? 'node' : 'service', key);
    }
  }

  private changed(kind: 'service' | 'endpoints' | 'node', key: string): void {
    (kind === 'service' ? this.pending.services : kind === 'endpoints' ? this.pending.endpoints : this.pending.nodes).add(key);
    this.emitChange({ kind, key });
  }

  private emitChange(c: KubeChange): void {
    this.emit('change', c);
  }

  private withKind(kind: Kind, o: KubeObject): KubeObject {
    if (o.kind === kind) return o;
    return { ...o, kind, apiVersion: kind === 'EndpointSlice' ? 'discovery.k8s.io/v1' : 'v1' };
  }

  private replace(kind: Kind, items: readonly KubeObject[]): void {
    const m = this.held[kind];
    const seen = new Set<string>();
    for (const raw of items) {
      const o = this.withKind(kind, raw);
      const key = objectKey(kind, o);
      seen.add(key);
      const prev = m.get(key);
      // Same resourceVersion: the same object (a relist after 410 re-delivers everything).
      if (prev && prev.obj.metadata.resourceVersion !== undefined && prev.obj.metadata.resourceVersion === o.metadata.resourceVersion) continue;
      this.put(kind, key, this.hold(kind, o));
    }
    for (const key of [...m.keys()]) if (!seen.has(key)) this.put(kind, key, null);
    if (!this.listed.has(kind)) {
      this.listed.add(kind);
      if (this.listed.size === 3 && !this.syncedFlag) {
        this.syncedFlag = true;
        this.emitChange({ kind: 'synced' });
      }
    }
  }

  private event(kind: Kind, type: WatchEventType, raw: KubeObject): void {
    const o = this.withKind(kind, raw);
    const key = objectKey(kind, o);
    this.put(kind, key, type === 'DELETED' ? null : this.hold(kind, o));
  }
}

/** A KubeSource on a real connection: --kubeconfig FILE, else the in-cluster service account. */
export function connectKubeSource(connect: KubeConnectOptions, opts: Omit<KubeSourceOptions, 'services' | 'endpointSlices' | 'nodes'> = {}): KubeSource {
  const lws = kubeListerWatchers(loadKubeConfig(connect));
  return new KubeSource({ ...opts, ...lws });
}
