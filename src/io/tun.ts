// TUN device and raw IPIP socket I/O in batches, over the native addon in native/tun.cc.
//
// The udx-native model: one slab per PacketBatch, shared with native code; packet i lives at
// slab[offs[i] .. offs[i] + lens[i]). A read fills the batch with ONE native call (read() in a loop
// until EAGAIN or capacity), a write sends it with ONE native call. Nothing is allocated per packet.
// Packets are read HEADROOM bytes into their SLOT_SIZE slot, so IPIP encapsulation can prepend its
// 20-byte outer header in place.
//
// Counters (zero-allocation, for metrics): every device/socket owns two Float64Arrays the native side
// accumulates into, indexed by READ_STAT / WRITE_STAT below. `stats()` returns a snapshot object.
//   write errors: `writeErrors` (packets the kernel rejected: EINVAL/EIO/...; skipped, never thrown),
//   `writeBackpressureDrops` (EAGAIN/ENOBUFS stopped a batch; the rest of it was not written),
//   `lastWriteErrno`.
//   reads: `readOversizeDrops` (packets longer than SLOT_SIZE - HEADROOM - 1 bytes, discarded).
//
// Readiness: onReadable(cb) arms a libuv uv_poll_t on the fd; cb() runs on the event loop with no
// arguments when the fd is readable. If the poll itself fails (fd gone), libuv stops the watcher and
// cb() is called once more: the caller's next read() throws the real error. close() is idempotent,
// stops the poller before closing the fd, and leaves nothing that keeps the process alive.

import * as fs from 'node:fs';
import * as path from 'node:path';

export const SLOT_SIZE = 2048; // bytes per packet slot in a batch slab
export const HEADROOM = 64; // packets are read at slot*SLOT_SIZE + HEADROOM so IPIP can prepend 20 bytes in place
/** Largest packet a read can return: a read that fills the whole room is treated as truncated. */
export const MAX_READ_PACKET = SLOT_SIZE - HEADROOM - 1;

/** Indices into `readStats` (must match native/tun.cc READ_STAT_*). */
export const READ_STAT = { PACKETS: 0, BYTES: 1, OVERSIZE: 2, LEN: 3 } as const;
/** Indices into `writeStats` (must match native/tun.cc WRITE_STAT_*). */
export const WRITE_STAT = { PACKETS: 0, BYTES: 1, BACKPRESSURE: 2, ERRORS: 3, LAST_ERRNO: 4, LEN: 5 } as const;

/** Opaque uv_poll handle returned by the addon. */
type PollHandle = object;

/** The addon's exports (native/tun.cc). */
export interface NativeAddon {
  openTun(name: string): { fd: number; name: string };
  openIpipSocket(): number;
  readBatch(
    fd: number,
    slab: Buffer,
    offs: Uint32Array,
    lens: Uint32Array,
    slotSize: number,
    headroom: number,
    capacity: number,
    stats?: Float64Array,
  ): number;
  writeBatch(fd: number, slab: Buffer, offs: Uint32Array, lens: Uint32Array, count: number, stats?: Float64Array): number;
  pollStart(fd: number, callback: () => void): PollHandle;
  pollStop(handle: PollHandle): void;
  closeFd(fd: number): void;
  statsLayout: Record<string, number>;
}

let addon: NativeAddon | undefined;

/** Directory holding package.json, found by walking up from this file (works from src/ and dist/src/). */
function packageRoot(): string {
  const start = typeof __dirname === 'string' ? __dirname : process.cwd();
  let dir = start;
  for (let i = 0; i < 16; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`kube-tun: no package.json above ${start}`);
}

/** Loads build/Release/kube_tun_native.node once (lazily: importing this module never needs it). */
export function loadNative(): NativeAddon {
  if (addon !== undefined) return addon;
  const file = path.join(packageRoot(), 'build', 'Release', 'kube_tun_native.node');
  if (!fs.existsSync(file)) {
    throw new Error(`kube-tun native addon not built: ${file} is missing (run \`npx node-gyp rebuild\`)`);
  }
  const mod = { exports: {} as NativeAddon };
  process.dlopen(mod, file);
  const a = mod.exports;
  const l = a.statsLayout;
  if (
    l.READ_STAT_OVERSIZE !== READ_STAT.OVERSIZE ||
    l.READ_STAT_LEN !== READ_STAT.LEN ||
    l.WRITE_STAT_ERRORS !== WRITE_STAT.ERRORS ||
    l.WRITE_STAT_LEN !== WRITE_STAT.LEN
  ) {
    throw new Error(`kube-tun native addon ${file} is stale (stats layout differs): rebuild it`);
  }
  addon = a;
  return a;
}

export class PacketBatch {
  readonly capacity: number;
  readonly slab: Buffer; // capacity * SLOT_SIZE
  readonly offs: Uint32Array; // start offset of packet i in slab
  readonly lens: Uint32Array; // length of packet i; 0 = dropped / do not write
  count = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity * SLOT_SIZE > 0xffffffff) {
      throw new RangeError(`PacketBatch capacity must be an integer in 1..${Math.floor(0xffffffff / SLOT_SIZE)}`);
    }
    this.capacity = capacity;
    this.slab = Buffer.alloc(capacity * SLOT_SIZE);
    this.offs = new Uint32Array(capacity);
    this.lens = new Uint32Array(capacity);
  }

  /** Where a read puts packet i: i * SLOT_SIZE + HEADROOM. */
  slotOffset(i: number): number {
    return i * SLOT_SIZE + HEADROOM;
  }

  /** Copies `bytes` into the next free slot (at its headroom) and returns its index. Tooling/tests, not the hot path. */
  push(bytes: Uint8Array): number {
    const i = this.count;
    if (i >= this.capacity) throw new RangeError('PacketBatch is full');
    if (bytes.length > SLOT_SIZE - HEADROOM) throw new RangeError(`packet of ${bytes.length} bytes does not fit a slot`);
    const off = this.slotOffset(i);
    this.slab.set(bytes, off);
    this.offs[i] = off;
    this.lens[i] = bytes.length;
    this.count = i + 1;
    return i;
  }

  /** A view of packet i (allocates a Buffer view: tooling/tests, not the hot path). */
  packet(i: number): Buffer {
    return this.slab.subarray(this.offs[i], this.offs[i] + this.lens[i]);
  }
}

/** Snapshot of a device's counters. */
export interface PacketIoStats {
  readPackets: number;
  readBytes: number;
  readOversizeDrops: number;
  writePackets: number;
  writeBytes: number;
  writeBackpressureDrops: number;
  writeErrors: number;
  lastWriteErrno: number;
}

/** Shared by TunDevice and IpipSocket: an fd read in batches and polled with libuv. */
abstract class BatchFd {
  readonly fd: number;
  readonly readStats = new Float64Array(READ_STAT.LEN);
  readonly writeStats = new Float64Array(WRITE_STAT.LEN);
  protected readonly native: NativeAddon;
  private poll: PollHandle | null = null;
  private closedFlag = false;

  protected constructor(native: NativeAddon, fd: number) {
    this.native = native;
    this.fd = fd;
  }

  protected abstract describe(): string;

  get closed(): boolean {
    return this.closedFlag;
  }

  protected assertOpen(): void {
    if (this.closedFlag) throw new Error(`${this.describe()} is closed`);
  }

  /** Fills the batch with one native call; sets batch.count; 0 when nothing is ready. */
  read(batch: PacketBatch): number {
    if (this.closedFlag) this.assertOpen();
    const n = this.native.readBatch(
      this.fd,
      batch.slab,
      batch.offs,
      batch.lens,
      SLOT_SIZE,
      HEADROOM,
      batch.capacity,
      this.readStats,
    );
    batch.count = n;
    return n;
  }

  /** Calls cb (no arguments, on the event loop) whenever the fd is readable. Replaces an earlier cb. */
  onReadable(cb: () => void): void {
    this.assertOpen();
    this.offReadable();
    this.poll = this.native.pollStart(this.fd, cb);
  }

  /** Stops readiness callbacks (back-pressure, shutdown). Idempotent. */
  offReadable(): void {
    const p = this.poll;
    if (p !== null) {
      this.poll = null;
      this.native.pollStop(p);
    }
  }

  /** Stops the poller, then closes the fd. Idempotent. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.offReadable();
    this.native.closeFd(this.fd);
  }

  get readOversizeDrops(): number {
    return this.readStats[READ_STAT.OVERSIZE];
  }
  get writeErrors(): number {
    return this.writeStats[WRITE_STAT.ERRORS];
  }
  get writeBackpressureDrops(): number {
    return this.writeStats[WRITE_STAT.BACKPRESSURE];
  }
  get lastWriteErrno(): number {
    return this.writeStats[WRITE_STAT.LAST_ERRNO];
  }

  stats(): PacketIoStats {
    const r = this.readStats;
    const w = this.writeStats;
    return {
      readPackets: r[READ_STAT.PACKETS],
      readBytes: r[READ_STAT.BYTES],
      readOversizeDrops: r[READ_STAT.OVERSIZE],
      writePackets: w[WRITE_STAT.PACKETS],
      writeBytes: w[WRITE_STAT.BYTES],
      writeBackpressureDrops: w[WRITE_STAT.BACKPRESSURE],
      writeErrors: w[WRITE_STAT.ERRORS],
      lastWriteErrno: w[WRITE_STAT.LAST_ERRNO],
    };
  }
}

/** IFF_TUN | IFF_NO_PI, O_NONBLOCK, TUNSETOFFLOAD(0): every read is one plain IPv4/IPv6 packet. */
export class TunDevice extends BatchFd {
  readonly name: string;

  private constructor(native: NativeAddon, fd: number, name: string) {
    super(native, fd);
    this.name = name;
  }

  /** Opens (creating if needed) TUN device `name`; '' lets the kernel choose. Throws e.g. "TUNSETIFF kt0: Operation not permitted". */
  static open(name: string): TunDevice {
    const native = loadNative();
    const r = native.openTun(name);
    return new TunDevice(native, r.fd, r.name);
  }

  protected describe(): string {
    return `TunDevice ${this.name}`;
  }

  /**
   * Writes packets i < count (default batch.count) with lens[i] > 0, in one native call; returns how
   * many were written. Never throws for a bad packet: rejected packets are counted in writeErrors,
   * packets left unwritten by EAGAIN/ENOBUFS in writeBackpressureDrops. Throws only if the fd is gone.
   */
  write(batch: PacketBatch, count?: number): number {
    if (this.closed) this.assertOpen();
    return this.native.writeBatch(
      this.fd,
      batch.slab,
      batch.offs,
      batch.lens,
      count === undefined ? batch.count : count,
      this.writeStats,
    );
  }
}

/**
 * Raw socket AF_INET/SOCK_RAW/IPPROTO_IPIP: receives every IPIP packet delivered to this host, outer
 * IPv4 header included. While it is open the kernel does not answer IPIP with protocol-unreachable
 * (unless an ipip/tunnel4 module claims the protocol).
 */
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
}
