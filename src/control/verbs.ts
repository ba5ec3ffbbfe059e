// What the control socket's commands do: conntrack -L/-D/-E, stats, rules --live, reload, pcap.
// Each answer is text; an Error's message goes back as "error: …".
import { performance } from 'node:perf_hooks';
import type * as net from 'node:net';
import type { Logger } from 'pino';
import { formatEntry } from '../conntrack';
import type { ConntrackTable, ConntrackCounters } from '../conntrack';
import { pcapControl } from '../io/pcap';
import type { PcapTap } from '../io/pcap';
import { filterEntries, CONNTRACK_TOOL } from '../ops/conntrack-filter';
import type { ListFilter } from '../ops/conntrack-filter';
import type { ConntrackEvents } from '../ops/events';
import type { ControlRequest } from './control-socket';
import type { Reloader } from './reloader';

/** What the commands act on. */
export interface VerbContext {
  ct: ConntrackTable;
  events: ConntrackEvents;
  reloader: Reloader;
  tap: PcapTap;
  log: Logger;
  stats(): Record<string, unknown>;
}

/** The control socket's handler: an answer, or nothing for a command that keeps `sock` (conntrack -E). */
export function handleControl(ctx: VerbContext, req: ControlRequest, sock: net.Socket): string | void {
  const a = (req.args ?? {}) as Record<string, any>;
  switch (req.cmd) {
    case 'conntrack-list': {
      const now = performance.now();
      const lines: string[] = [];
      const fmt = { proc: a.extended === true }; // -o extended: the /proc/net/nf_conntrack layout ("ipv4     2 …")
      filterEntries(ctx.ct, a as ListFilter, now, (slot) => lines.push(formatEntry(ctx.ct, slot, now, fmt)));
      return lines.join('\n') + (lines.length ? '\n' : '') +
        `${CONNTRACK_TOOL}: ${lines.length} flow entries have been shown.\n`;
    }
    case 'conntrack-delete': {
      // Like conntrack -D: each entry is printed as it was, then removed.
      const now = performance.now();
      const victims: number[] = [];
      const lines: string[] = [];
      const fmt = { proc: a.extended === true };
      filterEntries(ctx.ct, a as ListFilter, now, (slot) => { victims.push(slot); lines.push(formatEntry(ctx.ct, slot, now, fmt)); });
      ctx.events.remove(victims, now);
      return lines.join('\n') + (lines.length ? '\n' : '') + `${CONNTRACK_TOOL}: ${victims.length} flow entries have been deleted.\n`;
    }
    case 'conntrack-count':
      return `${ctx.ct.size}\n`;
    case 'conntrack-stats':
      return formatConntrackStats(ctx.ct.counters);
    case 'conntrack-events':
      ctx.events.add(sock, a);
      return;
    case 'stats':
      return JSON.stringify(ctx.stats(), null, 2) + '\n';
    case 'rules':
      return ctx.reloader.loaded.renderLive();
    case 'reload':
      if (!ctx.reloader.requestReload('control socket')) throw new Error('reload failed; the previous rules stay (see the daemon log)');
      return `reloaded: ${ctx.reloader.loaded.serviceCount} service ports\n`;
    case 'pcap': {
      const out = pcapControl(ctx.tap, a);
      ctx.log.info({ ...ctx.tap.status(), action: a.action ?? 'status' }, 'pcap control');
      return out;
    }
    default:
      throw new Error(`unknown command "${req.cmd}"`);
  }
}

/**
 * `conntrack -S` as conntrack-tools prints the kernel's per-CPU statistics, for the one table
 * kube-tun has (cpu=0). error, clash_resolve and chaintoolong have no counterpart here: always 0.
 */
export function formatConntrackStats(c: ConntrackCounters): string {
  return `cpu=0   \tfound=${c.found} invalid=${c.invalid} insert=${c.inserts} insert_failed=${c.insertFailed} drop=${c.drop} ` +
    `early_drop=${c.earlyDrops} error=0 search_restart=${c.searchRestarts} clash_resolve=0 chaintoolong=0 \n`;
}
