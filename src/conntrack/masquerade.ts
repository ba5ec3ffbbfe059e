// MASQUERADE / SNAT source-port choice, modelled on nf_nat_core.c (get_unique_tuple and
// nf_nat_l4proto_unique_tuple). conntrack stores NAT bindings; this is the one place here that
// helps choose one, because "is this port free" is a question about the table.
//
// The translated connection will have the reply tuple (proto, peerAddr, natAddr, peerPort, port):
// a port is usable iff no live entry holds that tuple in either direction (the kernel's
// nf_nat_used_tuple). Optionally it must also not have been released by an SNAT'd connection less
// than `avoidReuseMs` ago (see released.ts: the backend may still hold it in TIME_WAIT).
import { IPPROTO_DCCP, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE } from '../netstack/proto';
import type { U32Source } from '../lib/random';
import type { ConntrackTable } from './table';
import { DIR_REPLY, IPS_SRC_NAT } from './types';
import { TCP_TIME_WAIT, TCP_CLOSE } from './tcp-state';
import { Tuple } from './tuple';

/** Ports tried in the first round (NF_NAT_MAX_ATTEMPTS). */
export const NF_NAT_MAX_ATTEMPTS = 128;
/** In the last this-many attempts of a round, evictClosing may evict a closed TCP entry (NF_NAT_HARDER_THRESH). */
export const NF_NAT_HARDER_THRESH = NF_NAT_MAX_ATTEMPTS / 4;

/** How chooseMasqPort searches; the caller may keep one object and change fields between calls. */
export interface MasqPortOptions {
  /** Supplies the search offsets (a RandomPool in production). */
  rng: U32Source;
  /** --random / --random-fully: do not try to keep the original port first. */
  fullyRandom?: boolean;
  /** Skip ports whose reply tuple an SNAT'd connection released less than this long ago (ms). */
  avoidReuseMs?: number;
  /** --to-ports range; both 0 (default): the range follows the original port. */
  rangeMin?: number;
  rangeMax?: number;
  /** A TCP SYN may reclaim the port of a closed, idle SNAT'd connection (nf_nat_used_tuple_harder). */
  evictClosing?: boolean;
}

function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP || proto === IPPROTO_DCCP ||
    proto === IPPROTO_UDPLITE;
}

/** Lowest port of the default range for a source port: 1 (< 512), 600 (< 1024), else 1024. ICMP ids: 0. */
export function masqPortRangeMin(proto: number, origPort: number): number {
  if (proto === IPPROTO_ICMP) return 0;
  return origPort < 512 ? 1 : origPort < 1024 ? 600 : 1024;
}

/** Highest port of the default range: 511, 1023 or 65535 (ICMP ids: 65535). */
export function masqPortRangeMax(proto: number, origPort: number): number {
  if (proto === IPPROTO_ICMP) return 65535;
  return origPort < 512 ? 511 : origPort < 1024 ? 1023 : 65535;
}

/** The candidate reply tuple being tested (module scratch: the search allocates nothing). */
const cand = new Tuple();

/** Is `port` free for the reply tuple `reply` (its NAT port field replaced by `port`)? */
function portFree(table: ConntrackTable, reply: Tuple, port: number, nowMs: number, avoidReuseMs: number,
  harder: boolean): boolean {
  // ICMP queries: the tuple is (1, src, dst, id, 0); the id plays the port.
  const proto = reply.proto;
  if (proto === IPPROTO_ICMP) cand.set(proto, reply.src, reply.dst, port, 0);
  else cand.set(proto, reply.src, reply.dst, reply.sport, port);
  if (table.tupleInUse(cand, nowMs)) {
    if (!harder) return false;
    // nf_nat_used_tuple_harder: a TCP connection we SNAT'ed that is over (TIME_WAIT or CLOSE)
    // may give its port to a new SYN. We also require it to have been idle for avoidReuseMs, so
    // the backend's own TIME_WAIT for it is over too.
    const key = table.peek(cand);
    if (key < 0 || (key & 1) !== DIR_REPLY) return false;
    const slot = key >> 1;
    const st = table.tcpState(slot);
    if (table.proto(slot) !== IPPROTO_TCP || (st !== TCP_TIME_WAIT && st !== TCP_CLOSE)) return false;
    if ((table.status(slot) & IPS_SRC_NAT) === 0) return false;
    if (nowMs - table.lastSeen(slot) < avoidReuseMs) return false;
    table.evict(slot);
    return true;
  }
  if (avoidReuseMs > 0 && table.recentlyReleased(cand, nowMs, avoidReuseMs)) return false;
  return true;
}

/**
 * Choose the source port (ICMP: query id) for a masqueraded connection whose reply tuple will be
 * `reply` = (proto, peerAddr, natAddr, peerPort, port) — for ICMP (1, peerAddr, natAddr, id, 0) —
 * where peerAddr:peerPort is the translated destination and natAddr the masquerade address. The
 * port field itself (reply.dport, ICMP reply.sport) is not read; `reply` is not changed. Returns
 * the port, or -1 when no free port was found (the kernel would then keep the clashing tuple and
 * fail at confirm: drop and count). `origPort` is the connection's original source port (ICMP id).
 *
 * - Range: [rangeMin, rangeMax] if either is non-zero (--to-ports), else by the original port:
 *   1-511 if < 512, 600-1023 if < 1024, else 1024-65535; ICMP ids 0-65535. Other protocols have
 *   no ports: the original (0) is returned if its tuple is free, else -1.
 * - Unless `fullyRandom` (--random / --random-fully), the original port is kept when it is in
 *   range and free.
 * - Search: a random 16-bit offset, then `min(range, 128)` consecutive ports (min + off % range);
 *   if all are taken and the range was not covered, halve the attempts, draw a new offset and try
 *   again, until the attempts drop below 16 (128+64+32+16+8 = 248 probes at most).
 * - avoidReuseMs > 0: also skip ports whose reply tuple an SNAT'd connection released less than
 *   that long ago (needs ConntrackOptions.releaseHoldMs >= avoidReuseMs; default 60 s).
 * - evictClosing (pass it for a TCP SYN only, like the kernel's nf_nat_used_tuple_harder): in the
 *   last 32 attempts of a round, a port held by an SNAT'd TCP entry in TIME_WAIT or CLOSE that has
 *   been idle for at least avoidReuseMs is reclaimed (the entry is evicted, counters.natEvictions).
 *
 * Not modelled: find_appropriate_src (reusing the mapping of another connection from the same
 * source address and port) and the address choice (the caller passes natAddr). Allocation-free.
 */
export function chooseMasqPort(table: ConntrackTable, reply: Tuple, origPort: number, nowMs: number,
  opts: MasqPortOptions): number {
  const proto = reply.proto & 0xff;
  const avoidReuseMs = opts.avoidReuseMs ?? 0;
  const rangeMin = opts.rangeMin ?? 0, rangeMax = opts.rangeMax ?? 0;
  origPort &= 0xffff;
  let min: number, size: number;
  if (rangeMin !== 0 || rangeMax !== 0) {
    let lo = rangeMin & 0xffff, hi = rangeMax & 0xffff;
    if (hi < lo) { const t = lo; lo = hi; hi = t; }
    min = lo;
    size = hi - lo + 1;
  } else if (proto === IPPROTO_ICMP || hasPorts(proto)) {
    min = masqPortRangeMin(proto, origPort);
    size = masqPortRangeMax(proto, origPort) - min + 1;
  } else {
    return portFree(table, reply, 0, nowMs, avoidReuseMs, false) ? 0 : -1;
  }

  // 1) + 3): keep the original port if it is in range and free.
  if (opts.fullyRandom !== true && origPort >= min && origPort < min + size &&
      portFree(table, reply, origPort, nowMs, avoidReuseMs, false)) {
    return origPort;
  }

  // nf_nat_l4proto_unique_tuple.
  const harderOk = opts.evictClosing === true && proto === IPPROTO_TCP;
  const rng = opts.rng;
  let off = rng.nextU32() & 0xffff;
  let attempts = size < NF_NAT_MAX_ATTEMPTS ? size : NF_NAT_MAX_ATTEMPTS;
  for (;;) {
    for (let i = 0; i < attempts; i++) {
      const port = min + (off % size);
      off = (off + 1) & 0xffff;
      const harder = harderOk && attempts - i <= NF_NAT_HARDER_THRESH;
      if (portFree(table, reply, port, nowMs, avoidReuseMs, harder)) return port;
    }
    if (attempts >= size || attempts < 16) return -1;
    attempts >>>= 1;
    off = rng.nextU32() & 0xffff;
  }
}
