// IpipSocket: the raw socket AF_INET/SOCK_RAW/IPPROTO_IPIP, read with recvmmsg() and written with
// sendmmsg(): one system call per batch instead of one per packet.
//
// It receives every IPIP packet delivered to this host, outer IPv4 header included. While it is
// open the kernel does not answer IPIP with protocol-unreachable (unless an ipip/tunnel4 module
// claims the protocol). The socket has IP_HDRINCL: write() sends whole outer packets as they are
// in the batch, each to its own IPv4 destination address.

import { HEADROOM, type PacketBatch } from './batch';
import { BatchFd } from './fd';
import { loadNative, VNET, type NativeAddon } from './native';

export class IpipSocket extends BatchFd {
  private constructor(native: NativeAddon, fd: number) {
    super(native, fd);
  }

  static open(): IpipSocket {
    const native = loadNative();
    return new IpipSocket(native, native.openIpipSocket());
  }

  protected describe(): string {
    return `IpipSocket fd ${this.fd}`;
  }

  /** One recvmmsg(); the returned packets get a zero vnet header (plain, checksums complete). */
  protected readNative(b: PacketBatch): number {
    const n = this.native.recvBatch(this.fd, b.slab, b.offs, b.lens, b.slotSize, HEADROOM, b.capacity, this.readStats);
    if (n > 0) b.vnet.fill(0, 0, n * VNET.FIELDS);
    return n;
  }

  /** sendmmsg() of whole IPv4 (outer) packets, each to its own destination address. */
  protected writeNative(b: PacketBatch, count: number): number {
    return this.native.sendBatch(this.fd, b.slab, b.offs, b.lens, count, this.writeStats);
  }
}
