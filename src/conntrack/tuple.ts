// A connection tuple (the kernel's nf_conntrack_tuple, gVisor's tupleID): what lookup, create
// and the MASQUERADE port choice take instead of five loose numbers. Callers keep a few
// preallocated tuples and overwrite them per packet, so the hot path allocates nothing, and
// every Tuple has the same hidden class, so the calls taking one stay monomorphic.
//
// Addresses are unsigned 32-bit host order, ports 0..65535. ICMP queries use (1, src, dst, id, 0)
// in both directions: the id plays the source port, the destination port is 0.
import { IPPROTO_ICMP } from '../netstack/proto';

export class Tuple {
  proto: number;
  src: number;
  dst: number;
  sport: number;
  dport: number;

  constructor(proto = 0, src = 0, dst = 0, sport = 0, dport = 0) {
    this.proto = proto;
    this.src = src;
    this.dst = dst;
    this.sport = sport;
    this.dport = dport;
  }

  set(proto: number, src: number, dst: number, sport: number, dport: number): this {
    this.proto = proto;
    this.src = src;
    this.dst = dst;
    this.sport = sport;
    this.dport = dport;
    return this;
  }

  copyFrom(t: Tuple): this {
    return this.set(t.proto, t.src, t.dst, t.sport, t.dport);
  }

  /**
   * This tuple becomes the inverse of `t` (nf_ct_invert_tuple): what a packet of the same flow in
   * the other direction carries. Addresses swap; ports swap, except ICMP's (id, 0) which stays.
   * `t` may be this tuple.
   */
  invertOf(t: Tuple): this {
    const src = t.src, sport = t.sport;
    if (t.proto === IPPROTO_ICMP) return this.set(t.proto, t.dst, src, sport, 0);
    return this.set(t.proto, t.dst, src, t.dport, sport);
  }

  equals(t: Tuple): boolean {
    return this.proto === t.proto && this.src === t.src && this.dst === t.dst && this.sport === t.sport && this.dport === t.dport;
  }
}
