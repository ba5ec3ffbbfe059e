// "Recently released" NAT reply tuples: a bounded memory of SNAT'ed connections that left the
// table, with the time each was last used. MASQUERADE's port choice consults it so that a
// (masquerade address, port, backend address, backend port) is not handed out again while the
// backend may still hold the old connection in TIME_WAIT (60 s on Linux): a new SYN landing on
// such a socket with an older timestamp is dropped by PAWS and the client waits 1-3 s to
// retransmit (shared/PERF-NOTES.md, "PAWS and TIME_WAIT").
//
// Storage: a FIFO ring of `capacity` records (typed arrays) plus an open-addressing index over it
// (lib/hash-index, load <= 0.5). When the ring is full the oldest record
// is forgotten; records older than the hold time are dropped lazily as new ones arrive. Nothing
// here allocates after construction.
import { HashIndex } from '../lib/hash-index';
import { tupleHash } from './hash';

export class ReleasedTuples {
  readonly capacity: number;
  private readonly k0: number;
  private readonly k1: number;
  private readonly proto: Uint8Array;
  private readonly src: Uint32Array;
  private readonly dst: Uint32Array;
  private readonly ports: Uint32Array;
  private readonly hash: Int32Array;
  private readonly time: Float64Array;
  private readonly live: Uint8Array;
  private readonly idx: HashIndex;
  private head = 0;
  private count = 0;
  /** Live records (not superseded or forgotten). */
  size = 0;

  constructor(capacity: number, k0: number, k1: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error('ReleasedTuples capacity must be a positive integer');
    this.capacity = capacity;
    this.k0 = k0 ^ 0x5bd1e995;
    this.k1 = k1 ^ 0x27d4eb2f;
    this.proto = new Uint8Array(capacity);
    this.src = new Uint32Array(capacity);
    this.dst = new Uint32Array(capacity);
    this.ports = new Uint32Array(capacity);
    this.hash = new Int32Array(capacity);
    this.time = new Float64Array(capacity);
    this.live = new Uint8Array(capacity);
    this.idx = new HashIndex(capacity * 2, this.hash);
  }

  /** Bytes held in typed arrays. */
  get byteLength(): number {
    return this.capacity * (1 + 4 + 4 + 4 + 4 + 8 + 1) + this.idx.byteLength;
  }

  /**
   * Remember that the reply tuple (proto, src, dst, sport<<16|dport) was last used at `usedAt`.
   * Records whose `usedAt + holdMs <= nowMs` are dropped from the old end first.
   */
  record(proto: number, src: number, dst: number, ports: number, usedAt: number, nowMs: number, holdMs: number): void {
    // Forget what is too old (or superseded) at the head.
    while (this.count > 0) {
      const h = this.head;
      if (this.live[h] === 1 && this.time[h] + holdMs > nowMs) break;
      this.dropHead();
    }
    const h = tupleHash(this.k0, this.k1, proto, src, dst, ports);
    const old = this.find(h, proto, src, dst, ports);
    if (old >= 0) this.kill(old);
    if (this.count === this.capacity) this.dropHead();
    let pos = this.head + this.count;
    if (pos >= this.capacity) pos -= this.capacity;
    this.proto[pos] = proto;
    this.src[pos] = src;
    this.dst[pos] = dst;
    this.ports[pos] = ports;
    this.hash[pos] = h;
    this.time[pos] = usedAt;
    this.live[pos] = 1;
    this.count++;
    this.size++;
    this.idx.insert(pos, h);
  }

  /** Time the tuple was last used by a released connection, or -1 if not remembered. */
  lastUse(proto: number, src: number, dst: number, ports: number): number {
    if (this.size === 0) return -1;
    const h = tupleHash(this.k0, this.k1, proto, src, dst, ports);
    const pos = this.find(h, proto, src, dst, ports);
    return pos < 0 ? -1 : this.time[pos];
  }

  clear(): void {
    this.idx.clear();
    this.live.fill(0);
    this.head = 0;
    this.count = 0;
    this.size = 0;
  }

  private find(h: number, proto: number, src: number, dst: number, ports: number): number {
    const slots = this.idx.slots, mask = this.idx.mask;
    let i = h & mask;
    for (;;) {
      const pos = slots[i];
      if (pos < 0) return -1;
      if (this.hash[pos] === h && this.src[pos] === src && this.dst[pos] === dst && this.ports[pos] === ports &&
          this.proto[pos] === proto) return pos;
      i = (i + 1) & mask;
    }
  }

  private dropHead(): void {
    const h = this.head;
    if (this.live[h] === 1) this.kill(h);
    this.head = h + 1 === this.capacity ? 0 : h + 1;
    this.count--;
  }

  /** Unlink ring record `pos` from the index and mark it dead. */
  private kill(pos: number): void {
    this.idx.remove(pos);
    this.live[pos] = 0;
    this.size--;
  }
}
