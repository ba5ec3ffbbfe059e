// The conntrack vocabulary shared by the table and its callers: directions, the kernel's
// IPS_* status bits, what update() and create() answer, the table's options and counters, and
// which ICMP types are queries. Plain values: nothing here touches an entry.
import type { Timeouts } from './timeouts';

export const DIR_ORIGINAL = 0;
export const DIR_REPLY = 1;

// enum ip_conntrack_status (include/uapi/linux/netfilter/nf_conntrack_common.h), same bit values.
export const IPS_EXPECTED = 1 << 0;
export const IPS_SEEN_REPLY = 1 << 1;
export const IPS_ASSURED = 1 << 2;
export const IPS_CONFIRMED = 1 << 3;
export const IPS_SRC_NAT = 1 << 4;
export const IPS_DST_NAT = 1 << 5;
export const IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT;
export const IPS_SEQ_ADJUST = 1 << 6;
export const IPS_SRC_NAT_DONE = 1 << 7;
export const IPS_DST_NAT_DONE = 1 << 8;
export const IPS_DYING = 1 << 9;
export const IPS_FIXED_TIMEOUT = 1 << 10;
export const IPS_TEMPLATE = 1 << 11;
export const IPS_UNTRACKED = 1 << 12;
/** The kernel reuses the UNTRACKED bit for NAT_CLASH (a UDP clash loser: never ASSURED). */
export const IPS_NAT_CLASH = IPS_UNTRACKED;
export const IPS_HELPER = 1 << 13;
export const IPS_OFFLOAD = 1 << 14;
export const IPS_HW_OFFLOAD = 1 << 15;

// What update() decided about the last packet (table.lastVerdict).
/** The packet is INVALID (bad TCP flags, impossible transition, ICMP type that cannot start a flow). */
export const CT_INVALID = 0;
/** Tracked: state, timeout and counters updated. */
export const CT_ACCEPT = 1;
/**
 * The entry was destroyed because this SYN reopens a closed TCP connection (nf_conntrack's
 * NF_REPEAT): treat the packet as a conntrack miss (rules, create) and update it again.
 */
export const CT_REPEAT = 2;
/** Accepted without touching state, timeout or counters (a TCP "ignore" transition, or a SYN retransmit before any reply). */
export const CT_IGNORED = 3;

// create() failures (all negative).
/** No free slot and nothing could be early-dropped (kernel: "table full, dropping packet", stat `drop`). */
export const CT_CREATE_FULL = -1;
/** The original or the reply tuple is already in use by a live entry (stat `insert_failed`). */
export const CT_CREATE_CLASH = -2;
/** The packet cannot start a connection (an ICMP type that is not a query). */
export const CT_CREATE_INVALID = -3;

/** Largest --ct-max accepted (the index then holds 2^26 keys: 256 MiB). */
export const MAX_ENTRIES = 1 << 24;

export type ConntrackEventType = 'NEW' | 'UPDATE' | 'DESTROY';

export interface ConntrackOptions {
  /** Capacity (--ct-max, nf_conntrack_max). */
  max: number;
  /** Timeouts in seconds; missing fields take the kernel defaults. */
  timeouts?: Partial<Timeouts>;
  /** Hash key seed (tests); default: random from the OS CSPRNG. */
  seed?: number;
  /**
   * Tuple hash: 'siphash' (default; HalfSipHash-1-3, a keyed PRF like the kernel's, ~30 ns) or
   * 'murmur' (a seeded MurmurHash3-style mix, ~5 ns, weaker against adaptive collision attacks).
   */
  hash?: 'siphash' | 'murmur';
  /**
   * How long (ms) released SNAT reply tuples are remembered for chooseMasqPort()'s avoidReuseMs
   * check; 0 disables the memory. Default 60000 (the backend's TIME_WAIT).
   */
  releaseHoldMs?: number;
  /** Records kept for the above (bounded ring). Default min(max, 65536). */
  releaseCapacity?: number;
}

/** Statistics, in the spirit of `conntrack -S`. Plain numeric fields (spread-friendly). */
export class ConntrackCounters {
  /** lookup() hits. */
  found = 0;
  /** lookup() misses. */
  notFound = 0;
  /** Extra index probes beyond the first (kernel: `searched`). */
  searched = 0;
  /** Entries created (kernel: `insert`). */
  inserts = 0;
  /** Entries removed for any reason. */
  deletes = 0;
  /** Removed because their timeout passed (lazy or sweep). */
  expirations = 0;
  /** Removed to make room for a new entry (kernel: `early_drop`). */
  earlyDrops = 0;
  /** create() refused because a tuple was taken (kernel: `insert_failed`). */
  insertFailed = 0;
  /** create() refused: table full and nothing droppable (kernel: `drop`). */
  drop = 0;
  /** Packets found INVALID by update()/create() (kernel: `invalid`). */
  invalid = 0;
  /** Packets accepted without state change (TCP ignore transitions). */
  ignored = 0;
  /** Closed TCP connections reopened by a new SYN (entry destroyed, packet treated as new). */
  reopens = 0;
  /** Entries evicted by chooseMasqPort(..., evictClosing) to free a port. */
  natEvictions = 0;
  /** Always 0: there is no concurrent resize here; kept for parity with `conntrack -S`. */
  searchRestarts = 0;
}

/** May an ICMP message of this type start a connection? Queries only (echo, timestamp, info, address mask). */
export function icmpCanCreate(type: number): boolean {
  return type === 8 || type === 13 || type === 15 || type === 17;
}

/** The reply type of an ICMP query type (nf_conntrack_proto_icmp.c's invmap); other types map to themselves. */
export function icmpReplyType(type: number): number {
  switch (type) {
    case 8: return 0;
    case 13: return 14;
    case 15: return 16;
    case 17: return 18;
    case 0: return 8;
    case 14: return 13;
    case 16: return 15;
    case 18: return 17;
    default: return type;
  }
}
