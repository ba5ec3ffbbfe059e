// One open-addressing index over typed arrays: linear probing, no tombstones, backward-shift
// deletion (Knuth, TAOCP vol. 3, 6.4 Algorithm R). Used by the conntrack table, its
// released-tuple ring and xt_recent.
//
// The index stores non-negative int32 values (entry numbers of the caller's storage; -1 = empty).
// It does not store keys: each caller keeps an entry's 32-bit hash in its own Int32Array at
// `value << shift` (conntrack interleaves it with the tuple, hence the shift), which is all that
// insertion and deletion need. Lookups compare keys, which only the caller knows, so the caller
// writes its probe loop over `slots`, starting at `h & mask` and stepping `(i + 1) & mask` until
// it meets -1. Nothing here allocates after construction.

export class HashIndex {
  /** Positions: a value, or -1 when empty. Length a power of two. */
  readonly slots: Int32Array;
  readonly mask: number;
  /** Where entry `v`'s hash is read: hashes[v << shift]. */
  readonly hashes: Int32Array;
  private readonly shift: number;

  /**
   * @param size positions; rounded up to a power of two (at least 16). Keep the load well below 1
   *   (callers size it so that it stays <= 0.5): a full index makes probes loop forever.
   */
  constructor(size: number, hashes: Int32Array, shift = 0) {
    let n = 16;
    while (n < size) n *= 2;
    this.slots = new Int32Array(n).fill(-1);
    this.mask = n - 1;
    this.hashes = hashes;
    this.shift = shift;
  }

  /** Adds `value` whose hash is `h` (the caller has stored h at hashes[value << shift]). */
  insert(value: number, h: number): void {
    const slots = this.slots, mask = this.mask;
    let i = h & mask;
    while (slots[i] >= 0) i = (i + 1) & mask;
    slots[i] = value;
  }

  /** Removes `value`, which must be present. */
  remove(value: number): void {
    const slots = this.slots, mask = this.mask;
    let i = this.hashes[value << this.shift] & mask;
    while (slots[i] !== value) i = (i + 1) & mask;
    this.removeAt(i);
  }

  /**
   * Empties position `i` and closes the gap: every later entry of the probe run that may move
   * back into the hole does (Algorithm R), so each entry stays reachable from its home position
   * without a tombstone.
   */
  removeAt(i: number): void {
    const slots = this.slots, mask = this.mask, hashes = this.hashes, shift = this.shift;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const v = slots[j];
      if (v < 0) break;
      const home = hashes[v << shift] & mask;
      // v stays where it is iff its home lies cyclically in (i, j]: the probe from home to j then
      // does not pass the hole. Otherwise it fills the hole and leaves a new one at j.
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (!stays) {
        slots[i] = v;
        i = j;
      }
    }
    slots[i] = -1;
  }

  clear(): void {
    this.slots.fill(-1);
  }

  /** Bytes held. */
  get byteLength(): number {
    return this.slots.byteLength;
  }

  /**
   * Test aid: null if every value is reachable from its home position (no empty position on the
   * way), else a description of the first violation. O(size x run length).
   */
  check(): string | null {
    const slots = this.slots, mask = this.mask;
    for (let i = 0; i <= mask; i++) {
      const v = slots[i];
      if (v < 0) continue;
      for (let j = this.hashes[v << this.shift] & mask; j !== i; j = (j + 1) & mask) {
        if (slots[j] < 0) return `value ${v} at ${i} unreachable: hole at ${j}`;
      }
    }
    return null;
  }
}
