// PacketBatch: one slab of packet slots shared with the native addon (the udx-native model).
//
// Packet i lives at slab[offs[i] .. offs[i] + lens[i]); a read puts it HEADROOM bytes into slot i
// (at i * slotSize + HEADROOM), so IPIP encapsulation can prepend its 20-byte outer header in place.
// A read fills the batch with ONE native call, a write sends it with ONE native call; nothing is
// allocated per packet.
//
// Slot size is per batch: SLOT_SIZE (2048) for plain packets, as before; OFFLOAD_SLOT_SIZE for a
// TUN opened with the vnet header and TSO, whose reads return GSO super-packets of up to 64 KiB.
//
// vnet header: the native side strips the 10-byte virtio_net_hdr on read and rebuilds it on write,
// so the IP packet starts at offs[i] with or without it. Its fields live in `vnet` (a Uint16Array,
// VNET.FIELDS per packet: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; see VNET in
// native.ts). Only a TUN opened with vnetHdr reads or writes them; an IpipSocket read zeroes the
// entries of the packets it returns (plain packets: no offload, no checksum to finish), so a batch
// read from the raw socket can be written to a vnet TUN as is. A packet built by hand (push) gets a
// zero header too. Whoever rewrites a packet's length or headers keeps its vnet entry consistent.

import { VNET } from './native';

export const SLOT_SIZE = 2048; // default bytes per packet slot
export const HEADROOM = 64; // packets are read at slot*slotSize + HEADROOM so IPIP can prepend 20 bytes in place
/** Largest packet a read into a default batch can return: a read that fills the whole room is treated as truncated. */
export const MAX_READ_PACKET = SLOT_SIZE - HEADROOM - 1;
/** Slot size for batches read from an offloading TUN: a 65,535-byte IP packet + HEADROOM fits. */
export const OFFLOAD_SLOT_SIZE = 65_600;

export class PacketBatch {
  readonly capacity: number;
  readonly slotSize: number;
  readonly slab: Buffer; // capacity * slotSize
  readonly offs: Uint32Array; // start offset of packet i in slab
  readonly lens: Uint32Array; // length of packet i; 0 = dropped / do not write
  readonly vnet: Uint16Array; // capacity * VNET.FIELDS virtio_net_hdr fields (see the file header)
  count = 0;

  constructor(capacity: number, slotSize: number = SLOT_SIZE) {
    if (!Number.isInteger(slotSize) || slotSize <= HEADROOM) {
      throw new RangeError(`PacketBatch slotSize must be an integer above HEADROOM (${HEADROOM})`);
    }
    if (!Number.isInteger(capacity) || capacity < 1 || capacity * slotSize > 0xffffffff) {
      throw new RangeError(`PacketBatch capacity must be an integer in 1..${Math.floor(0xffffffff / slotSize)}`);
    }
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.slab = Buffer.alloc(capacity * slotSize);
    this.offs = new Uint32Array(capacity);
    this.lens = new Uint32Array(capacity);
    this.vnet = new Uint16Array(capacity * VNET.FIELDS);
  }

  /** Largest packet a read into this batch returns (longer ones are dropped and counted as oversize). */
  get maxPacket(): number {
    return this.slotSize - HEADROOM - 1;
  }

  /** Where a read puts packet i: i * slotSize + HEADROOM. */
  slotOffset(i: number): number {
    return i * this.slotSize + HEADROOM;
  }

  /** Copies `bytes` into the next free slot (at its headroom), zeroes its vnet header, returns its index. Tooling/tests, not the hot path. */
  push(bytes: Uint8Array): number {
    const i = this.count;
    if (i >= this.capacity) throw new RangeError('PacketBatch is full');
    if (bytes.length > this.slotSize - HEADROOM) throw new RangeError(`packet of ${bytes.length} bytes does not fit a slot`);
    const off = this.slotOffset(i);
    this.slab.set(bytes, off);
    this.offs[i] = off;
    this.lens[i] = bytes.length;
    this.vnet.fill(0, i * VNET.FIELDS, (i + 1) * VNET.FIELDS);
    this.count = i + 1;
    return i;
  }

  /** A view of packet i (allocates a Buffer view: tooling/tests, not the hot path). */
  packet(i: number): Buffer {
    return this.slab.subarray(this.offs[i], this.offs[i] + this.lens[i]);
  }
}
