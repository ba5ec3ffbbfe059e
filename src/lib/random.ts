// The one random source: a pool of random 32-bit words filled in bulk from the OS CSPRNG
// (crypto.randomFillSync), then handed out one by one, so there is no crypto call and no
// allocation per draw (the undici model). Conntrack uses it for MASQUERADE port offsets and nat
// for `-m statistic --mode random`; both accept any U32Source, so tests pass a SeededRandom.
import { randomFillSync } from 'node:crypto';

/** Anything that yields uniformly distributed unsigned 32-bit integers. */
export interface U32Source {
  nextU32(): number;
}

export class RandomPool implements U32Source {
  private readonly buf: Uint32Array;
  private pos: number;
  private readonly fill: (buf: Uint32Array) => void;

  /**
   * @param size words per refill (default 4096 = 16 KiB)
   * @param fill refill function (default crypto.randomFillSync); tests may pass a deterministic one
   */
  constructor(size = 4096, fill?: (buf: Uint32Array) => void) {
    if (!Number.isInteger(size) || size < 1) throw new Error('RandomPool size must be a positive integer');
    this.buf = new Uint32Array(size);
    this.fill = fill ?? ((b) => { randomFillSync(b); });
    this.pos = size; // filled on first use
  }

  /** Uniform unsigned 32-bit integer. */
  nextU32(): number {
    if (this.pos >= this.buf.length) {
      this.fill(this.buf);
      this.pos = 0;
    }
    return this.buf[this.pos++];
  }

  /** Uniform 16-bit integer (the kernel's get_random_u16()). */
  nextU16(): number {
    return this.nextU32() & 0xffff;
  }

  /** Uniform integer in [0, n) for 1 <= n <= 2^32, without modulo bias (rejection sampling). */
  nextBelow(n: number): number {
    if (n <= 1) return 0;
    const limit = 4294967296 - (4294967296 % n);
    let x = this.nextU32();
    while (x >= limit) x = this.nextU32();
    return x % n;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

/**
 * A deterministic U32Source (splitmix32) for tests, benchmarks and seeded hash keys. Not for
 * drawing anything an outsider must not predict.
 */
export class SeededRandom implements U32Source {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  nextU32(): number {
    this.s = (this.s + 0x9e3779b9) | 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
}
