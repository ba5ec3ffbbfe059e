// lib/hash-index (linear probing, backward-shift deletion) and xt_recent's table built on it,
// each checked against a Map under random operations. Hashes are drawn from a small range so
// that probe runs collide, merge and wrap around the end of the index.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HashIndex } from '../src/lib/hash-index';
import { RecentTable } from '../src/nat/eval/recent';

const SEED = 20261202;

type Op = { del: boolean; key: number; hash: number };
const ops = (keys: number, hashes: number, maxLength: number) => fc.array(
  fc.record({ del: fc.boolean(), key: fc.integer({ min: 0, max: keys - 1 }), hash: fc.integer({ min: 0, max: hashes - 1 }) }),
  { maxLength },
);

describe('HashIndex', () => {
  it('insert/remove agree with a Map (seeded)', () => {
    fc.assert(fc.property(ops(40, 64, 300), fc.constantFrom(0, 2), (seq: Op[], shift) => {
      const CAP = 24; // entries; the index gets 64 positions (load <= 0.375)
      const hashes = new Int32Array(CAP << shift);
      const keyOf = new Int32Array(CAP);
      const idx = new HashIndex(64, hashes, shift);
      const model = new Map<number, number>(); // key -> entry
      const free: number[] = [];
      for (let e = CAP - 1; e >= 0; e--) free.push(e);
      const find = (key: number, h: number): number => {
        for (let i = h & idx.mask; ; i = (i + 1) & idx.mask) {
          const v = idx.slots[i];
          if (v < 0 || keyOf[v] === key) return v;
        }
      };
      const homeOf = new Map<number, number>(); // key -> hash it was inserted with
      for (const op of seq) {
        const e = model.get(op.key);
        if (op.del) {
          if (e === undefined) continue;
          idx.remove(e);
          model.delete(op.key);
          homeOf.delete(op.key);
          free.push(e);
        } else {
          if (e !== undefined || free.length === 0) continue;
          const n = free.pop()!;
          keyOf[n] = op.key;
          hashes[n << shift] = op.hash;
          idx.insert(n, op.hash);
          model.set(op.key, n);
          homeOf.set(op.key, op.hash);
        }
        expect(idx.check()).toBeNull();
        for (const [k, v] of model) expect(find(k, homeOf.get(k)!)).toBe(v);
        let used = 0;
        for (let i = 0; i <= idx.mask; i++) if (idx.slots[i] >= 0) used++;
        expect(used).toBe(model.size);
      }
    }), { seed: SEED, numRuns: 300 });
  });

  it('backward shift across the end of the index', () => {
    // Three entries homed at the last position: they occupy 15, 0, 1. Removing the one at 15
    // must pull the others back so that both stay reachable from 15.
    const hashes = new Int32Array([15, 15, 15, 0]);
    const idx = new HashIndex(16, hashes);
    for (let v = 0; v < 3; v++) idx.insert(v, 15);
    idx.insert(3, 0); // home 0, pushed to 2
    expect(Array.from(idx.slots.subarray(0, 3))).toEqual([1, 2, 3]);
    idx.remove(0);
    expect(idx.slots[15]).toBe(1);
    expect(Array.from(idx.slots.subarray(0, 3))).toEqual([2, 3, -1]);
    expect(idx.check()).toBeNull();
  });
});

describe('RecentTable against a model (seeded)', () => {
  it('set / update / remove / eviction agree with a Map in LRU order', () => {
    const opArb = fc.record({
      kind: fc.constantFrom('set', 'update', 'remove'),
      addr: fc.integer({ min: 0, max: 23 }).map((a) => (0x0a000000 + a * 7919) >>> 0),
    });
    fc.assert(fc.property(fc.array(opArb, { maxLength: 200 }), fc.integer({ min: 1, max: 12 }), (seq, max) => {
      const t = new RecentTable('model', max, 2);
      const model = new Map<number, number>(); // addr -> stamp; Map order = LRU order (oldest first)
      let now = 0;
      for (const op of seq) {
        now += 1;
        if (op.kind === 'set') {
          t.set(op.addr, now);
          if (!model.delete(op.addr) && model.size >= max) model.delete(model.keys().next().value!);
          model.set(op.addr, now);
        } else {
          const e = t.find(op.addr);
          expect(e >= 0).toBe(model.has(op.addr));
          if (e < 0) continue;
          if (op.kind === 'update') {
            t.touch(e, now);
            model.delete(op.addr);
            model.set(op.addr, now);
          } else {
            t.removeSlot(e);
            model.delete(op.addr);
          }
        }
        expect(t.check()).toBeNull();
        expect(t.size).toBe(model.size);
        for (let a = 0; a < 24; a++) {
          const addr = (0x0a000000 + a * 7919) >>> 0;
          expect(t.lastSeen(addr)).toBe(model.get(addr) ?? -1);
        }
      }
    }), { seed: SEED, numRuns: 300 });
  });
});
