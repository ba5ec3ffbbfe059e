// TunDevice: a TUN device read and written in batches (PacketBatch) through the native addon.
//
// Plain (default): IFF_TUN | IFF_NO_PI, O_NONBLOCK, TUNSETOFFLOAD(0): every read is one plain
// IPv4/IPv6 packet with complete checksums, as before offloads existed.
// { vnetHdr: true }: IFF_VNET_HDR with a 10-byte virtio_net_hdr per packet, and (unless
// offload: false) TUNSETOFFLOAD(CSUM|TSO4|TSO6, plus USO4|USO6 where the kernel has them). Reads
// then return GSO super-packets of up to 64 KiB (read them into a PacketBatch(n, OFFLOAD_SLOT_SIZE))
// and packets whose L4 checksum holds only the pseudo-header sum (VIRTIO_NET_HDR_F_NEEDS_CSUM); the
// header's fields land in batch.vnet and go back to the kernel from there on write (see batch.ts).
// A kernel that refuses a flag is not an error: `vnetHdr`, `offload` and `vnetRefused` say what
// took effect, for the daemon to log (offloadNames(t.offload)).

import { HEADROOM, type PacketBatch } from './batch';
import { BatchFd } from './fd';
import { loadNative, type NativeAddon, type OpenTunOptions, type OpenTunResult } from './native';

export class TunDevice extends BatchFd {
  readonly name: string;
  /** IFF_VNET_HDR is on: reads fill batch.vnet, writes send it. */
  readonly vnetHdr: boolean;
  /** TUN_F bits in effect (0 = no offloads). */
  readonly offload: number;
  /** The offload set asked for first (0 when none). */
  readonly offloadRequested: number;
  /** Why the vnet header was refused ("<ioctl>: <errno text>"), when it was asked for and refused. */
  readonly vnetRefused: string | undefined;

  private constructor(native: NativeAddon, r: OpenTunResult) {
    super(native, r.fd);
    this.name = r.name;
    this.vnetHdr = r.vnetHdr;
    this.offload = r.offload;
    this.offloadRequested = r.offloadRequested;
    this.vnetRefused = r.vnetRefused;
  }

  /**
   * Opens (creating if needed) TUN device `name`; '' lets the kernel choose. Throws e.g.
   * "TUNSETIFF kt0: Operation not permitted"; never throws for a refused optional offload.
   */
  static open(name: string, opts?: OpenTunOptions): TunDevice {
    const native = loadNative();
    return new TunDevice(native, native.openTun(name, opts));
  }

  protected describe(): string {
    return `TunDevice ${this.name}`;
  }

  protected readNative(b: PacketBatch): number {
    const vnet = this.vnetHdr ? b.vnet : undefined;
    return this.native.readBatch(this.fd, b.slab, b.offs, b.lens, b.slotSize, HEADROOM, b.capacity, this.readStats, vnet);
  }

  protected writeNative(b: PacketBatch, count: number): number {
    return this.native.writeBatch(this.fd, b.slab, b.offs, b.lens, count, this.writeStats, this.vnetHdr ? b.vnet : undefined);
  }
}
