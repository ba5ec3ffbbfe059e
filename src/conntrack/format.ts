// Text forms of an entry, byte-compatible with the tools people already read:
//
// - `conntrack -L` (libnetfilter_conntrack __snprintf_conntrack_default):
//     tcp      6 117 TIME_WAIT src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] mark=0 use=1
//   "%-8s %u " protocol name and number, "%u " seconds left, "%s " TCP state, the original tuple,
//   [packets= bytes=], [UNREPLIED], the reply tuple, [packets= bytes=], [ASSURED], "mark=%u ",
//   "use=%u ", [id=%u], then the last blank is removed.
// - `conntrack -E` events: the same prefixed with "%9s " of [NEW] / [UPDATE] / [DESTROY]; no
//   use=; mark= only when non-zero; DESTROY carries no timeout (the kernel sends none).
// - /proc/net/nf_conntrack (ct_seq_show): "%-8s %u %-8s %u " with the l3 name and number first
//   ("ipv4     2 tcp      6 …"), otherwise the same fields, ending "use=%u".
//
// Listing helpers, not hot path: they build strings.
import {
  IPPROTO_DCCP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, PROTO_NAME,
} from '../netstack/proto';
import type { ConntrackTable } from './table';
import { ConntrackEventType, DIR_ORIGINAL, DIR_REPLY, IPS_ASSURED, IPS_SEEN_REPLY, IPS_OFFLOAD, IPS_HW_OFFLOAD } from './types';
import { TCP_STATE_NAMES } from './tcp-state';

export interface FormatOptions {
  /** Show packets=/bytes= per direction (nf_conntrack_acct=1, `conntrack -L -o extended` shows them too). */
  counters?: boolean;
  /** Append id=N (`conntrack -o id`). */
  id?: boolean;
  /** /proc/net/nf_conntrack layout ("ipv4     2 " prefix, kernel protocol names). */
  proc?: boolean;
}

/** The protocols nf_conntrack has a tracker for: the kernel names these and prints "unknown" for the rest (IPIP included). */
const TRACKED: ReadonlySet<number> = new Set([
  IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_GRE, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_UDPLITE,
]);

/** Protocol name as conntrack-tools and the kernel print it ("unknown" for the rest). */
export function protoName(proto: number): string {
  return TRACKED.has(proto) ? PROTO_NAME[proto] : 'unknown';
}

/** Dotted quad of an unsigned 32-bit host-order address. */
export function formatIp(addr: number): string {
  return `${(addr >>> 24) & 255}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`;
}

function pad8(s: string): string {
  return s.length >= 8 ? s : s + ' '.repeat(8 - s.length);
}

function tuple(table: ConntrackTable, slot: number, dir: number): string {
  const key = (slot << 1) | dir;
  const proto = table.proto(slot);
  let s = `src=${formatIp(table.keySrc(key))} dst=${formatIp(table.keyDst(key))} `;
  switch (proto) {
    case IPPROTO_TCP: case IPPROTO_UDP: case IPPROTO_DCCP: case IPPROTO_SCTP: case IPPROTO_UDPLITE:
      s += `sport=${table.keySport(key)} dport=${table.keyDport(key)} `;
      break;
    case IPPROTO_ICMP: {
      const type = dir === DIR_ORIGINAL ? table.icmpType(slot) : table.replyIcmpType(slot);
      s += `type=${type} code=${table.icmpCode(slot)} id=${table.keySport(key)} `;
      break;
    }
    case IPPROTO_GRE:
      s += `srckey=0x${table.keySport(key).toString(16)} dstkey=0x${table.keyDport(key).toString(16)} `;
      break;
    default:
      break;
  }
  return s;
}

function counters(table: ConntrackTable, slot: number, dir: number): string {
  return `packets=${table.packets(slot, dir)} bytes=${table.bytes(slot, dir)} `;
}

/** The body shared by all forms, from the protocol name to the status flag after the reply tuple. */
function body(table: ConntrackTable, slot: number, timeout: number, withCounters: boolean): string {
  const proto = table.proto(slot);
  const st = table.status(slot);
  let s = `${pad8(protoName(proto))} ${proto} `;
  if (timeout >= 0) s += `${timeout} `;
  if (proto === IPPROTO_TCP) s += `${TCP_STATE_NAMES[table.tcpState(slot)] ?? 'NONE'} `;
  s += tuple(table, slot, DIR_ORIGINAL);
  if (withCounters) s += counters(table, slot, DIR_ORIGINAL);
  if ((st & IPS_SEEN_REPLY) === 0) s += '[UNREPLIED] ';
  s += tuple(table, slot, DIR_REPLY);
  if (withCounters) s += counters(table, slot, DIR_REPLY);
  if (st & IPS_HW_OFFLOAD) s += '[HW_OFFLOAD] ';
  else if (st & IPS_OFFLOAD) s += '[OFFLOAD] ';
  else if (st & IPS_ASSURED) s += '[ASSURED] ';
  return s;
}

/**
 * One `conntrack -L` line (or, with opts.proc, one /proc/net/nf_conntrack line) for the entry in
 * `slot` at time `nowMs`. Seconds left are truncated; an expired entry shows 0.
 */
export function formatEntry(table: ConntrackTable, slot: number, nowMs: number, opts?: FormatOptions): string {
  const left = Math.max(0, table.timeoutLeftSec(slot, nowMs));
  let s = opts?.proc ? 'ipv4     2 ' : '';
  s += body(table, slot, left, opts?.counters === true);
  s += `mark=${table.mark(slot)} use=1`;
  if (opts?.id && !opts.proc) s += ` id=${table.id(slot)}`;
  return s;
}

/** One /proc/net/nf_conntrack line. */
export function formatProcEntry(table: ConntrackTable, slot: number, nowMs: number, opts?: Omit<FormatOptions, 'proc'>): string {
  return formatEntry(table, slot, nowMs, { ...opts, proc: true });
}

/**
 * One `conntrack -E` line. `nowMs` is the time of the event (default: the entry's last-seen time,
 * i.e. the packet that caused it). opts.counters shows packets=/bytes= (the kernel sends them
 * with DESTROY events when accounting is on).
 */
export function formatEvent(type: ConntrackEventType, table: ConntrackTable, slot: number, nowMs?: number,
  opts?: Omit<FormatOptions, 'proc'>): string {
  const prefix = `[${type}]`.padStart(9) + ' ';
  const destroy = type === 'DESTROY';
  const at = nowMs ?? table.lastSeen(slot);
  const timeout = destroy ? -1 : Math.max(0, table.timeoutLeftSec(slot, at));
  let s = prefix + body(table, slot, timeout, opts?.counters === true);
  const mark = table.mark(slot);
  if (mark !== 0) s += `mark=${mark} `;
  if (opts?.id) s += `id=${table.id(slot)} `;
  return s.slice(0, -1);
}
