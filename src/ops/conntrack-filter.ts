// conntrack-tools' selection options (-p, -s, -d, --sport, --dport, -r/--reply-src, -q/--reply-dst,
// --state, --status) applied to the live table for -L and -D.
import type { ConntrackTable } from '../conntrack';
import { parseIp } from '../netstack/addr';
import { PROTO_NUM } from '../netstack/proto';

/**
 * Who prints the `conntrack` answers. They keep conntrack-tools' summary format ("…: 3 flow
 * entries have been shown.") so scripts that parse it work, but name kube-tun, not conntrack-tools.
 */
export const CONNTRACK_TOOL = 'kube-tun conntrack';

export interface ListFilter {
  proto?: string; src?: string; dst?: string; sport?: number; dport?: number;
  replySrc?: string; replyDst?: string; state?: string; status?: string;
}

export function protoNumber(name: string): number {
  const n = PROTO_NUM[name.toLowerCase()] ?? Number(name);
  if (!Number.isInteger(n) || n < 0 || n > 255) throw new Error(`unknown protocol "${name}"`);
  return n;
}

/** The filter as a predicate on one live entry (also used for `conntrack -E` events). Throws on bad addresses/protocols. */
export function compileFilter(ct: ConntrackTable, f: ListFilter): (slot: number) => boolean {
  const proto = f.proto ? protoNumber(f.proto) : -1;
  const src = f.src ? parseIp(f.src) : -1, dst = f.dst ? parseIp(f.dst) : -1;
  const rsrc = f.replySrc ? parseIp(f.replySrc) : -1, rdst = f.replyDst ? parseIp(f.replyDst) : -1;
  const state = f.state?.toUpperCase();
  const status = f.status?.toUpperCase();
  return (slot) => {
    if (proto >= 0 && ct.proto(slot) !== proto) return false;
    if (src >= 0 && ct.origSrc(slot) !== src) return false;
    if (dst >= 0 && ct.origDst(slot) !== dst) return false;
    if (f.sport !== undefined && ct.origSport(slot) !== f.sport) return false;
    if (f.dport !== undefined && ct.origDport(slot) !== f.dport) return false;
    if (rsrc >= 0 && ct.replySrc(slot) !== rsrc) return false;
    if (rdst >= 0 && ct.replyDst(slot) !== rdst) return false;
    if (state && ct.tcpStateName(slot) !== state) return false;
    if (status === 'ASSURED' && !ct.isAssured(slot)) return false;
    if (status === 'UNREPLIED' && ct.seenReply(slot)) return false;
    return true;
  };
}

export function filterEntries(ct: ConntrackTable, f: ListFilter, nowMs: number, visit: (slot: number) => void): void {
  const match = compileFilter(ct, f);
  ct.forEach((slot) => {
    if (ct.timeoutLeftSec(slot, nowMs) < 0) return;
    if (match(slot)) visit(slot);
  });
}
