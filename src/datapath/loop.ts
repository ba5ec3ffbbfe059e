// The batch I/O loop: on each wakeup of the TUN fd or the IPIP socket, read a batch, hand it to
// the pipeline, write what it forwards and what it generated (ICMP errors), with the pcap tap
// seeing each batch on the way in and out. One slab serves both sources: the reads never overlap.
import { performance } from 'node:perf_hooks';
import { PacketBatch, OFFLOAD_SLOT_SIZE, SLOT_SIZE } from '../io';
import type { TunDevice, IpipSocket } from '../io';
import type { PcapTap } from '../io/pcap';
import type { Pipeline } from './pipeline';
import { BATCH } from './batch-size';

/** Batches per wakeup before yielding to timers and the control socket. */
const MAX_BATCHES_PER_WAKEUP = 16;

export class BatchLoop {
  private readonly batch: PacketBatch;

  constructor(
    private readonly pipeline: Pipeline,
    private readonly tap: PcapTap,
    private readonly tun: TunDevice,
    private readonly ipip: IpipSocket | undefined,
  ) {
    // Offload: TUN reads return super-packets, and IPIP reads leave room for GRO to grow them.
    const o = pipeline.offload;
    this.batch = new PacketBatch(BATCH, o !== undefined ? OFFLOAD_SLOT_SIZE : SLOT_SIZE);
    if (o !== undefined) o.flush = () => this.flushIpipOut(performance.now());
  }

  /** From now on each source is drained whenever it becomes readable. */
  start(): void {
    this.ipip?.onReadable(() => this.drainIpip());
    this.tun.onReadable(() => this.drainTun());
  }

  private drainTun(): void {
    const tun = this.tun, b = this.batch, p = this.pipeline, tap = this.tap;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (tun.read(b) === 0) break;
      const now = performance.now();
      tap.ingress(b, now);
      p.processTunBatch(b, now);
      tap.egress(b, now);
      tun.write(b);
      this.flushIpipOut(now);
      this.flushGenerated(now);
    }
  }

  private drainIpip(): void {
    const sock = this.ipip!, b = this.batch, p = this.pipeline, tap = this.tap;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP; k++) {
      if (sock.read(b) === 0) break;
      const now = performance.now();
      tap.ingress(b, now); // still with the outer IPIP header
      p.processIpipBatch(b, now);
      tap.egress(b, now);
      this.tun.write(b);
      this.flushIpipOut(now);
      this.flushGenerated(now);
    }
  }

  /** Offload mode: what the pipeline encapsulated for other nodes (OffloadEgress.out), in one sendmmsg(). */
  private flushIpipOut(now: number): void {
    const o = this.pipeline.offload?.out;
    if (o !== undefined && o.count > 0) {
      this.tap.egress(o, now);
      (this.ipip ?? this.tun).write(o);
      o.count = 0;
    }
  }

  private flushGenerated(now: number): void {
    const g = this.pipeline.generated;
    if (g.count > 0) {
      this.tap.egress(g, now);
      this.tun.write(g);
      g.count = 0;
    }
  }
}
