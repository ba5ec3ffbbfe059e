// xt_recent's per-name address lists (sessionAffinity ClientIP), over typed arrays: entries
// (source address, time of the last --set/--update) in a slab, found through an open-addressing
// index on the address (lib/hash-index), and threaded on an intrusive LRU list (prev/next entry
// numbers) in the order they were last set or updated, as the kernel's recent_table keeps its
// lru_list. The slab grows (doubling, amortized) up to `maxEntries`; once full, a new address
// evicts the head of the list, the least recently set entry, in O(1) (no scan).
//
// Handles returned by find() are entry numbers; they stay valid until that entry is removed or
// evicted. Lookups allocate nothing; only growth does.
import { HashIndex } from '../../lib/hash-index';

export class RecentTable {
  private addrs: Uint32Array;
  private stamps: Float64Array;
  private hashes: Int32Array;
  /** LRU links (entry numbers, -1 = none); a free entry is chained through `next`. */
  private prev: Int32Array;
  private next: Int32Array;
  private idx: HashIndex;
  /** Least and most recently set entries. */
  private head = -1;
  private tail = -1;
  /** Entry numbers below this have been handed out at least once. */
  private used = 0;
  private free = -1;
  private readonly limit: number;
  size = 0;

  constructor(readonly name: string, readonly maxEntries = 65536, initial = 16) {
    this.limit = Math.max(1, maxEntries);
    const cap = Math.max(1, Math.min(initial, this.limit));
    this.addrs = new Uint32Array(cap);
    this.stamps = new Float64Array(cap);
    this.hashes = new Int32Array(cap);
    this.prev = new Int32Array(cap);
    this.next = new Int32Array(cap);
    this.idx = new HashIndex(cap * 2, this.hashes);
  }

  private static hashOf(addr: number): number {
    let h = Math.imul(addr ^ (addr >>> 16), 0x45d9f3b);
    h = Math.imul(h ^ (h >>> 16), 0x45d9f3b);
    return (h ^ (h >>> 16)) | 0;
  }

  /** Entry holding `addr`, or -1. */
  find(addr: number): number {
    addr >>>= 0;
    const slots = this.idx.slots, mask = this.idx.mask, addrs = this.addrs;
    let i = RecentTable.hashOf(addr) & mask;
    for (;;) {
      const e = slots[i];
      if (e < 0 || addrs[e] === addr) return e;
      i = (i + 1) & mask;
    }
  }

  /** Last time `addr` was set, or -1 when absent. */
  lastSeen(addr: number): number {
    const e = this.find(addr);
    return e < 0 ? -1 : this.stamps[e];
  }

  stampAt(entry: number): number { return this.stamps[entry]; }

  /** --update: a new time, and the entry becomes the most recently set. */
  touch(entry: number, nowMs: number): void {
    this.stamps[entry] = nowMs;
    this.moveToTail(entry);
  }

  /** --set: add `addr` (evicting the least recently set entry when full) or refresh it. */
  set(addr: number, nowMs: number): void {
    addr >>>= 0;
    const f = this.find(addr);
    if (f >= 0) { this.touch(f, nowMs); return; }
    if (this.size >= this.limit) this.removeSlot(this.head);
    const e = this.alloc();
    const h = RecentTable.hashOf(addr);
    this.addrs[e] = addr;
    this.stamps[e] = nowMs;
    this.hashes[e] = h;
    this.idx.insert(e, h);
    this.linkTail(e);
    this.size++;
  }

  /** Removes `entry` (a handle from find()). */
  removeSlot(entry: number): void {
    this.idx.remove(entry);
    this.unlink(entry);
    this.next[entry] = this.free;
    this.free = entry;
    this.size--;
  }

  clear(): void {
    this.idx.clear();
    this.head = this.tail = -1;
    this.used = 0;
    this.free = -1;
    this.size = 0;
  }

  /** Test aid: the index invariant (see HashIndex.check) and the LRU list's length. */
  check(): string | null {
    let n = 0;
    for (let e = this.head, p = -1; e >= 0; p = e, e = this.next[e]) {
      if (this.prev[e] !== p) return `LRU link broken at entry ${e}`;
      if (this.find(this.addrs[e]) !== e) return `entry ${e} not found by its address`;
      if (++n > this.size) break;
    }
    if (n !== this.size) return `LRU list holds ${n} entries for size ${this.size}`;
    return this.idx.check();
  }

  private alloc(): number {
    if (this.free >= 0) {
      const e = this.free;
      this.free = this.next[e];
      return e;
    }
    if (this.used === this.addrs.length) this.grow();
    return this.used++;
  }

  private linkTail(e: number): void {
    this.prev[e] = this.tail;
    this.next[e] = -1;
    if (this.tail >= 0) this.next[this.tail] = e; else this.head = e;
    this.tail = e;
  }

  private unlink(e: number): void {
    const p = this.prev[e], n = this.next[e];
    if (p >= 0) this.next[p] = n; else this.head = n;
    if (n >= 0) this.prev[n] = p; else this.tail = p;
  }

  private moveToTail(e: number): void {
    if (e === this.tail) return;
    this.unlink(e);
    this.linkTail(e);
  }

  /** Doubles the slab (never past the limit; only called with every entry in use) and rebuilds the index. */
  private grow(): void {
    const cap = Math.min(this.addrs.length * 2, this.limit);
    const widen = <T extends Uint32Array | Float64Array | Int32Array>(a: T, b: T): T => { b.set(a); return b; };
    this.addrs = widen(this.addrs, new Uint32Array(cap));
    this.stamps = widen(this.stamps, new Float64Array(cap));
    this.hashes = widen(this.hashes, new Int32Array(cap));
    this.prev = widen(this.prev, new Int32Array(cap));
    this.next = widen(this.next, new Int32Array(cap));
    this.idx = new HashIndex(cap * 2, this.hashes);
    for (let e = this.head; e >= 0; e = this.next[e]) this.idx.insert(e, this.hashes[e]);
  }
}
