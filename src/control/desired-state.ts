// Where the daemon's desired state comes from, behind one interface for the Reloader: the config
// files (file mode: re-read, and the changed Services found by comparing with what runs), or the
// API server (watch mode: the KubeSource's objects, and the changes its informers reported).
import { ClusterState, loadConfig } from '../nat';
import type { KubeSource } from './kube-source';
import { stateChanges } from './sync';

/** Which Services (namespace/name) a sync has to redo, or 'all' (configuration or Nodes changed). */
export type ChangedServices = ReadonlySet<string> | 'all';

export interface DesiredState {
  /** 'files' or 'kube' (logs, stats). */
  readonly kind: string;
  /**
   * The desired state now and what changed since `prev` (the state that runs). Throws ConfigError
   * on a bad file. A caller whose sync then fails must redo 'all' next time (changes are taken).
   */
  read(prev: ClusterState): { state: ClusterState; changed: ChangedServices };
}

export function fileDesiredState(files: readonly string[]): DesiredState {
  return {
    kind: 'files',
    read(prev) {
      const state = loadConfig(files);
      return { state, changed: stateChanges(prev, state) };
    },
  };
}

/** Watch mode: the source must have synced before the first read. */
export function kubeDesiredState(src: KubeSource): DesiredState {
  return {
    kind: 'kube',
    read() {
      const c = src.takeChanges();
      const state = src.state();
      if (c.nodes.size > 0) return { state, changed: 'all' };
      const changed = new Set(c.services);
      for (const k of c.endpoints) changed.add(k);
      return { state, changed };
    },
  };
}
