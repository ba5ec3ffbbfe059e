// Packet capture in classic pcap format (what `tcpdump -w` writes and `tshark -r` / Wireshark
// read): 24-byte global header, then per packet a 16-byte record header and the bytes.
//
//   global header (little-endian, as written on x86/arm64 Linux):
//     magic 0xa1b2c3d4 (microsecond timestamps), version 2.4, thiszone 0, sigfigs 0,
//     snaplen, linktype
//   record header: ts_sec, ts_usec, incl_len (bytes stored, <= snaplen), orig_len
//
// Link type: LINKTYPE_RAW (101) by default: the packet starts with the IP header and the
// version nibble says IPv4. It is what tcpdump itself writes for a TUN device (`tcpdump -i kt0
// -w`), so every reader handles it; tshark 4.0 decodes it as "Raw packet data" -> IPv4.
// LINKTYPE_IPV4 (228) is available through `linktype: 228` (also decoded as IPv4 by tshark).
//
// Cost: one fs.writeSync per batch of one assembled buffer (a reusable staging buffer; it only
// grows when a batch needs more), and one clock read per batch. Nothing is allocated per packet.
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';

export const PCAP_MAGIC = 0xa1b2c3d4;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_IPV4 = 228;
export const PCAP_GLOBAL_HEADER_LEN = 24;
export const PCAP_RECORD_HEADER_LEN = 16;
export const DEFAULT_SNAPLEN = 65535;

/** What writeBatch needs from a PacketBatch (src/io/batch.ts), structurally. */
export interface BatchView {
  readonly slab: Buffer;
  readonly offs: Uint32Array;
  readonly lens: Uint32Array;
  count: number;
}

export interface PcapWriterOptions {
  /** Stop after this many packets (0 / undefined = no limit). The file is closed when reached. */
  maxPackets?: number;
  /** Bytes stored per packet (default 65535); longer packets are truncated, orig_len keeps the length. */
  snaplen?: number;
  /** LINKTYPE_RAW (101, default) or LINKTYPE_IPV4 (228). */
  linktype?: number;
}

/** Wall-clock µs for a monotonic performance.now() reading (the hot path's nowMs). */
function wallMicros(nowMs: number): number {
  return Math.floor((performance.timeOrigin + nowMs) * 1000);
}

export class PcapWriter {
  readonly file: string;
  readonly maxPackets: number;
  readonly snaplen: number;
  private fd: number;
  private stage: Buffer;
  private n = 0;

  /** Creates (truncates) `file` and writes the global header. Throws if the file cannot be opened. */
  constructor(file: string, opts: PcapWriterOptions = {}) {
    this.file = file;
    this.maxPackets = opts.maxPackets && opts.maxPackets > 0 ? Math.floor(opts.maxPackets) : 0;
    this.snaplen = opts.snaplen && opts.snaplen > 0 ? Math.min(Math.floor(opts.snaplen), 262144) : DEFAULT_SNAPLEN;
    const linktype = opts.linktype ?? LINKTYPE_RAW;
    this.stage = Buffer.allocUnsafe(64 * 1024);
    this.fd = fs.openSync(file, 'w', 0o600);
    const h = this.stage;
    h.writeUInt32LE(PCAP_MAGIC, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeInt32LE(0, 8);        // thiszone: timestamps are UTC
    h.writeUInt32LE(0, 12);      // sigfigs
    h.writeUInt32LE(this.snaplen, 16);
    h.writeUInt32LE(linktype, 20);
    this.writeAll(PCAP_GLOBAL_HEADER_LEN);
  }

  /** Packets written so far. */
  get written(): number { return this.n; }
  /** True once maxPackets were written (the file is then closed) or after close(). */
  get closed(): boolean { return this.fd < 0; }

  /**
   * Appends packets 0..count-1 of the batch (lens[i] == 0 = dropped, skipped). `nowMs` is the
   * batch's monotonic clock (performance.now(), as the pipeline gets it); one timestamp is used
   * for the whole batch. Throws on write errors (ENOSPC, ...); the caller decides (PcapTap disables).
   */
  writeBatch(slab: Buffer, offs: Uint32Array, lens: Uint32Array, count: number, nowMs: number = performance.now()): void {
    if (this.fd < 0) return;
    const limit = this.maxPackets;
    const snaplen = this.snaplen;
    // Size of what this batch adds, to grow the staging buffer before filling it.
    let need = 0, take = 0;
    for (let i = 0; i < count; i++) {
      const len = lens[i];
      if (len === 0) continue;
      if (limit !== 0 && this.n + take >= limit) break;
      need += PCAP_RECORD_HEADER_LEN + (len < snaplen ? len : snaplen);
      take++;
    }
    if (take === 0) return;
    if (need > this.stage.length) this.stage = Buffer.allocUnsafe(Math.max(need, this.stage.length * 2));
    const us = wallMicros(nowMs);
    const sec = Math.floor(us / 1e6), usec = us - sec * 1e6;
    const st = this.stage;
    let at = 0, done = 0;
    for (let i = 0; i < count && done < take; i++) {
      const len = lens[i];
      if (len === 0) continue;
      const incl = len < snaplen ? len : snaplen;
      st.writeUInt32LE(sec, at);
      st.writeUInt32LE(usec, at + 4);
      st.writeUInt32LE(incl, at + 8);
      st.writeUInt32LE(len, at + 12);
      slab.copy(st, at + PCAP_RECORD_HEADER_LEN, offs[i], offs[i] + incl);
      at += PCAP_RECORD_HEADER_LEN + incl;
      done++;
    }
    this.writeAll(at);
    this.n += done;
    if (limit !== 0 && this.n >= limit) this.close();
  }

  /** Flushes nothing (writes are synchronous) and closes the file. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    fs.closeSync(fd);
  }

  private writeAll(len: number): void {
    let off = 0;
    while (off < len) off += fs.writeSync(this.fd, this.stage, off, len - off);
  }
}

export interface PcapStatus {
  enabled: boolean;
  file?: string;
  written?: number;
  maxPackets?: number;
  /** Why the last capture ended early ("maxPackets reached", "write error: ENOSPC", ...). */
  stopped?: string;
}

/**
 * The daemon's capture point. One tap, one file: `ingress(batch)` right after a read (before
 * NAT; IPIP packets from the raw socket still carry their outer header), `egress(batch)` right
 * before the write (after NAT; packets sent to other nodes already IPIP-encapsulated; dropped
 * packets, lens 0, are not in the file). Both are a single branch when disabled. Classic pcap has
 * no direction field: a batch's ingress records are followed by its egress records.
 *
 * A write error closes the capture (reported through onStop, and in status()); it never throws
 * into the batch loop.
 */
export class PcapTap {
  private w: PcapWriter | null = null;
  private last: PcapStatus = { enabled: false };

  constructor(private readonly opts: { snaplen?: number; linktype?: number; onStop?: (status: PcapStatus) => void } = {}) {}

  get enabled(): boolean { return this.w !== null; }

  /** Starts capturing into `file` (truncated), replacing a running capture. Throws if the file cannot be created. */
  enable(file: string, maxPackets = 0): void {
    const next = new PcapWriter(file, { maxPackets, snaplen: this.opts.snaplen, linktype: this.opts.linktype });
    if (this.w) this.stop('replaced by a new capture');
    this.w = next;
  }

  /** Stops capturing; returns what was captured (or null if nothing was running). */
  disable(): PcapStatus | null {
    if (!this.w) return null;
    return this.stop('disabled');
  }

  status(): PcapStatus {
    const w = this.w;
    if (!w) return this.last;
    return { enabled: true, file: w.file, written: w.written, maxPackets: w.maxPackets };
  }

  ingress(b: BatchView, nowMs?: number): void {
    if (this.w === null) return;
    this.write(b, nowMs);
  }

  egress(b: BatchView, nowMs?: number): void {
    if (this.w === null) return;
    this.write(b, nowMs);
  }

  private write(b: BatchView, nowMs: number | undefined): void {
    const w = this.w!;
    try {
      w.writeBatch(b.slab, b.offs, b.lens, b.count, nowMs);
    } catch (e: any) {
      this.stop(`write error: ${e.code ?? e.message}`);
      return;
    }
    if (w.closed) this.stop('maxPackets reached');
  }

  private stop(why: string): PcapStatus {
    const w = this.w!;
    this.w = null;
    try { w.close(); } catch { /* already reported */ }
    this.last = { enabled: false, file: w.file, written: w.written, maxPackets: w.maxPackets, stopped: why };
    this.opts.onStop?.(this.last);
    return this.last;
  }
}

/**
 * The control-socket verb for runtime toggling, so the daemon's handler is one line:
 *   case 'pcap': return pcapControl(this.tap, a);
 * args: { action: 'start', file: string, maxPackets?: number } | { action: 'stop' } | { action?: 'status' }
 * Returns the answer text (JSON); throws Error with a message for bad arguments.
 */
export function pcapControl(tap: PcapTap, args: Record<string, unknown>): string {
  const action = args.action ?? 'status';
  switch (action) {
    case 'start': {
      if (typeof args.file !== 'string' || args.file === '') throw new Error('pcap start: give "file"');
      const max = args.maxPackets === undefined ? 0 : Number(args.maxPackets);
      if (!Number.isInteger(max) || max < 0) throw new Error(`pcap start: maxPackets must be a non-negative integer, got "${args.maxPackets}"`);
      tap.enable(args.file, max);
      return JSON.stringify(tap.status()) + '\n';
    }
    case 'stop': {
      const st = tap.disable();
      return JSON.stringify(st ?? { enabled: false }) + '\n';
    }
    case 'status':
      return JSON.stringify(tap.status()) + '\n';
    default:
      throw new Error(`pcap: unknown action "${String(action)}" (start, stop, status)`);
  }
}
