// Random u32s for `-m statistic --mode random` without a crypto call per connection: a pool filled
// in bulk (undici's model). Any object with nextU32() works (e.g. src/conntrack's RandomPool).
import { randomFillSync } from 'node:crypto';

export interface RandomSource {
  nextU32(): number;
}

export class NatRandomPool implements RandomSource {
  private readonly buf: Uint32Array;
  private i: number;
  constructor(size = 4096) {
    this.buf = new Uint32Array(size);
    this.i = size;
  }
  nextU32(): number {
    if (this.i >= this.buf.length) {
      randomFillSync(this.buf);
      this.i = 0;
    }
    return this.buf[this.i++];
  }
}

/** Deterministic generator for tests (xorshift128, Marsaglia). Not for production. */
export class SeededRandom implements RandomSource {
  private x: number; private y = 362436069; private z = 521288629; private w = 88675123;
  constructor(seed = 2463534242) {
    this.x = seed >>> 0 || 1;
    for (let i = 0; i < 8; i++) this.nextU32();
  }
  nextU32(): number {
    const t = (this.x ^ (this.x << 11)) >>> 0;
    this.x = this.y; this.y = this.z; this.z = this.w;
    this.w = (this.w ^ (this.w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.w;
  }
}
