// The health port (`--healthz-bind-address`, default 127.0.0.1:10256), kube-proxy style:
//
//   GET /healthz  200/503  {"lastUpdated": "<ISO>","currentTime": "<ISO>", "nodeEligible": true}
//   GET /livez    200/503  {"lastUpdated": "<ISO>","currentTime": "<ISO>"}   (same rule, ignores nodeEligible)
//   GET /readyz   200 "ok\n" when ready(), else 503 "not ready\n"
//
// How "healthy" is decided mirrors kube-proxy's pkg/proxy/healthcheck/proxier_health.go, where
// healthTimeout = 2 * syncPeriod (cmd/kube-proxy/app/server.go):
//   - kube-proxy records the time of the OLDEST update that was queued but not yet applied
//     (QueuedUpdate) and clears it when rules are successfully synced (Updated). It is healthy
//     while nothing is pending, or while the oldest pending update is younger than healthTimeout.
//     A change that is not applied within 2 sync periods (a missed/failed sync) makes it 503.
//   - kube-tun has that exact rule when the daemon passes `pendingSince` (ms epoch of the oldest
//     change noticed but not yet compiled and swapped in; 0 = nothing pending).
//   - Without `pendingSince` the rule degrades to "the last successful sync is younger than
//     2 * syncPeriod" (lastSync() = 0 counts as stale). That is only right for a daemon that
//     re-syncs at least once per syncPeriod.
// When healthy, kube-proxy reports lastUpdated = currentTime ("recent", for compatibility with
// older releases); when unhealthy it reports the real last update. We do the same. Timestamps are
// ISO 8601 (kube-proxy prints Go's time.Time String() form; load balancers only look at the code).
import * as http from 'node:http';
import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parseBindAddress, listenOn, closeServer, refuseMethod, notFound, DEFAULT_HEALTHZ_BIND_ADDRESS, HEALTHZ_PORT } from './http';

export interface HealthServerOptions {
  /** HOST:PORT, default 127.0.0.1:10256. */
  bindAddress?: string;
  /** ms epoch of the last successful sync (rules compiled and swapped in); 0 = never. */
  lastSync: () => number;
  /** The daemon's sync period; the health timeout is 2x this (kube-proxy's rule). */
  syncPeriodMs: number;
  /** /readyz: TUN open, routing installed, first rules loaded. */
  ready: () => boolean;
  /**
   * kube-proxy's exact rule: ms epoch of the oldest change noticed but not yet applied (0 = none).
   * Set it when a watched file changes (if 0), clear it after a successful reload; a reload that
   * fails keeps it set, so /healthz turns 503 after 2 * syncPeriod. Omit to use lastSync age.
   */
  pendingSince?: () => number;
  /** kube-proxy reports false while its Node is being deleted / tainted ToBeDeletedByClusterAutoscaler. Default true. */
  nodeEligible?: () => boolean;
  /** Clock, ms epoch (tests). Default Date.now. */
  now?: () => number;
  log?: Logger;
}

export interface HealthServer {
  close(): Promise<void>;
  /** Resolves once listening (with the port the OS chose for port 0); rejects if the bind fails. */
  readonly listening: Promise<AddressInfo>;
  readonly server: http.Server;
  /** The rule /healthz applies, for `kube-tun stats` or logs. */
  healthy(): boolean;
}

export interface HealthState { healthy: boolean; lastUpdated: number; currentTime: number }

/** The /healthz decision (exported for tests and for the daemon's own use). */
export function healthState(o: Pick<HealthServerOptions, 'lastSync' | 'syncPeriodMs' | 'pendingSince'>, now: number): HealthState {
  const timeout = 2 * o.syncPeriodMs;
  const last = o.lastSync();
  let healthy: boolean;
  if (o.pendingSince) {
    const pending = o.pendingSince();
    healthy = pending === 0 || now - pending < timeout;
  } else {
    healthy = last > 0 && now - last < timeout;
  }
  return { healthy, lastUpdated: healthy ? now : last, currentTime: now };
}

function iso(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString() : new Date(0).toISOString();
}

export function createHealthServer(opts: HealthServerOptions): HealthServer {
  if (!(opts.syncPeriodMs > 0)) throw new Error(`health server: syncPeriodMs must be > 0, got ${opts.syncPeriodMs}`);
  const addr = parseBindAddress(opts.bindAddress ?? DEFAULT_HEALTHZ_BIND_ADDRESS, HEALTHZ_PORT);
  const now = opts.now ?? Date.now;
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (refuseMethod(req, res)) return;
    if (url === '/healthz' || url === '/livez') {
      const st = healthState(opts, now());
      const nodeEligible = opts.nodeEligible ? opts.nodeEligible() : true;
      const ok = url === '/healthz' ? st.healthy && nodeEligible : st.healthy;
      const body = url === '/healthz'
        ? `{"lastUpdated": ${JSON.stringify(iso(st.lastUpdated))},"currentTime": ${JSON.stringify(iso(st.currentTime))}, "nodeEligible": ${nodeEligible}}`
        : `{"lastUpdated": ${JSON.stringify(iso(st.lastUpdated))},"currentTime": ${JSON.stringify(iso(st.currentTime))}}`;
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
      res.end(body);
      return;
    }
    if (url === '/readyz') {
      const ok = opts.ready();
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end(ok ? 'ok\n' : 'not ready\n');
      return;
    }
    notFound(res);
  });
  const listening = listenOn(server, addr, { log: opts.log, what: 'healthz', bindAddress: opts.bindAddress });
  return {
    close: () => closeServer(server),
    listening,
    server,
    healthy: () => healthState(opts, now()).healthy,
  };
}

/**
 * `--ready-fd N`: tell whoever started us that the daemon is up. Writes the 8 bytes "READY=1\n"
 * (sd_notify's wording, one line, so `read -u N line` in a shell script returns) to the fd and
 * closes it, so a reader that waits for EOF also wakes up. Call it once, after the TUN is open,
 * routing is installed and the servers listen. Throws an Error naming the fd if it is not writable.
 *
 *   mkfifo /tmp/kt.ready
 *   kube-tun run ... --ready-fd 3 3>/tmp/kt.ready &
 *   read -r line < /tmp/kt.ready    # returns "READY=1" once the daemon is up, or EOF if it died
 */
export function notifyReadyFd(fd: number): void {
  if (!Number.isInteger(fd) || fd < 0) throw new Error(`--ready-fd: "${fd}" is not a file descriptor number`);
  try {
    const msg = Buffer.from('READY=1\n');
    let off = 0;
    while (off < msg.length) off += fs.writeSync(fd, msg, off, msg.length - off);
  } catch (e: any) {
    try { fs.closeSync(fd); } catch { /* already bad */ }
    throw new Error(`--ready-fd ${fd}: cannot write: ${e.code ?? e.message}`);
  }
  fs.closeSync(fd);
}
