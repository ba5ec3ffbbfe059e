// A connection tuple (the kernel's nf_conntrack_tuple, gVisor's tupleID): what lookup, create
// and the MASQUERADE port choice take instead of five loose numbers. Callers keep a few
// preallocated tuples and overwrite them per packet, so the hot path allocates nothing, and
// every Tuple has the same shape, so the calls taking one stay monomorphic.
//
// Storage is four int32 words, already in the form the table hashes and compares (proto, src,
// dst, sport<<16|dport): addresses are 32-bit, so plain object fields would hold them as boxed
// doubles, which measured ~5 ns slower per lookup. The accessors give addresses as unsigned
// 32-bit host order and ports as 0..65535.
//
// ICMP queries use (1, src, dst, id, 0) in both directions: the id plays the source port, the
// destination port is 0.
import { IPPROTO_ICMP } from '../netstack/proto';

export class Tuple {
  /** [proto, src, dst, sport << 16 | dport] as int32: read by the table directly. */
  readonly w = new Int32Array(4);

  constructor(proto = 0, src = 0, dst = 0, sport = 0, dport = 0) {
    this.set(proto, src, dst, sport, dport);
  }

  get proto(): number { return this.w[0]; }
  set proto(v: number) { this.w[0] = v & 0xff; }
  get src(): number { return this.w[1] >>> 0; }
  set src(v: number) { this.w[1] = v; }
  get dst(): number { return this.w[2] >>> 0; }
  set dst(v: number) { this.w[2] = v; }
  get sport(): number { return this.w[3] >>> 16; }
  set sport(v: number) { this.w[3] = (this.w[3] & 0xffff) | ((v & 0xffff) << 16); }
  get dport(): number { return this.w[3] & 0xffff; }
  set dport(v: number) { this.w[3] = (this.w[3] & ~0xffff) | (v & 0xffff); }

  set(proto: number, src: number, dst: number, sport: number, dport: number): this {
    const w = this.w;
    w[0] = proto & 0xff;
    w[1] = src;
    w[2] = dst;
    w[3] = ((sport & 0xffff) << 16) | (dport & 0xffff);
    return this;
  }

  copyFrom(t: Tuple): this {
    this.w.set(t.w);
    return this;
  }

  /**
   * This tuple becomes the inverse of `t` (nf_ct_invert_tuple): what a packet of the same flow in
   * the other direction carries. Addresses swap; ports swap, except ICMP's (id, 0) which stays.
   * `t` may be this tuple.
   */
  invertOf(t: Tuple): this {
    const w = this.w, v = t.w;
    const proto = v[0], src = v[1], ports = v[3];
    w[0] = proto;
    w[1] = v[2];
    w[2] = src;
    w[3] = proto === IPPROTO_ICMP ? ports & ~0xffff : (ports >>> 16) | (ports << 16);
    return this;
  }

  equals(t: Tuple): boolean {
    const w = this.w, v = t.w;
    return w[0] === v[0] && w[1] === v[1] && w[2] === v[2] && w[3] === v[3];
  }
}
