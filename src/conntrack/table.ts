// The connection tracking table, netfilter style, over typed arrays.
//
// An entry ("slot") holds an ORIGINAL tuple (as the first packet was seen) and a REPLY tuple (what
// the answer will look like: NAT bindings live here). Both tuples are keys of ONE open-addressing
// hash index, so a reply packet is found by an ordinary lookup:
//
//   key = slot << 1 | dir        (dir 0 = DIR_ORIGINAL, 1 = DIR_REPLY)
//
// lookup() returns such a key; `key >> 1` is the slot, `key & 1` the direction, and `key ^ 1` the
// key of the opposite tuple (keySrc(key ^ 1) ... is what a packet is rewritten from). A packet in
// ORIGINAL direction is rewritten to src=reply.dst dst=reply.src sport=reply.dport dport=reply.sport;
// a REPLY packet to src=orig.dst dst=orig.src sport=orig.dport dport=orig.sport.
//
// Tuples: (proto, src, dst, sport, dport), addresses unsigned 32-bit host order, ports 0..65535.
// ICMP echo-like queries use (1, src, dst, id, 0) in both directions; the ICMP type/code are kept
// per entry for printing only.
//
// Layout. Per tuple (index = key): src, dst, ports (sport<<16|dport) and the tuple's hash, in
// Uint32Array/Int32Array. Per slot: proto, status bits, TCP state and tracking flags, expiry and
// last-seen time (ms, Float64Array), UDP stream_ts, packets/bytes per direction, mark, ICMP type and
// code and an id. Free slots form a stack. The index (lib/hash-index) holds keys in a power of two
// >= 4*max positions (load factor <= 0.5 when full), linear probing, backward-shift deletion (no
// tombstones), keyed by HalfSipHash-1-3 with a random key.
//
// Time: every method takes the caller's monotonic `nowMs`; nothing reads a clock. Entries expire
// when `expiresAt <= nowMs` (nf_ct_is_expired); they are reaped lazily by lookup()/tupleInUse()/
// create() and by sweep() (bounded, incremental).
//
// Hot path (lookup, update, create, the accessors): no allocation, no closures, no try/catch.
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_RST } from '../netstack/proto';
import { HashIndex } from '../lib/hash-index';
import { Timeouts, resolveTimeouts, UDP_STREAM_DELAY_MS } from './timeouts';
import { tupleHash, tupleHashFast, hashKey } from './hash';
import { ReleasedTuples } from './released';
import type { Tuple } from './tuple';
import {
  DIR_ORIGINAL, DIR_REPLY, IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED, IPS_SRC_NAT, IPS_DST_NAT, IPS_DYING,
  IPS_FIXED_TIMEOUT, IPS_NAT_CLASH, CT_INVALID, CT_ACCEPT, CT_REPEAT, CT_IGNORED, CT_CREATE_FULL, CT_CREATE_CLASH,
  CT_CREATE_INVALID, MAX_ENTRIES, ConntrackCounters, icmpCanCreate, icmpReplyType,
} from './types';
import type { ConntrackEventType, ConntrackOptions } from './types';
import {
  TCP_NONE, TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_LAST_ACK, TCP_TIME_WAIT, TCP_CLOSE,
  TCP_SYN_SENT2, TCP_STATE_COUNT, TCP_INVALID, TCP_IGNORE, TCP_STATE_NAMES,
  TCP_SYN_SET, TCP_SYNACK_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET,
  tcpFlagIndex, tcpFlagsValid, tcpNextState, tcpCanEarlyDrop,
} from './tcp-state';

const IPS_PUBLIC_MASK = 0xffff;
/** Internal: the NEW event has not been delivered yet (it is sent after the first update()). */
const PRIV_NEW_PENDING = 1 << 30;

// tcpAux bits: the little TCP history the state machine needs (ip_ct_tcp's last_index, last_dir, flags).
const AUX_LAST_INDEX = 0x07;   // enum tcp_bit_set of the last in-window (or ignored) segment
const AUX_LAST_DIR = 0x08;
const AUX_CLOSE_INIT_ORIG = 0x10; // IP_CT_TCP_FLAG_CLOSE_INIT seen[ORIGINAL]
const AUX_CLOSE_INIT_REPLY = 0x20;
const AUX_SIMULTANEOUS_OPEN = 0x40;
const AUX_CHALLENGE_ACK = 0x80;  // IP_CT_EXP_CHALLENGE_ACK

/** Index positions examined for an early-drop victim (the kernel looks at 8 buckets). */
const EARLY_DROP_SCAN = 64;

export class ConntrackTable {
  /** Capacity (--ct-max). */
  readonly max: number;
  readonly timeouts: Readonly<Timeouts>;
  readonly counters = new ConntrackCounters();
  /** Verdict of the last update() (CT_ACCEPT, CT_IGNORED, CT_INVALID or CT_REPEAT). */
  lastVerdict = CT_ACCEPT;
  /**
   * Optional hook for `conntrack -E`. Called synchronously: NEW after the first update() of an
   * entry (so the line shows the state after the first packet, like the kernel's event at
   * confirm), UPDATE when status (SEEN_REPLY, ASSURED) or the TCP state changes, DESTROY just
   * before an entry is unlinked (its fields are still readable). The handler must not create or
   * remove entries.
   */
  onEvent?: (type: ConntrackEventType, slot: number) => void;

  private readonly k0: number;
  private readonly k1: number;
  private readonly fastHash: boolean;
  // Index (idx.slots and idx.mask, cached for the probe loops).
  private readonly idx: HashIndex;
  private readonly index: Int32Array;
  private readonly mask: number;
  // Fields read together are interleaved so that a packet touches few cache lines.
  /** Per tuple, 4 words at key << 2: hash, src, dst, ports (sport<<16|dport), all as int32. Both tuples of a slot share 32 bytes. */
  private readonly tup: Int32Array;
  /** Per slot, 8 bytes at slot << 3: u32 status (meta[slot << 1]), then proto, TCP state, TCP aux flags, ICMP type (metaB). */
  private readonly meta: Uint32Array;
  private readonly metaB: Uint8Array;
  /** Per slot: expiresAt, lastSeen (ms). */
  private readonly times: Float64Array;
  /** Per slot, 4 doubles at slot << 2: packets[orig], packets[reply], bytes[orig], bytes[reply]. */
  private readonly acct: Float64Array;
  private readonly sStreamTs: Float64Array;
  private readonly sMark: Uint32Array;
  private readonly sId: Uint32Array;
  private readonly sIcmpCode: Uint8Array;
  // Free slots.
  private readonly freeStack: Int32Array;
  private freeTop: number;
  private highWater = 0;
  private live = 0;
  private nextId = 1;
  private cursor = 0;
  /** Latest nowMs seen by any method (used where an API takes no time, e.g. remove()). */
  private clock = 0;
  // Timeouts in ms.
  private readonly tcpTimeoutMs: Float64Array;
  private readonly tcpCloseMs: number;
  private readonly tcpUnackMs: number;
  private readonly udpUnrepliedMs: number;
  private readonly udpRepliedMs: number;
  private readonly icmpMs: number;
  private readonly genericMs: number;
  // Event bookkeeping for the packet being updated.
  private evChanged = false;
  // Recently released SNAT reply tuples.
  private readonly released: ReleasedTuples | null;
  readonly releaseHoldMs: number;

  constructor(opts: ConntrackOptions) {
    const max = opts.max;
    if (!Number.isInteger(max) || max < 1 || max > MAX_ENTRIES) throw new Error(`conntrack max must be an integer in 1..${MAX_ENTRIES}`);
    this.max = max;
    const t = resolveTimeouts(opts.timeouts);
    this.timeouts = Object.freeze(t);
    [this.k0, this.k1] = hashKey(opts.seed);
    if (opts.hash !== undefined && opts.hash !== 'siphash' && opts.hash !== 'murmur') throw new Error(`unknown conntrack hash "${opts.hash}"`);
    this.fastHash = opts.hash === 'murmur';

    this.tup = new Int32Array(max * 8);
    this.idx = new HashIndex(max * 4, this.tup, 2); // a key's hash is the first word of its tuple
    this.index = this.idx.slots;
    this.mask = this.idx.mask;
    this.meta = new Uint32Array(max * 2);
    this.metaB = new Uint8Array(this.meta.buffer);
    this.times = new Float64Array(max * 2);
    this.acct = new Float64Array(max * 4);
    this.sStreamTs = new Float64Array(max);
    this.sMark = new Uint32Array(max);
    this.sId = new Uint32Array(max);
    this.sIcmpCode = new Uint8Array(max);
    this.freeStack = new Int32Array(max);
    // Lowest slots on top: the used part of the slab stays compact (sweep scans up to highWater).
    for (let i = 0; i < max; i++) this.freeStack[i] = max - 1 - i;
    this.freeTop = max;

    this.tcpTimeoutMs = new Float64Array(TCP_STATE_COUNT);
    const byState = [t.tcpSynSent, t.tcpSynSent, t.tcpSynRecv, t.tcpEstablished, t.tcpFinWait, t.tcpCloseWait,
      t.tcpLastAck, t.tcpTimeWait, t.tcpClose, t.tcpSynSent2];
    for (let s = 0; s < TCP_STATE_COUNT; s++) this.tcpTimeoutMs[s] = byState[s] * 1000;
    this.tcpCloseMs = t.tcpClose * 1000;
    this.tcpUnackMs = t.tcpUnack * 1000;
    this.udpUnrepliedMs = t.udpUnreplied * 1000;
    this.udpRepliedMs = t.udpReplied * 1000;
    this.icmpMs = t.icmp * 1000;
    this.genericMs = t.generic * 1000;

    this.releaseHoldMs = opts.releaseHoldMs ?? 60_000;
    if (!(this.releaseHoldMs >= 0)) throw new Error('releaseHoldMs must be >= 0');
    this.released = this.releaseHoldMs > 0
      ? new ReleasedTuples(opts.releaseCapacity ?? Math.min(max, 65536), this.k0, this.k1)
      : null;
  }

  /** Live entries. */
  get size(): number {
    return this.live;
  }

  /** Bytes held in typed arrays (index + per-tuple + per-slot + free stack + released memory). */
  get byteLength(): number {
    let n = this.idx.byteLength + this.tup.byteLength + this.meta.byteLength + this.times.byteLength +
      this.acct.byteLength + this.sStreamTs.byteLength + this.sMark.byteLength +
      this.sId.byteLength + this.sIcmpCode.byteLength + this.freeStack.byteLength;
    if (this.released) n += this.released.byteLength;
    return n;
  }

  // ---------------------------------------------------------------- lookups

  /**
   * Find the entry a packet belongs to. Returns -1 or `slot << 1 | dir`. An expired entry found
   * here is removed (lazy expiry) and -1 returned.
   *
   * Optional `tcpFlags` (the TCP header flag byte; omit or -1 otherwise): a SYN that would reopen
   * a closed connection (TIME_WAIT/CLOSE after a FIN or RST, RFC 1122) destroys the old entry here
   * and returns -1, so the caller runs its miss path (rules, NAT, create) for it. Without it,
   * update() does the same and reports CT_REPEAT.
   */
  lookup(t: Tuple, nowMs: number, tcpFlags = -1): number {
    if (nowMs > this.clock) this.clock = nowMs;
    const key = this.findTuple(t);
    if (key < 0) {
      this.counters.notFound++;
      return -1;
    }
    const slot = key >> 1;
    if (this.times[slot << 1] <= nowMs) {
      this.expire(slot);
      this.counters.notFound++;
      return -1;
    }
    if (tcpFlags >= 0 && this.metaB[(slot << 3) + 4] === IPPROTO_TCP && this.wouldReopen(slot, key & 1, tcpFlags)) {
      this.counters.reopens++;
      this.removeSlot(slot, true);
      this.counters.notFound++;
      return -1;
    }
    this.counters.found++;
    return key;
  }

  /** Whether any live entry has this tuple in either direction (expired entries met here are reaped). */
  tupleInUse(t: Tuple, nowMs: number): boolean {
    if (nowMs > this.clock) this.clock = nowMs;
    const key = this.findTuple(t);
    if (key < 0) return false;
    const slot = key >> 1;
    if (this.times[slot << 1] <= nowMs) {
      this.expire(slot);
      return false;
    }
    return true;
  }

  /**
   * Like lookup() without lazy expiry, statistics or reopen handling: the key of the entry holding
   * this tuple, live or expired-but-not-reaped, or -1.
   */
  peek(t: Tuple): number {
    return this.findTuple(t);
  }

  /**
   * Time (ms) a released SNAT connection last used this reply tuple, or -1 if none is remembered
   * (see ConntrackOptions.releaseHoldMs).
   */
  releasedAt(t: Tuple): number {
    if (this.released === null) return -1;
    const w = t.w;
    return this.released.lastUse(w[0], w[1] >>> 0, w[2] >>> 0, w[3] >>> 0);
  }

  /** Whether a released SNAT connection used this reply tuple less than `holdMs` before `nowMs`. */
  recentlyReleased(t: Tuple, nowMs: number, holdMs: number): boolean {
    if (holdMs <= 0) return false;
    const used = this.releasedAt(t);
    return used >= 0 && nowMs - used < holdMs;
  }

  private hashOf(proto: number, src: number, dst: number, ports: number): number {
    return this.fastHash ? tupleHashFast(this.k0, this.k1, proto, src, dst, ports) : tupleHash(this.k0, this.k1, proto, src, dst, ports);
  }

  private findTuple(t: Tuple): number {
    const w = t.w;
    return this.find(w[0], w[1], w[2], w[3]);
  }

  /** Probe for a tuple; src, dst and ports (sport<<16|dport) as int32. Returns its key or -1. */
  private find(proto: number, src: number, dst: number, ports: number): number {
    const h = this.hashOf(proto, src, dst, ports);
    const index = this.index, mask = this.mask;
    const tup = this.tup, metaB = this.metaB;
    let i = h & mask;
    for (;;) {
      const key = index[i];
      if (key < 0) return -1;
      const b = key << 2;
      if (tup[b] === h && tup[b + 1] === src && tup[b + 2] === dst && tup[b + 3] === ports && metaB[((key >> 1) << 3) + 4] === proto) {
        return key;
      }
      this.counters.searched++;
      i = (i + 1) & mask;
    }
  }

  // ---------------------------------------------------------------- create / remove

  /**
   * Create (and confirm) an entry. Returns the slot (>= 0) or CT_CREATE_FULL (-1: no room even
   * after trying to early-drop one entry), CT_CREATE_CLASH (-2: a tuple is taken by a live entry)
   * or CT_CREATE_INVALID (-3: ICMP type that cannot start a flow).
   *
   * IPS_SRC_NAT is set when the reply's destination differs from the original source (address or
   * port), IPS_DST_NAT when the reply's source differs from the original destination. Call
   * update(slot, DIR_ORIGINAL, ...) with the first packet next: it sets the protocol state and
   * timeout (and delivers the NEW event). For ICMP pass the query's type and code (default echo
   * request 8/0); the id goes in sport and 0 in dport of both tuples. The protocol is orig's
   * (reply.proto is not read).
   */
  create(orig: Tuple, reply: Tuple, nowMs: number, icmpType = 8, icmpCode = 0): number {
    if (nowMs > this.clock) this.clock = nowMs;
    const o = orig.w, r = reply.w;
    const proto = o[0];
    const oSrc = o[1] >>> 0, oDst = o[2] >>> 0, rSrc = r[1] >>> 0, rDst = r[2] >>> 0;
    const oPorts = o[3] >>> 0, rPorts = r[3] >>> 0;
    const oSport = oPorts >>> 16, oDport = oPorts & 0xffff, rSport = rPorts >>> 16, rDport = rPorts & 0xffff;
    if (proto === IPPROTO_ICMP && !icmpCanCreate(icmpType)) {
      this.counters.invalid++;
      return CT_CREATE_INVALID;
    }
    if (oSrc === rSrc && oDst === rDst && oPorts === rPorts) {
      // Both directions would be the same key (a packet to itself): not trackable.
      this.counters.insertFailed++;
      return CT_CREATE_CLASH;
    }
    const hO = this.hashOf(proto, oSrc, oDst, oPorts);
    const hR = this.hashOf(proto, rSrc, rDst, rPorts);
    if (this.taken(hO, proto, oSrc, oDst, oPorts, nowMs) || this.taken(hR, proto, rSrc, rDst, rPorts, nowMs)) {
      this.counters.insertFailed++;
      return CT_CREATE_CLASH;
    }
    if (this.freeTop === 0 && !this.earlyDrop(hO, nowMs)) {
      this.counters.drop++;
      return CT_CREATE_FULL;
    }
    const slot = this.freeStack[--this.freeTop];
    if (slot >= this.highWater) this.highWater = slot + 1;
    const ko = slot << 1, kr = ko | 1;
    const tup = this.tup, bo = ko << 2, br = kr << 2;
    tup[bo] = hO; tup[bo + 1] = oSrc; tup[bo + 2] = oDst; tup[bo + 3] = oPorts;
    tup[br] = hR; tup[br + 1] = rSrc; tup[br + 2] = rDst; tup[br + 3] = rPorts;
    this.idx.insert(ko, hO);
    this.idx.insert(kr, hR);
    let status = IPS_CONFIRMED | PRIV_NEW_PENDING;
    if (oSrc !== rDst || oSport !== rDport) status |= IPS_SRC_NAT;
    if (oDst !== rSrc || oDport !== rSport) status |= IPS_DST_NAT;
    this.metaB[(slot << 3) + 4] = proto;
    this.meta[slot << 1] = status;
    this.metaB[(slot << 3) + 5] = TCP_NONE;
    this.metaB[(slot << 3) + 6] = TCP_NONE_SET; // last_index = TCP_NONE_SET, as tcp_new leaves it
    let initial: number;
    if (proto === IPPROTO_TCP) initial = this.tcpTimeoutMs[TCP_SYN_SENT];
    else if (proto === IPPROTO_UDP) initial = this.udpUnrepliedMs;
    else if (proto === IPPROTO_ICMP) initial = this.icmpMs;
    else initial = this.genericMs;
    this.times[slot << 1] = nowMs + initial;
    this.times[(slot << 1) + 1] = nowMs;
    this.sStreamTs[slot] = nowMs + UDP_STREAM_DELAY_MS;
    const a = slot << 2;
    this.acct[a] = 0; this.acct[a + 1] = 0; this.acct[a + 2] = 0; this.acct[a + 3] = 0;
    this.sMark[slot] = 0;
    this.metaB[(slot << 3) + 7] = proto === IPPROTO_ICMP ? icmpType : 0;
    this.sIcmpCode[slot] = proto === IPPROTO_ICMP ? icmpCode : 0;
    this.sId[slot] = this.nextId;
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1;
    this.live++;
    this.counters.inserts++;
    return slot;
  }

  /** Remove a live entry (no-op for a free slot). Emits DESTROY. */
  remove(slot: number): void {
    this.removeSlot(slot, true);
  }

  /** Remove every entry (conntrack -F). Returns how many. */
  flush(): number {
    let n = 0;
    for (let s = 0; s < this.highWater; s++) {
      if (this.meta[s << 1] & IPS_CONFIRMED) {
        this.removeSlot(s, true);
        n++;
      }
    }
    return n;
  }

  /**
   * Bounded incremental garbage collection: examine at most `budget` slots from a persistent
   * cursor and remove the expired ones. Returns the number removed.
   */
  sweep(nowMs: number, budget: number): number {
    if (nowMs > this.clock) this.clock = nowMs;
    const hw = this.highWater;
    if (hw === 0) return 0;
    const n = budget < hw ? budget : hw;
    let removed = 0;
    let c = this.cursor < hw ? this.cursor : 0;
    for (let k = 0; k < n; k++) {
      const s = c;
      c = c + 1 >= hw ? 0 : c + 1;
      if ((this.meta[s << 1] & IPS_CONFIRMED) !== 0 && this.times[s << 1] <= nowMs) {
        this.expire(s);
        removed++;
      }
    }
    this.cursor = c;
    return removed;
  }

  private taken(h: number, proto: number, src: number, dst: number, ports: number, nowMs: number): boolean {
    const index = this.index, mask = this.mask;
    let i = h & mask;
    for (;;) {
      const key = index[i];
      if (key < 0) return false;
      const b = key << 2;
      if (this.tup[b] === h && this.tup[b + 1] === (src | 0) && this.tup[b + 2] === (dst | 0) && this.tup[b + 3] === (ports | 0) &&
          this.metaB[((key >> 1) << 3) + 4] === proto) {
        const slot = key >> 1;
        if (this.times[slot << 1] <= nowMs) {
          this.expire(slot);
          return false;
        }
        return true;
      }
      i = (i + 1) & mask;
    }
  }

  private expire(slot: number): void {
    this.counters.expirations++;
    this.removeSlot(slot, true);
  }

  /**
   * Make room: look at the index positions following the new tuple's hash (a random sample, as
   * the hash is keyed) for an expired entry (reaped), else a victim: an entry without ASSURED, or
   * failing that a TCP entry in a closing state (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE:
   * what the kernel's gc worker evicts under pressure). Returns whether a slot was freed.
   */
  private earlyDrop(h: number, nowMs: number): boolean {
    const index = this.index, mask = this.mask;
    let victim = -1, closing = -1;
    let i = h & mask;
    for (let n = 0; n < EARLY_DROP_SCAN; n++, i = (i + 1) & mask) {
      const key = index[i];
      if (key < 0) continue;
      const slot = key >> 1;
      if (this.times[slot << 1] <= nowMs) {
        this.expire(slot);
        return true;
      }
      const st = this.meta[slot << 1];
      if ((st & IPS_ASSURED) === 0) {
        if (victim < 0) victim = slot;
      } else if (closing < 0 && this.metaB[(slot << 3) + 4] === IPPROTO_TCP && tcpCanEarlyDrop(this.metaB[(slot << 3) + 5])) {
        closing = slot;
      }
    }
    if (victim < 0) victim = closing;
    if (victim < 0) return false;
    this.counters.earlyDrops++;
    this.removeSlot(victim, true);
    return true;
  }

  private removeSlot(slot: number, notify: boolean): void {
    if (slot < 0 || slot >= this.max) return;
    const st = this.meta[slot << 1];
    if ((st & IPS_CONFIRMED) === 0 || (st & IPS_DYING) !== 0) return;
    this.meta[slot << 1] = st | IPS_DYING;
    if (notify && this.onEvent !== undefined) {
      if (st & PRIV_NEW_PENDING) this.onEvent('NEW', slot);
      this.onEvent('DESTROY', slot);
    }
    const ko = slot << 1, kr = ko | 1;
    this.idx.remove(ko);
    this.idx.remove(kr);
    if (notify && this.released !== null && (st & IPS_SRC_NAT) !== 0) {
      const used = this.times[(slot << 1) + 1];
      if (this.clock - used < this.releaseHoldMs) {
        const br = kr << 2;
        this.released.record(this.metaB[(slot << 3) + 4], this.tup[br + 1] >>> 0, this.tup[br + 2] >>> 0, this.tup[br + 3] >>> 0,
          used, this.clock, this.releaseHoldMs);
      }
    }
    this.meta[slot << 1] = 0;
    this.freeStack[this.freeTop++] = slot;
    this.live--;
    this.counters.deletes++;
  }

  // ---------------------------------------------------------------- per packet

  /**
   * Account a packet of the connection and run its protocol's state machine.
   *
   * `dir` is DIR_ORIGINAL/DIR_REPLY (lookup() key & 1), `tcpFlags` the TCP flag byte (ignored for
   * other protocols), `l4PayloadLen` the L4 payload length (kept for future window tracking),
   * `pktLen` the IP packet length (for the byte counters).
   *
   * Returns true if the packet belongs to the connection and may be forwarded with its NAT
   * binding (table.lastVerdict = CT_ACCEPT or CT_IGNORED), false if not:
   * - CT_INVALID: invalid TCP flag combination, or a transition the kernel marks invalid (e.g. a
   *   FIN or a bare ACK in SYN_SENT from the client, a SYN/ACK from the client). Nothing changes.
   *   If this was the first packet after create(), the entry is removed without events (like
   *   an unconfirmed conntrack that is never confirmed).
   * - CT_REPEAT: a SYN reopens a closed connection; the entry was destroyed. Treat the packet as a
   *   miss (or pass tcpFlags to lookup(), which does this up front).
   *
   * Semantics follow nf_conntrack_proto_{tcp,udp,icmp,generic}.c with be_liberal=1, loose=1, no
   * sequence/window tracking (hence no RETRANS/UNACK caps except for mid-stream pick-ups).
   * A TCP RST seen before any reply kills the entry (it expires at nowMs; the packet itself is
   * still accepted and the entry's fields stay readable until the next lookup reaps it).
   */
  update(slot: number, dir: number, tcpFlags: number, l4PayloadLen: number, pktLen: number, nowMs: number): boolean {
    if (nowMs > this.clock) this.clock = nowMs;
    const st = this.meta[slot << 1];
    if ((st & IPS_CONFIRMED) === 0) { // not a live entry (a caller bug): nothing to track
      this.lastVerdict = CT_INVALID;
      return false;
    }
    this.evChanged = false;
    const proto = this.metaB[(slot << 3) + 4];
    let v: number;
    if (proto === IPPROTO_TCP) {
      v = this.updateTcp(slot, dir, tcpFlags, st, pktLen, nowMs);
    } else if (proto === IPPROTO_UDP) {
      if (st & IPS_SEEN_REPLY) {
        let extra = this.udpUnrepliedMs;
        let stream = false;
        if (nowMs > this.sStreamTs[slot]) { // still active 2 s after the first packet: a stream
          extra = this.udpRepliedMs;
          stream = (st & IPS_ASSURED) === 0;
        }
        this.refresh(slot, dir, st, extra, pktLen, nowMs);
        if (stream && (st & IPS_NAT_CLASH) === 0) {
          this.meta[slot << 1] |= IPS_ASSURED;
          this.evChanged = true;
        }
      } else {
        this.refresh(slot, dir, st, this.udpUnrepliedMs, pktLen, nowMs);
      }
      v = CT_ACCEPT;
    } else {
      this.refresh(slot, dir, st, proto === IPPROTO_ICMP ? this.icmpMs : this.genericMs, pktLen, nowMs);
      v = CT_ACCEPT;
    }
    this.lastVerdict = v;
    if (v === CT_INVALID) {
      this.counters.invalid++;
      if (st & PRIV_NEW_PENDING) this.removeSlot(slot, false);
      return false;
    }
    if (v === CT_REPEAT) return false;
    if (v === CT_IGNORED) this.counters.ignored++;
    let st2 = this.meta[slot << 1];
    if (dir === DIR_REPLY && (st2 & IPS_SEEN_REPLY) === 0) {
      st2 |= IPS_SEEN_REPLY;
      this.meta[slot << 1] = st2;
      this.evChanged = true;
    }
    if (st2 & PRIV_NEW_PENDING) {
      this.meta[slot << 1] = st2 & ~PRIV_NEW_PENDING;
      if (this.onEvent !== undefined) this.onEvent('NEW', slot);
    } else if (this.evChanged && this.onEvent !== undefined) {
      this.onEvent('UPDATE', slot);
    }
    return true;
  }

  private refresh(slot: number, dir: number, st: number, timeoutMs: number, pktLen: number, nowMs: number): void {
    if ((st & IPS_FIXED_TIMEOUT) === 0) this.times[slot << 1] = nowMs + timeoutMs;
    this.times[(slot << 1) + 1] = nowMs;
    const a = (slot << 2) + dir;
    this.acct[a] += 1;
    this.acct[a + 2] += pktLen;
  }

  /** Would this TCP segment reopen the closed connection in `slot` (nf_conntrack_tcp_packet's NF_REPEAT)? */
  wouldReopen(slot: number, dir: number, tcpFlags: number): boolean {
    const old = this.metaB[(slot << 3) + 5];
    if (old < TCP_TIME_WAIT || old > TCP_CLOSE) return false;
    if (!tcpFlagsValid(tcpFlags)) return false;
    const idx = tcpFlagIndex(tcpFlags);
    if (tcpNextState(dir, idx, old) !== TCP_SYN_SENT) return false;
    const aux = this.metaB[(slot << 3) + 6];
    return (aux & (AUX_CLOSE_INIT_ORIG | AUX_CLOSE_INIT_REPLY)) !== 0 ||
      (((aux & AUX_LAST_DIR) !== 0 ? 1 : 0) === dir && (aux & AUX_LAST_INDEX) === TCP_RST_SET);
  }

  private updateTcp(slot: number, dir: number, flags: number, st: number, pktLen: number, nowMs: number): number {
    if (!tcpFlagsValid(flags)) return CT_INVALID; // tcp_error(): "invalid tcp flag combination"
    const idx = tcpFlagIndex(flags);
    let old = this.metaB[(slot << 3) + 5];
    let aux = this.metaB[(slot << 3) + 6];
    let nw = tcpNextState(dir, idx, old);
    const lastIdx = aux & AUX_LAST_INDEX;
    const lastDir = (aux & AUX_LAST_DIR) !== 0 ? 1 : 0;

    if ((st & PRIV_NEW_PENDING) !== 0 && old === TCP_NONE && nw >= TCP_STATE_COUNT) {
      return CT_INVALID; // tcp_new(): this segment cannot start a connection
    }

    if (nw === TCP_SYN_SENT && old >= TCP_TIME_WAIT) {
      // A SYN on a closed connection. If it was closed by FIN or aborted by RST from this side:
      // destroy and let the packet start a new one. Otherwise fall through to "ignore".
      if ((aux & (AUX_CLOSE_INIT_ORIG | AUX_CLOSE_INIT_REPLY)) !== 0 || (lastDir === dir && lastIdx === TCP_RST_SET)) {
        this.counters.reopens++;
        this.removeSlot(slot, true);
        return CT_REPEAT;
      }
      nw = TCP_IGNORE;
    }

    if (nw === TCP_IGNORE) {
      if (idx === TCP_SYNACK_SET && lastIdx === TCP_SYN_SET && lastDir !== dir) {
        // A SYN/ACK answering a SYN we ignored: both ends are in sync, we were not. Resync.
        // (The kernel also checks the ACK number against that SYN; we do not track sequences.)
        old = TCP_SYN_SENT;
        nw = TCP_SYN_RECV;
        aux &= ~AUX_CHALLENGE_ACK;
      } else {
        aux = (aux & ~(AUX_LAST_INDEX | AUX_LAST_DIR)) | idx | (dir === 1 ? AUX_LAST_DIR : 0);
        if (idx === TCP_SYN_SET && dir === DIR_ORIGINAL) {
          // A SYN in LAST_ACK may draw an RFC 5961 challenge ACK that must not close the connection.
          aux &= ~AUX_CHALLENGE_ACK;
          if (old === TCP_LAST_ACK) aux |= AUX_CHALLENGE_ACK;
        }
        this.metaB[(slot << 3) + 6] = aux;
        return CT_IGNORED;
      }
    } else if (nw === TCP_INVALID) {
      return CT_INVALID;
    } else if (nw === TCP_TIME_WAIT) {
      if (old === TCP_LAST_ACK && idx === TCP_ACK_SET && lastDir !== dir && lastIdx === TCP_SYN_SET &&
          (aux & AUX_CHALLENGE_ACK) !== 0) {
        this.metaB[(slot << 3) + 6] = aux & ~AUX_CHALLENGE_ACK; // a challenge ACK, not the last ACK
        return CT_IGNORED;
      }
    } else if (nw === TCP_SYN_SENT2) {
      aux |= AUX_SIMULTANEOUS_OPEN;
    } else if (nw === TCP_SYN_RECV) {
      if (dir === DIR_REPLY && idx === TCP_ACK_SET && (aux & AUX_SIMULTANEOUS_OPEN) !== 0) nw = TCP_ESTABLISHED;
    }
    // (CLOSE on RST: the kernel validates the RST's sequence number; liberal here.)

    // In window from here on.
    aux = (aux & ~(AUX_LAST_INDEX | AUX_LAST_DIR)) | idx | (dir === 1 ? AUX_LAST_DIR : 0);
    if (old !== nw && nw === TCP_FIN_WAIT) aux |= dir === 1 ? AUX_CLOSE_INIT_REPLY : AUX_CLOSE_INIT_ORIG;
    this.metaB[(slot << 3) + 6] = aux;
    this.metaB[(slot << 3) + 5] = nw;
    if (old !== nw) this.evChanged = true;

    let timeoutMs = idx === TCP_RST_SET ? this.tcpCloseMs : this.tcpTimeoutMs[nw];
    if ((st & IPS_SEEN_REPLY) === 0) {
      if ((flags & TCP_RST) !== 0) {
        // The only answer is a RST (e.g. connection refused): kill the entry now. The packet
        // still goes through with its binding, so the slot stays readable until reaped.
        this.refresh(slot, dir, st & ~IPS_FIXED_TIMEOUT, 0, pktLen, nowMs);
        return CT_ACCEPT;
      }
      if (idx === TCP_SYN_SET && old === TCP_SYN_SENT) {
        // A retransmitted SYN does not extend the timeout, or port reuse could keep the entry
        // (and its NAT binding) alive forever.
        return CT_ACCEPT;
      }
      // ESTABLISHED without a reply: a mid-stream pick-up; do not grant the 5-day timeout.
      if (nw === TCP_ESTABLISHED && timeoutMs > this.tcpUnackMs) timeoutMs = this.tcpUnackMs;
    } else if ((st & IPS_ASSURED) === 0 && (old === TCP_SYN_RECV || old === TCP_ESTABLISHED) && nw === TCP_ESTABLISHED) {
      // The final ACK of the handshake (or a valid answer to a picked-up connection).
      this.meta[slot << 1] = st | IPS_ASSURED;
      this.evChanged = true;
    }
    this.refresh(slot, dir, st, timeoutMs, pktLen, nowMs);
    return CT_ACCEPT;
  }

  // ---------------------------------------------------------------- accessors (slot)

  /** Whether the slot holds a live (possibly expired but not yet reaped) entry. */
  isLive(slot: number): boolean {
    return (this.meta[slot << 1] & IPS_CONFIRMED) !== 0;
  }
  proto(slot: number): number { return this.metaB[(slot << 3) + 4]; }
  /** IPS_* bits (kernel values). */
  status(slot: number): number { return this.meta[slot << 1] & IPS_PUBLIC_MASK; }
  isAssured(slot: number): boolean { return (this.meta[slot << 1] & IPS_ASSURED) !== 0; }
  seenReply(slot: number): boolean { return (this.meta[slot << 1] & IPS_SEEN_REPLY) !== 0; }
  /** TCP_* state (tcp-state.ts); TCP_NONE for other protocols. */
  tcpState(slot: number): number { return this.metaB[(slot << 3) + 5]; }
  /** Kernel state name (SYN_SENT, ESTABLISHED, ...) for TCP, '' for other protocols. */
  tcpStateName(slot: number): string {
    return this.metaB[(slot << 3) + 4] === IPPROTO_TCP ? TCP_STATE_NAMES[this.metaB[(slot << 3) + 5]] : '';
  }
  /** Absolute expiry time (ms, the callers' clock). */
  expiresAt(slot: number): number { return this.times[slot << 1]; }
  /** Time of the last packet that refreshed the entry (ms). */
  lastSeen(slot: number): number { return this.times[(slot << 1) + 1]; }
  /** UDP: time after which a replied flow counts as a stream (first packet + 2 s). */
  streamTs(slot: number): number { return this.sStreamTs[slot]; }
  /**
   * Whole seconds left, truncated like the kernel's `nf_ct_expires(ct) / HZ`; -1 once expired
   * (expiresAt <= nowMs), so listings can skip entries not reaped yet.
   */
  timeoutLeftSec(slot: number, nowMs: number): number {
    const left = this.times[slot << 1] - nowMs;
    // The epsilon absorbs floating-point error: (t + 120000) - t may be 119999.99999.
    return left <= 0 ? -1 : Math.floor(left / 1000 + 1e-6);
  }
  origSrc(slot: number): number { return this.tup[(slot << 3) + 1] >>> 0; }
  origDst(slot: number): number { return this.tup[(slot << 3) + 2] >>> 0; }
  origSport(slot: number): number { return this.tup[(slot << 3) + 3] >>> 16; }
  origDport(slot: number): number { return this.tup[(slot << 3) + 3] & 0xffff; }
  replySrc(slot: number): number { return this.tup[(slot << 3) + 5] >>> 0; }
  replyDst(slot: number): number { return this.tup[(slot << 3) + 6] >>> 0; }
  replySport(slot: number): number { return this.tup[(slot << 3) + 7] >>> 16; }
  replyDport(slot: number): number { return this.tup[(slot << 3) + 7] & 0xffff; }
  /** Packets seen in direction `dir`. */
  packets(slot: number, dir: number): number { return this.acct[(slot << 2) + dir]; }
  /** Bytes (IP length) seen in direction `dir`. */
  bytes(slot: number, dir: number): number { return this.acct[(slot << 2) + 2 + dir]; }
  mark(slot: number): number { return this.sMark[slot]; }
  setMark(slot: number, mark: number): void {
    if (this.sMark[slot] === mark >>> 0) return;
    this.sMark[slot] = mark >>> 0;
    if (this.onEvent !== undefined && (this.meta[slot << 1] & PRIV_NEW_PENDING) === 0) this.onEvent('UPDATE', slot);
  }
  /** Per-entry id (conntrack -o id), unique among live entries, never 0. */
  id(slot: number): number { return this.sId[slot]; }
  /** ICMP: type/code of the original query (e.g. 8/0 for echo request). */
  icmpType(slot: number): number { return this.metaB[(slot << 3) + 7]; }
  icmpCode(slot: number): number { return this.sIcmpCode[slot]; }
  /** ICMP: type of the reply direction (echo 8 -> 0, timestamp 13 -> 14, info 15 -> 16, mask 17 -> 18). */
  replyIcmpType(slot: number): number { return icmpReplyType(this.metaB[(slot << 3) + 7]); }
  /**
   * Set status bits. Only IPS_NAT_CLASH, IPS_FIXED_TIMEOUT, IPS_ASSURED and IPS_SEEN_REPLY may be
   * set from outside; others are ignored.
   */
  setStatusBits(slot: number, bits: number): void {
    const allowed = bits & (IPS_NAT_CLASH | IPS_FIXED_TIMEOUT | IPS_ASSURED | IPS_SEEN_REPLY);
    const st = this.meta[slot << 1];
    if ((st & IPS_CONFIRMED) === 0 || (st | allowed) === st) return;
    this.meta[slot << 1] = st | allowed;
    if (this.onEvent !== undefined && (st & PRIV_NEW_PENDING) === 0) this.onEvent('UPDATE', slot);
  }
  /**
   * Remove an entry to free its reply tuple for a new NAT binding (chooseMasqPort's evictClosing).
   * Counted in natEvictions; emits DESTROY.
   */
  evict(slot: number): void {
    if (!this.isLive(slot)) return;
    this.counters.natEvictions++;
    this.removeSlot(slot, true);
  }
  /** Set the timeout (seconds from nowMs), like `conntrack -U --timeout`. */
  setTimeout(slot: number, seconds: number, nowMs: number): void {
    if (nowMs > this.clock) this.clock = nowMs;
    this.times[slot << 1] = nowMs + seconds * 1000;
  }

  // ---------------------------------------------------------------- accessors (key = slot<<1|dir)

  keySrc(key: number): number { return this.tup[(key << 2) + 1] >>> 0; }
  keyDst(key: number): number { return this.tup[(key << 2) + 2] >>> 0; }
  keySport(key: number): number { return this.tup[(key << 2) + 3] >>> 16; }
  keyDport(key: number): number { return this.tup[(key << 2) + 3] & 0xffff; }

  // ---------------------------------------------------------------- listing (not hot path)

  /**
   * Call `cb(slot)` for every live entry in slot order. With `nowMs`, entries already expired
   * (not yet reaped) are skipped. The callback may remove the slot it is given.
   */
  forEach(cb: (slot: number) => void, nowMs?: number): void {
    const hw = this.highWater;
    for (let s = 0; s < hw; s++) {
      if ((this.meta[s << 1] & IPS_CONFIRMED) === 0) continue;
      if (nowMs !== undefined && this.times[s << 1] <= nowMs) continue;
      cb(s);
    }
  }

  /** Index occupancy check for tests: every live key is reachable from its home position. */
  checkIndex(): string | null {
    const index = this.index, mask = this.mask;
    let keys = 0;
    for (let i = 0; i <= mask; i++) {
      const key = index[i];
      if (key < 0) continue;
      keys++;
      if ((this.meta[(key >> 1) << 1] & IPS_CONFIRMED) === 0) return `index position ${i} holds key ${key} of a free slot`;
    }
    if (keys !== this.live * 2) return `index holds ${keys} keys for ${this.live} entries`;
    return this.idx.check();
  }
}
