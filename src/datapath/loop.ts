// The batch I/O loop: on each wakeup of the TUN fd or the IPIP socket, read a batch, hand it to
// the pipeline, write what it forwards and what it generated (ICMP errors), with the pcap tap
// seeing each batch on the way in and out. One slab serves both sources: the reads never overlap.
//
// Fault boundary: each batch runs inside one try/catch (never one per packet), so the loop never
// dies silently. What a batch can throw:
//   - the TUN or the IPIP socket is gone: a read throws EBADF/EBADFD/EIO/ENODEV/ENXIO (a TUN
//     deleted under us, `ip link del kt0`, reads EBADFD; its poll reports an error first, and the
//     native poller then calls us once more so that this read sees the errno). Fatal: the loop
//     stops polling, logs one line naming the device and errno, and calls onFdFailure (the daemon
//     stops in order: routing removed, exit non-zero).
//   - any other errno from a read: transient (e.g. an ICMP error about an IPIP packet we sent
//     left an error on the raw socket, ENOPROTOOPT when a peer runs no kube-tun). The native
//     counters have it (readErrors, lastReadErrno): logged, rate-limited, and the loop goes on.
//   - anything else is a bug in the batch's processing: the batch is lost and counted
//     (faults[FAULT_EXCEPTIONS], its packets in faults[FAULT_PACKETS], exported as the drop reason
//     `loop-exception`); the first is logged with its stack, later ones rate-limited.
import { performance } from 'node:perf_hooks';
import { constants as osConstants } from 'node:os';
import type { Logger } from 'pino';
import { PacketBatch, OFFLOAD_SLOT_SIZE, SLOT_SIZE } from '../io';
import type { TunDevice, IpipSocket } from '../io';
import type { PcapTap } from '../io/pcap';
import {
  IPIP_HEADER_LEN, IPV4_PROTO, ipv4HeaderLen, IPPROTO_IPIP, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_PORT_UNREACH,
} from '../netstack';
import type { Pipeline } from './pipeline';
import { BATCH } from './batch-size';

/** Batches per wakeup before yielding to timers and the control socket. */
const MAX_BATCHES_PER_WAKEUP = 16;
/** At most one log line per this interval for repeated loop exceptions / transient I/O errors. */
export const FAULT_LOG_INTERVAL_MS = 10_000;

/** faults[] indices: batches aborted by an exception, and the packets they held. */
export const FAULT_EXCEPTIONS = 0, FAULT_PACKETS = 1, FAULT_IO_ERRORS = 2, FAULT_LEN = 3;
/** The drop reason under which faults[FAULT_PACKETS] is exported. */
export const LOOP_EXCEPTION = 'loop-exception';

/**
 * ICMP errors kube-tun generated and handed to the TUN, by type (the `type` label of
 * kubetun_icmp_errors_sent_total). The packet that caused one is counted separately, as a drop
 * (not forwarded: e.g. frag-needed-sent); these count the answers, not the packets.
 */
export const ICMP_SENT_TYPES = ['frag-needed', 'port-unreachable', 'dest-unreachable', 'other'] as const;
const ICMP_SENT_FRAG_NEEDED = 0, ICMP_SENT_PORT_UNREACH = 1, ICMP_SENT_DEST_UNREACH = 2, ICMP_SENT_OTHER = 3;

/** Errnos that mean the fd itself is gone (Linux numbers; EBADFD is a TUN detached from its device). */
const EBADFD = 77;
const FATAL_ERRNOS = new Set([osConstants.errno.EBADF, EBADFD, osConstants.errno.EIO, osConstants.errno.ENODEV, osConstants.errno.ENXIO]);
const ERRNO_NAMES = new Map<number, string>([[EBADFD, 'EBADFD'], ...Object.entries(osConstants.errno).map(([k, v]) => [v, k] as [number, string])]);

/** Name of a positive Linux errno, e.g. 77 -> 'EBADFD'. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** What the loop reports when an fd is gone (once; it has stopped polling both sources). */
export interface FdFailure {
  /** 'kt0' for the TUN, 'ipip' for the raw IPIP socket. */
  device: string;
  syscall: string;
  errno: number;
  code: string;
  message: string;
}

export interface LoopHooks {
  log: Pick<Logger, 'error' | 'warn'>;
  onFdFailure(f: FdFailure): void;
}

const SRC_TUN = 0, SRC_IPIP = 1;
/** What the batch was doing: a native read/write of a source, or anything else (pipeline, pcap file). */
const STAGE_OTHER = 0, STAGE_IO = 1;

export class BatchLoop {
  private readonly batch: PacketBatch;
  /** Indexed by FAULT_*; read by `kube-tun stats` and /metrics. */
  readonly faults = new Float64Array(FAULT_LEN);
  /** Generated ICMP errors written, indexed like ICMP_SENT_TYPES. */
  readonly icmpSent = new Float64Array(ICMP_SENT_TYPES.length);
  /** The latest loop exception's message ('' = none). */
  lastException = '';
  private failed = false;
  private stage = STAGE_OTHER;
  private lastLogAt = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly pipeline: Pipeline,
    private readonly tap: PcapTap,
    private readonly tun: TunDevice,
    private readonly ipip: IpipSocket | undefined,
    private readonly hooks: LoopHooks,
  ) {
    // Offload: TUN reads return super-packets, and IPIP reads leave room for GRO to grow them.
    const o = pipeline.offload;
    this.batch = new PacketBatch(BATCH, o !== undefined ? OFFLOAD_SLOT_SIZE : SLOT_SIZE);
    if (o !== undefined) o.flush = () => this.flushIpipOut(performance.now());
  }

  /** From now on each source is drained whenever it becomes readable. */
  start(): void {
    this.ipip?.onReadable(() => this.drain(SRC_IPIP));
    this.tun.onReadable(() => this.drain(SRC_TUN));
  }

  /** Stops polling both sources (idempotent). */
  stop(): void {
    this.ipip?.offReadable();
    this.tun.offReadable();
  }

  private drain(src: number): void {
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      try {
        if (!this.oneBatch(src)) break;
      } catch (e) {
        this.fault(e, src);
        break;
      }
    }
  }

  /** One batch from the TUN or the IPIP socket; false when nothing was ready. */
  private oneBatch(src: number): boolean {
    const b = this.batch;
    b.count = 0;
    this.stage = STAGE_IO;
    if ((src === SRC_TUN ? this.tun : this.ipip!).read(b) === 0) return false;
    this.stage = STAGE_OTHER;
    const now = performance.now();
    this.tap.ingress(b, now); // from the IPIP socket still with the outer header
    if (src === SRC_TUN) this.pipeline.processTunBatch(b, now);
    else this.pipeline.processIpipBatch(b, now);
    this.tap.egress(b, now);
    this.writeTun(b);
    this.flushIpipOut(now);
    this.flushGenerated(now);
    return true;
  }

  /** Offload mode: what the pipeline encapsulated for other nodes (OffloadEgress.out), in one sendmmsg(). */
  private flushIpipOut(now: number): void {
    const o = this.pipeline.offload?.out;
    if (o !== undefined && o.count > 0) {
      this.tap.egress(o, now);
      this.stage = STAGE_IO;
      (this.ipip ?? this.tun).write(o);
      this.stage = STAGE_OTHER;
      o.count = 0;
    }
  }

  private writeTun(b: PacketBatch): void {
    this.stage = STAGE_IO;
    this.tun.write(b);
    this.stage = STAGE_OTHER;
  }

  private flushGenerated(now: number): void {
    const g = this.pipeline.generated;
    if (g.count > 0) {
      this.countIcmpSent(g);
      this.tap.egress(g, now);
      this.writeTun(g);
      g.count = 0;
    }
  }

  /** By type, what the pipeline generated (cold: ICMP errors only; IPIP-wrapped ones looked into). */
  private countIcmpSent(g: PacketBatch): void {
    const buf = g.slab;
    for (let k = 0; k < g.count; k++) {
      if (g.lens[k] === 0) continue;
      let off = g.offs[k];
      if (buf[off + IPV4_PROTO] === IPPROTO_IPIP) off += IPIP_HEADER_LEN;
      const icmp = off + ipv4HeaderLen(buf, off), type = buf[icmp], code = buf[icmp + 1];
      const t = type !== ICMP_DEST_UNREACH ? ICMP_SENT_OTHER
        : code === ICMP_FRAG_NEEDED ? ICMP_SENT_FRAG_NEEDED : code === ICMP_PORT_UNREACH ? ICMP_SENT_PORT_UNREACH : ICMP_SENT_DEST_UNREACH;
      this.icmpSent[t]++;
    }
  }

  private fault(e: unknown, src: number): void {
    const err = e as NodeJS.ErrnoException;
    // Native I/O errors carry errno as a negative number (libuv style) and the failing syscall.
    const io = this.stage === STAGE_IO;
    this.stage = STAGE_OTHER;
    const errno = io && typeof err?.errno === 'number' ? Math.abs(err.errno) : 0;
    const device = src === SRC_TUN ? this.tun.name : 'ipip';
    if (FATAL_ERRNOS.has(errno)) {
      if (this.failed) return;
      this.failed = true;
      this.stop();
      const code = errnoName(errno);
      const what = src === SRC_TUN ? `tun device ${device}` : 'ipip socket';
      this.hooks.log.error({ device, syscall: err.syscall, errno, code, err: err.message },
        `${what} failed: ${err.syscall ?? 'I/O'}: ${code} (errno ${errno}); stopping the daemon`);
      this.hooks.onFdFailure({ device, syscall: String(err.syscall), errno, code, message: err.message });
      return;
    }
    this.pipeline.generated.count = 0;
    const now = performance.now();
    const first = this.faults[FAULT_EXCEPTIONS] === 0 && this.faults[FAULT_IO_ERRORS] === 0;
    if (errno !== 0) {
      this.faults[FAULT_IO_ERRORS]++; // already in the native counters (readErrors, lastReadErrno)
    } else {
      this.faults[FAULT_EXCEPTIONS]++;
      this.faults[FAULT_PACKETS] += this.batch.count;
      this.lastException = err instanceof Error ? err.message : String(e);
    }
    if (!first && now - this.lastLogAt < FAULT_LOG_INTERVAL_MS) { this.suppressed++; return; }
    const ctx = {
      device, errno: errno || undefined, code: errno ? errnoName(errno) : undefined,
      err: err instanceof Error ? err.message : String(e), stack: first && err instanceof Error ? err.stack : undefined,
      exceptions: this.faults[FAULT_EXCEPTIONS], ioErrors: this.faults[FAULT_IO_ERRORS], suppressed: this.suppressed || undefined,
    };
    this.lastLogAt = now;
    this.suppressed = 0;
    this.hooks.log.warn(ctx, errno !== 0 ? `${device}: transient I/O error, batch skipped` : `${LOOP_EXCEPTION}: batch from ${device} dropped`);
  }
}
