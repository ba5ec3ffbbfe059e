// xt_recent's per-name address lists (sessionAffinity ClientIP), over typed arrays: open
// addressing on the source address with the last `--set` time. Lookups allocate nothing; the table
// grows (doubling, amortized) up to `maxEntries`, then evicts the oldest entry.

const EMPTY = 0;
const USED = 1;

export class RecentTable {
  private keys: Uint32Array;
  private stamps: Float64Array;
  private state: Uint8Array;
  private mask: number;
  size = 0;

  constructor(readonly name: string, readonly maxEntries = 65536, initial = 16) {
    let cap = 16;
    while (cap < initial * 2) cap <<= 1;
    this.keys = new Uint32Array(cap);
    this.stamps = new Float64Array(cap);
    this.state = new Uint8Array(cap);
    this.mask = cap - 1;
  }

  private slotOf(addr: number): number {
    let h = Math.imul(addr ^ (addr >>> 16), 0x45d9f3b);
    h = Math.imul(h ^ (h >>> 16), 0x45d9f3b);
    return (h ^ (h >>> 16)) & this.mask;
  }

  /** Slot holding `addr`, or -1. */
  find(addr: number): number {
    let i = this.slotOf(addr);
    for (;;) {
      if (this.state[i] === EMPTY) return -1;
      if (this.keys[i] === addr) return i;
      i = (i + 1) & this.mask;
    }
  }

  /** Last time `addr` was set, or -1 when absent. */
  lastSeen(addr: number): number {
    const i = this.find(addr);
    return i < 0 ? -1 : this.stamps[i];
  }

  stampAt(slot: number): number { return this.stamps[slot]; }
  touch(slot: number, nowMs: number): void { this.stamps[slot] = nowMs; }

  set(addr: number, nowMs: number): void {
    const f = this.find(addr);
    if (f >= 0) { this.stamps[f] = nowMs; return; }
    if (this.size >= this.maxEntries) this.evictOldest();
    else if ((this.size + 1) * 2 > this.mask + 1) this.grow();
    let i = this.slotOf(addr);
    while (this.state[i] !== EMPTY) i = (i + 1) & this.mask;
    this.state[i] = USED;
    this.keys[i] = addr;
    this.stamps[i] = nowMs;
    this.size++;
  }

  /** Removes the entry in `slot` (backward-shift deletion keeps probe chains intact). */
  removeSlot(slot: number): void {
    let i = slot;
    this.state[i] = EMPTY;
    this.size--;
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      if (this.state[j] === EMPTY) return;
      const k = this.slotOf(this.keys[j]);
      // Move j back to i when k is not cyclically within (i, j].
      if (i <= j ? i < k && k <= j : i < k || k <= j) continue;
      this.keys[i] = this.keys[j];
      this.stamps[i] = this.stamps[j];
      this.state[i] = USED;
      this.state[j] = EMPTY;
      i = j;
    }
  }

  clear(): void {
    this.state.fill(EMPTY);
    this.size = 0;
  }

  private grow(): void {
    const oldK = this.keys, oldS = this.stamps, oldU = this.state;
    const cap = (this.mask + 1) * 2;
    this.keys = new Uint32Array(cap);
    this.stamps = new Float64Array(cap);
    this.state = new Uint8Array(cap);
    this.mask = cap - 1;
    this.size = 0;
    for (let i = 0; i < oldU.length; i++) {
      if (oldU[i] !== USED) continue;
      let j = this.slotOf(oldK[i]);
      while (this.state[j] !== EMPTY) j = (j + 1) & this.mask;
      this.state[j] = USED; this.keys[j] = oldK[i]; this.stamps[j] = oldS[i];
      this.size++;
    }
  }

  private evictOldest(): void {
    let best = -1, t = Infinity;
    for (let i = 0; i <= this.mask; i++) if (this.state[i] === USED && this.stamps[i] < t) { t = this.stamps[i]; best = i; }
    if (best >= 0) this.removeSlot(best);
  }
}
