// Per-packet remote-node lookups in O(1) for any number of nodes: which remote node owns the pod
// CIDR a destination falls in (-> IPIP to it), and which remote node an IPIP outer source is.
//
// Pod CIDRs are grouped by prefix length; each group is a HashIndex keyed by (addr & mask), so a
// lookup costs one probe per distinct prefix length (usually one: every node gets a /24), not one
// comparison per node. Groups are tried most specific first, so overlapping CIDRs resolve by
// longest prefix, as the kernel's routes to them do (the linear scan this replaced took the first
// node in list order; CIDRs that Kubernetes allocates never overlap, where both agree). Among
// equal CIDRs (or equal node IPs) the first node listed wins, as before: with insertions only, the
// earlier entry sits earlier on the probe run.
import { HashIndex } from '../lib/hash-index';

export interface RemoteEntry { nodeIP: number; podNet: number; podMask: number }

/** 32-bit mix (murmur3's finalizer) of a key: (addr & mask) values differ mostly in their high bits. */
function mix(k: number): number {
  k = Math.imul(k ^ (k >>> 16), 0x85ebca6b);
  k = Math.imul(k ^ (k >>> 13), 0xc2b2ae35);
  return (k ^ (k >>> 16)) | 0;
}

export class RemoteIndex {
  /** Underlay address of remote node r (the IPIP outer destination). */
  readonly nodeIP: Uint32Array;
  private readonly podNet: Uint32Array;
  /** Distinct masks, most specific first, and one index over the nodes with each. */
  private readonly groupMask: Uint32Array;
  private readonly groups: HashIndex[];
  private readonly byNode: HashIndex;

  constructor(nodes: readonly RemoteEntry[]) {
    const n = nodes.length;
    this.nodeIP = new Uint32Array(n); this.podNet = new Uint32Array(n); const podMask = new Uint32Array(n);
    const netHash = new Int32Array(n), ipHash = new Int32Array(n);
    nodes.forEach((r, i) => {
      this.nodeIP[i] = r.nodeIP; this.podNet[i] = r.podNet; podMask[i] = r.podMask;
      netHash[i] = mix(this.podNet[i]); ipHash[i] = mix(r.nodeIP);
    });
    // Unsigned descending order of contiguous masks is longest prefix first.
    const masks = [...new Set(podMask)].sort((a, b) => b - a);
    this.groupMask = Uint32Array.from(masks);
    this.groups = masks.map((mask) => {
      const members: number[] = [];
      for (let i = 0; i < n; i++) if (podMask[i] === mask) members.push(i);
      const idx = new HashIndex(2 * members.length, netHash);
      for (const i of members) idx.insert(i, netHash[i]);
      return idx;
    });
    this.byNode = new HashIndex(2 * n, ipHash);
    for (let i = 0; i < n; i++) this.byNode.insert(i, ipHash[i]);
  }

  get size(): number {
    return this.nodeIP.length;
  }

  /** The remote node whose pod CIDR holds `addr` (longest prefix), or -1. */
  byPodAddr(addr: number): number {
    const gm = this.groupMask, net = this.podNet;
    for (let g = 0; g < gm.length; g++) {
      const mask = gm[g], key = (addr & mask) >>> 0;
      const idx = this.groups[g], slots = idx.slots, m = idx.mask;
      for (let i = mix(key) & m; ; i = (i + 1) & m) {
        const v = slots[i];
        if (v < 0) break;
        if (net[v] === key) return v; // every member of group g has mask gm[g]
      }
    }
    return -1;
  }

  /** The remote node whose underlay address is `addr`, or -1. */
  byNodeIP(addr: number): number {
    const slots = this.byNode.slots, m = this.byNode.mask, ips = this.nodeIP, key = addr >>> 0;
    for (let i = mix(key) & m; ; i = (i + 1) & m) {
      const v = slots[i];
      if (v < 0) return -1;
      if (ips[v] === key) return v;
    }
  }
}
