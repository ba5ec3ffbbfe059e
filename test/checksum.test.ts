import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  checksum,
  csumApply,
  csumDelta16,
  csumDelta32,
  csumUpdate16,
  csumUpdate32,
  fold,
  onesSum,
  pseudoHeaderSum,
} from '../src/netstack/checksum';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Reference RFC 1071 checksum written independently of the module (BigInt, no folding tricks). */
function refChecksum(b: Uint8Array, initialWords: number[] = []): number {
  let s = 0n;
  for (const w of initialWords) s += BigInt(w);
  for (let i = 0; i < b.length; i += 2) s += BigInt((b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0));
  while (s > 0xffffn) s = (s & 0xffffn) + (s >> 16n);
  return Number(~s & 0xffffn);
}

describe('onesSum / fold / checksum', () => {
  it('RFC 1071 section 3 numeric example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2', () => {
    const b = hex('0001f203f4f5f6f7');
    expect(onesSum(b, 0, b.length)).toBe(0x2ddf0);
    expect(fold(onesSum(b, 0, b.length))).toBe(0xddf2);
    expect(checksum(b, 0, b.length)).toBe(~0xddf2 & 0xffff);
  });

  it('known IPv4 header checksums (0xb861, 0xb1e6) verify and recompute', () => {
    for (const [h, c] of [
      ['450000730000400040110000c0a80001c0a800c7', 0xb861],
      ['4500003c1c4640004006 0000 ac100a63ac100a0c', 0xb1e6],
    ] as const) {
      const b = hex(h);
      expect(checksum(b, 0, 20)).toBe(c);
      b.writeUInt16BE(c, 10);
      expect(checksum(b, 0, 20)).toBe(0);
    }
  });

  it('honours offset, odd length (zero pad) and initial', () => {
    const b = hex('ff 0102 0304 05 ff');
    expect(onesSum(b, 1, 5)).toBe(0x0102 + 0x0304 + 0x0500);
    expect(onesSum(b, 1, 5, 7)).toBe(0x0102 + 0x0304 + 0x0500 + 7);
    expect(checksum(b, 1, 0)).toBe(0xffff);
  });

  it('does not overflow on 64 KiB of 0xff with a large initial', () => {
    const b = new Uint8Array(65535).fill(0xff);
    const s = onesSum(b, 0, b.length, 0xfffffff0);
    expect(s).toBeLessThanOrEqual(0xffffffff);
    expect(checksum(b, 0, b.length, 0xfffffff0)).toBe(refChecksum(b, [0xfffffff0]));
  });

  it('matches the reference on random data, and chaining via initial equals one pass', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }), (a, b) => {
        const a2 = a.length % 2 === 0 ? a : a.subarray(0, a.length - 1);
        const both = Buffer.concat([a2, b]);
        expect(checksum(both, 0, both.length)).toBe(refChecksum(both));
        expect(checksum(b, 0, b.length, onesSum(a2, 0, a2.length))).toBe(refChecksum(both));
      }),
    );
  });

  it('pseudoHeaderSum adds src, dst, proto and length words', () => {
    const src = 0x0af40105;
    const dst = 0x0a60000a;
    expect(fold(pseudoHeaderSum(src, dst, 6, 40))).toBe(fold(0x0af4 + 0x0105 + 0x0a60 + 0x000a + 6 + 40));
    // as bytes, through onesSum
    const ph = hex('0af40105 0a60000a 0006 0028');
    expect(fold(pseudoHeaderSum(src, dst, 6, 40))).toBe(fold(onesSum(ph, 0, ph.length)));
  });
});

describe('RFC 1624 incremental update', () => {
  it('the RFC corner case: HC=0xDD2F, m=0x5555 -> m\'=0x3285 gives 0x0000 (eqn. 2 would give 0xFFFF)', () => {
    // Other words sum to 0xCD7A; with m = 0x5555 the header checksum is 0xDD2F.
    const words = Buffer.alloc(6);
    words.writeUInt16BE(0xcd7a, 0);
    words.writeUInt16BE(0x5555, 2);
    expect(checksum(words, 0, 4)).toBe(0xdd2f);
    expect(csumUpdate16(0xdd2f, 0x5555, 0x3285)).toBe(0x0000);
    // full recomputation agrees
    words.writeUInt16BE(0x3285, 2);
    expect(checksum(words, 0, 4)).toBe(0x0000);
    // RFC 1141 eqn. 2 (HC' = HC + m + ~m') would give 0xFFFF: documents why eqn. 3 is used.
    const eqn2 = fold(0xdd2f + 0x5555 + (~0x3285 & 0xffff));
    expect(eqn2).toBe(0xffff);
  });

  it('a changed 16-bit word or 32-bit value updates to the fully recomputed checksum', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 8, maxLength: 64 }),
        fc.nat(),
        fc.integer({ min: 0, max: 0xffffffff }),
        (data, pos, v) => {
          const b = Buffer.from(data.length % 2 ? Buffer.concat([data, Buffer.alloc(1)]) : data);
          // the checksum lives in word 0; keep one non-zero covered byte so the sum is never +0
          b[b.length - 1] |= 1;
          b.writeUInt16BE(0, 0);
          b.writeUInt16BE(checksum(b, 0, b.length), 0);
          const wordAt = 2 + 2 * (pos % ((b.length - 2) / 2));
          const w = b.readUInt16BE(wordAt);
          const hc = b.readUInt16BE(0);
          const w2 = v & 0xffff;
          b.writeUInt16BE(w2, wordAt);
          const inc16 = csumUpdate16(hc, w, w2);
          b.writeUInt16BE(0, 0);
          const full16 = checksum(b, 0, b.length);
          if (b.subarray(2).some((x) => x !== 0)) expect(inc16).toBe(full16);
          b.writeUInt16BE(full16, 0);

          if (b.length >= 6) {
            const at = 2 + 2 * (pos % ((b.length - 4) / 2));
            const old = b.readUInt32BE(at);
            const hc2 = b.readUInt16BE(0);
            b.writeUInt32BE(v >>> 0, at);
            const inc32 = csumUpdate32(hc2, old, v >>> 0);
            expect(inc32).toBe(csumApply(hc2, csumDelta32(old, v >>> 0)));
            b.writeUInt16BE(0, 0);
            if (b.subarray(2).some((x) => x !== 0)) expect(inc32).toBe(checksum(b, 0, b.length));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('deltas of several words applied at once equal sequential updates', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })), { maxLength: 8 }),
        (hc, changes) => {
          let seq = hc;
          let delta = 0;
          for (const [a, b] of changes) {
            seq = csumUpdate16(seq, a, b);
            delta += csumDelta16(a, b);
          }
          const once = csumApply(hc, delta);
          // both are the same one's-complement value; representations agree except +0/-0 when
          // nothing changed at all from a non-canonical 0xFFFF
          expect(fold(once) % 0xffff).toBe(fold(seq) % 0xffff);
        },
      ),
    );
  });
});
