// `kube-tun run` and `kube-tun cleanup`.
import type { Logger } from 'pino';
import { Daemon } from '../daemon/daemon';
import { defaultControlSocket } from '../daemon/control';
import { teardownRouting, DEFAULT_TABLE_FROM_TUN, DEFAULT_TABLE_TO_TUN } from '../daemon/routing';
import { DaemonOptions, DEFAULT_CT_MAX } from '../daemon/settings';
import { UsageError } from './main';

export function daemonOptions(v: Record<string, any>): DaemonOptions {
  const node = v['hostname-override'] ?? v.node;
  if (!node) throw new UsageError('run: --hostname-override NODE (or --node NODE) is required');
  if (!v.config?.length && !v.rules) throw new UsageError('run: give --config FILE (Services, EndpointSlices, Nodes) or --rules DUMP');
  let ctMax = DEFAULT_CT_MAX;
  if (v['ct-max'] !== undefined) {
    ctMax = Number(v['ct-max']);
    if (!Number.isInteger(ctMax) || ctMax < 16 || ctMax > 1 << 24) throw new UsageError(`--ct-max: expected an integer 16-16777216, got "${v['ct-max']}"`);
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(v.tun)) throw new UsageError(`--tun: "${v.tun}" is not a valid interface name (1-15 of A-Za-z0-9_.-)`);
  return {
    node, tun: v.tun, ctMax,
    configFiles: v.config ?? [],
    rulesFile: v.rules,
    clusterCIDR: v['cluster-cidr'],
    masqueradeAll: v['masquerade-all'],
    nodeIPs: v['node-ip'],
    controlSocket: v['control-socket'] ?? defaultControlSocket(v.tun),
    watch: !v['no-watch'],
    keepRouting: !!v['keep-routing'],
  };
}

export async function run(v: Record<string, any>, log: Logger): Promise<number> {
  const opts = daemonOptions(v);
  const daemon = new Daemon(opts, log);
  daemon.start();
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      daemon.stop(sig);
      resolve(0);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGHUP', () => daemon.reload('SIGHUP'));
  });
}

export async function cleanup(v: Record<string, any>): Promise<number> {
  const removed = teardownRouting({ tun: v.tun, tableFromTun: DEFAULT_TABLE_FROM_TUN, tableToTun: DEFAULT_TABLE_TO_TUN });
  process.stdout.write(removed.length ? removed.map((r) => `removed ${r}\n`).join('') : 'nothing to clean up\n');
  return 0;
}
