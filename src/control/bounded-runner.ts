// kube-proxy's BoundedFrequencyRunner (pkg/util/async), the part kube-tun needs: run() asks for a
// run; it happens at once (next tick, so one burst of watch events is one run) when the last run
// is at least minIntervalMs old, else when it becomes so; requests until then are coalesced into
// that one run. Without requests it still runs every maxIntervalMs (the periodic full resync).
// The function runs synchronously on the event loop; it should not throw (it is the caller's to
// catch and retry).
import { performance } from 'node:perf_hooks';

export class BoundedFrequencyRunner {
  private last = -Infinity;
  private timer?: NodeJS.Timeout;
  private periodic?: NodeJS.Timeout;
  private stopped = false;
  /** Runs done, periodic ones included. */
  runs = 0;

  constructor(
    private readonly fn: (periodic: boolean) => void,
    private readonly minIntervalMs: number,
    private readonly maxIntervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Counts the interval from now (the caller has just run fn's work itself) and arms the periodic run. */
  start(): void {
    this.last = this.now();
    this.armPeriodic();
  }

  /** Ask for a run: at once if the last is old enough, else at last + minIntervalMs; coalesced. */
  run(): void {
    if (this.stopped || this.timer) return;
    const wait = Math.max(0, this.last + this.minIntervalMs - this.now());
    this.timer = setTimeout(() => this.fire(false), wait);
  }

  /** Whether a requested run is waiting for its turn. */
  get queued(): boolean { return this.timer !== undefined; }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.periodic);
    this.timer = this.periodic = undefined;
  }

  private fire(periodic: boolean): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) return;
    this.last = this.now();
    this.runs++;
    try {
      this.fn(periodic);
    } finally {
      this.armPeriodic();
    }
  }

  private armPeriodic(): void {
    clearTimeout(this.periodic);
    if (this.stopped) return;
    this.periodic = setTimeout(() => this.fire(true), this.maxIntervalMs);
    this.periodic.unref?.();
  }
}
