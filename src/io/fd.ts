// BatchFd: what TunDevice and IpipSocket share: an fd, its native counters, and libuv readiness.
//
// Readiness: onReadable(cb) arms a libuv uv_poll_t on the fd; cb() runs on the event loop with no
// arguments when the fd is readable. If the poll itself fails (fd gone), libuv stops the watcher and
// cb() is called once more: the caller's next read() throws the real error. close() is idempotent,
// stops the poller before closing the fd, and leaves nothing that keeps the process alive.

import type { PacketBatch } from './batch';
import { READ_STAT, WRITE_STAT, type NativeAddon, type PollHandle } from './native';

/** Snapshot of a device's native counters (meanings: READ_STAT / WRITE_STAT in native.ts). */
export interface PacketIoStats {
  readPackets: number;
  readBytes: number;
  readOversizeDrops: number;
  /** read()/readv()/recvmmsg() calls, the final EAGAIN one of each drain included. */
  readCalls: number;
  readErrors: number;
  lastReadErrno: number;
  writePackets: number;
  writeBytes: number;
  writeBackpressureDrops: number;
  writeErrors: number;
  lastWriteErrno: number;
  /** write()/writev()/sendmmsg() calls. */
  writeCalls: number;
}

export abstract class BatchFd {
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

  /** The one native call that fills `batch` (slots from 0); returns the packet count. */
  protected abstract readNative(batch: PacketBatch): number;

  /** The one native call that writes packets i < count of `batch`; returns how many were written. */
  protected abstract writeNative(batch: PacketBatch, count: number): number;

  /** Fills the batch with one native call; sets batch.count; 0 when nothing is ready. */
  read(batch: PacketBatch): number {
    if (this.closedFlag) this.assertOpen();
    const n = this.readNative(batch);
    batch.count = n;
    return n;
  }

  /**
   * Writes packets i < count (default batch.count) with lens[i] > 0, in one native call; returns how
   * many were written. Never throws for a bad packet: rejected packets are counted in writeErrors,
   * packets left unwritten by EAGAIN/ENOBUFS in writeBackpressureDrops. Throws only if the fd is gone.
   */
  write(batch: PacketBatch, count?: number): number {
    if (this.closedFlag) this.assertOpen();
    return this.writeNative(batch, count === undefined ? batch.count : count);
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  protected assertOpen(): void {
    if (this.closedFlag) throw new Error(`${this.describe()} is closed`);
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

  /** A snapshot object of the counters (allocates: per scrape, not per packet). */
  stats(): PacketIoStats {
    const r = this.readStats;
    const w = this.writeStats;
    return {
      readPackets: r[READ_STAT.PACKETS],
      readBytes: r[READ_STAT.BYTES],
      readOversizeDrops: r[READ_STAT.OVERSIZE],
      readCalls: r[READ_STAT.CALLS],
      readErrors: r[READ_STAT.ERRORS],
      lastReadErrno: r[READ_STAT.LAST_ERRNO],
      writePackets: w[WRITE_STAT.PACKETS],
      writeBytes: w[WRITE_STAT.BYTES],
      writeBackpressureDrops: w[WRITE_STAT.BACKPRESSURE],
      writeErrors: w[WRITE_STAT.ERRORS],
      lastWriteErrno: w[WRITE_STAT.LAST_ERRNO],
      writeCalls: w[WRITE_STAT.CALLS],
    };
  }
}
