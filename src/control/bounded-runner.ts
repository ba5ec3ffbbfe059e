// kube-proxy's BoundedFrequencyRunner (pkg/util/async), the part kube-tun needs: run() asks for a
// run; runs are rate-limited by a token bucket of `burst` tokens (kube-proxy: 2) refilled one per
// minIntervalMs. With a token the run happens at once (next tick, so one batch of watch events is
// one run); without, when the next token is due; requests until then are coalesced into that one
// run. So the first change after a quiet spell is applied at once (and a second one right after
// it, as kube-apply's Service-then-EndpointSlice), a stream of changes at most once per
// minIntervalMs. Without requests it still runs every maxIntervalMs (the periodic full resync).
// The function runs synchronously on the event loop; it should not throw (it is the caller's to
// catch and retry).
import { performance } from 'node:perf_hooks';

export class BoundedFrequencyRunner {
  private tokens: number;
  private refilledAt: number;
  private timer?: NodeJS.Timeout;
  private periodic?: NodeJS.Timeout;
  private stopped = false;
  /** Runs done, periodic ones included. */
  runs = 0;

  constructor(
    private readonly fn: (periodic: boolean) => void,
    private readonly minIntervalMs: number,
    private readonly maxIntervalMs: number,
    private readonly burst = 2,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.refilledAt = now();
  }

  /** The caller has just done fn's work itself (the first sync): that took a token; arms the periodic run. */
  start(): void {
    this.take();
    this.armPeriodic();
  }

  /** Ask for a run: at once if a token is left, else when the next one is due; coalesced. */
  run(): void {
    if (this.stopped || this.timer) return;
    this.refill();
    const wait = this.tokens >= 1 || this.minIntervalMs <= 0 ? 0 : Math.ceil((1 - this.tokens) * this.minIntervalMs);
    this.timer = setTimeout(() => this.fire(false), wait);
  }

  private refill(): void {
    const t = this.now();
    if (this.minIntervalMs > 0) this.tokens = Math.min(this.burst, this.tokens + (t - this.refilledAt) / this.minIntervalMs);
    this.refilledAt = t;
  }

  private take(): void {
    this.refill();
    this.tokens = Math.max(0, this.tokens - 1);
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
    this.take();
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
