// The connection to the API server, with the official client (@kubernetes/client-node 1.x, an
// ES module that Node >= 20.19 loads through require()): a kubeconfig file or the in-cluster
// service account (like kube-proxy: --kubeconfig, else KUBERNETES_SERVICE_HOST/PORT with the
// token and CA under /var/run/secrets/kubernetes.io/serviceaccount), and list + watch for the
// three resources kube-tun follows, as the reflector in kube-reflector.ts drives them.
import * as fs from 'node:fs';
import { CoreV1Api, DiscoveryV1Api, KubeConfig, Watch } from '@kubernetes/client-node';

/** A Kubernetes object as it is on the wire (JSON), with kind and apiVersion filled in. */
export type KubeObject = Record<string, any> & { metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> } };

export interface KubeConnectOptions {
  /** A kubeconfig file (kube-proxy's --kubeconfig). Without it: the in-cluster service account. */
  kubeconfig?: string;
  /** The kubeconfig context to use (default: its current-context). */
  context?: string;
  /** Prefix for the service account directory (tests). */
  serviceAccountPrefix?: string;
  /** The environment read for KUBERNETES_SERVICE_HOST/PORT (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export class KubeConnectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConnectError';
  }
}

/** A KubeConfig from a kubeconfig file or, without one, from the in-cluster service account. */
export function loadKubeConfig(o: KubeConnectOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  if (o.kubeconfig !== undefined) {
    if (!fs.existsSync(o.kubeconfig)) throw new KubeConnectError(`--kubeconfig: ${o.kubeconfig}: no such file`);
    try {
      kc.loadFromFile(o.kubeconfig);
    } catch (e) {
      throw new KubeConnectError(`--kubeconfig: ${o.kubeconfig}: ${(e as Error).message}`);
    }
    if (o.context !== undefined) kc.setCurrentContext(o.context);
    if (!kc.getCurrentCluster()) throw new KubeConnectError(`--kubeconfig: ${o.kubeconfig}: no current cluster (context ${JSON.stringify(kc.getCurrentContext())})`);
    return kc;
  }
  const env = o.env ?? process.env;
  const host = env.KUBERNETES_SERVICE_HOST, port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new KubeConnectError('no --kubeconfig and not in a cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)');
  }
  const prefix = o.serviceAccountPrefix ?? '';
  const tokenFile = `${prefix}/var/run/secrets/kubernetes.io/serviceaccount/token`;
  if (!fs.existsSync(tokenFile)) throw new KubeConnectError(`in-cluster: ${tokenFile}: no service account token`);
  // loadFromCluster reads the variables from process.env; hand it the ones we were given.
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
  try {
    process.env.KUBERNETES_SERVICE_HOST = host;
    process.env.KUBERNETES_SERVICE_PORT = port;
    kc.loadFromCluster(prefix);
  } finally {
    restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
    restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
  }
  return kc;
}

function restoreEnv(name: string, v: string | undefined): void {
  if (v === undefined) delete process.env[name];
  else process.env[name] = v;
}

/** What the reflector needs from one resource: a consistent list and a watch from a resourceVersion. */
export interface ListerWatcher {
  readonly kind: string;
  list(): Promise<{ items: KubeObject[]; resourceVersion: string }>;
  /**
   * Starts a watch; `onEvent` gets each event line, `done` is called once when the stream ends
   * (null: closed cleanly; an Error with statusCode when the server refused it). Returns a handle to abort it.
   */
  watch(resourceVersion: string, timeoutSeconds: number, onEvent: (type: string, obj: any) => void, done: (err: unknown) => void): Promise<{ abort(): void }>;
}

/** Typed list results carry Dates and class instances; the wire form is what the parsers read. */
function toWire(kind: string, apiVersion: string, items: readonly object[]): KubeObject[] {
  return items.map((it) => ({ ...JSON.parse(JSON.stringify(it)), kind, apiVersion }));
}

function listerWatcher(kc: KubeConfig, kind: string, apiVersion: string, path: string, list: () => Promise<{ items: object[]; metadata?: { resourceVersion?: string } }>): ListerWatcher {
  const watcher = new Watch(kc);
  return {
    kind,
    async list() {
      const l = await list();
      return { items: toWire(kind, apiVersion, l.items), resourceVersion: l.metadata?.resourceVersion ?? '' };
    },
    async watch(resourceVersion, timeoutSeconds, onEvent, done) {
      const c = await watcher.watch(path, { resourceVersion, allowWatchBookmarks: true, timeoutSeconds }, onEvent, done);
      return { abort: () => c.abort() };
    },
  };
}

/** List and watch for v1 Services, discovery.k8s.io/v1 EndpointSlices and v1 Nodes, across namespaces. */
export function kubeListerWatchers(kc: KubeConfig): { services: ListerWatcher; endpointSlices: ListerWatcher; nodes: ListerWatcher } {
  const core = kc.makeApiClient(CoreV1Api), discovery = kc.makeApiClient(DiscoveryV1Api);
  return {
    services: listerWatcher(kc, 'Service', 'v1', '/api/v1/services', () => core.listServiceForAllNamespaces()),
    endpointSlices: listerWatcher(kc, 'EndpointSlice', 'discovery.k8s.io/v1', '/apis/discovery.k8s.io/v1/endpointslices',
      () => discovery.listEndpointSliceForAllNamespaces()),
    nodes: listerWatcher(kc, 'Node', 'v1', '/api/v1/nodes', () => core.listNode()),
  };
}
