// client-go's Reflector for one resource: list, then watch from the list's resourceVersion,
// following BOOKMARK events; after a dropped watch, watch again from the last resourceVersion seen
// (no relist) with exponential backoff; after 410 Gone (an ERROR event with an Expired Status, or
// an HTTP 410), list again. client-node's own ListWatch restarts without backoff, stops for good on
// any other error and ignores bookmarks, so kube-tun drives the client's Watch and list calls itself.
import { KubeObject, ListerWatcher } from './kube-client';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ReflectorHandler {
  /** After every list: the complete current set (the store replaces its contents; Store.Replace). */
  replace(items: readonly KubeObject[], resourceVersion: string): void;
  /** One watch event. */
  event(type: WatchEventType, obj: KubeObject): void;
}

export interface BackoffOptions {
  /** First delay after a failure (client-go: 800 ms). */
  initialMs?: number;
  /** Cap (client-go: 30 s). */
  maxMs?: number;
  factor?: number;
  /** Each delay is stretched by up to this fraction at random (client-go: 1.0). */
  jitter?: number;
  /** The random source for the jitter (tests pass a seeded one). */
  random?: () => number;
}

export interface ReflectorOptions {
  backoff?: BackoffOptions;
  /**
   * The server ends each watch after this many seconds (client-go picks 5-10 min at random so
   * that watches do not all end together); 0 = never.
   */
  watchTimeoutSeconds?: number;
  log?: (msg: string) => void;
}

export interface ReflectorStats {
  lists: number;
  watches: number;
  /** Lists caused by 410 Gone. */
  relists: number;
  /** Watches resumed from the last resourceVersion after a drop or an end. */
  resumes: number;
  bookmarks: number;
  events: number;
  errors: number;
}

export class Backoff {
  private delay = 0;
  private readonly initial: number;
  private readonly max: number;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(o: BackoffOptions = {}) {
    this.initial = o.initialMs ?? 800;
    this.max = o.maxMs ?? 30_000;
    this.factor = o.factor ?? 2;
    this.jitter = o.jitter ?? 1;
    this.random = o.random ?? Math.random;
  }

  next(): number {
    this.delay = this.delay === 0 ? this.initial : Math.min(this.max, this.delay * this.factor);
    return Math.round(this.delay * (1 + this.jitter * this.random()));
  }

  reset(): void {
    this.delay = 0;
  }
}

/** How one watch ended. */
interface WatchEnd { gone: boolean; err: unknown; sawEvents: boolean; durationMs: number }

function statusCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  return typeof e.code === 'number' ? e.code : undefined;
}

export class Reflector {
  private stopped = true;
  private resourceVersion: string | null = null;
  private abortWatch: (() => void) | null = null;
  /** Ends the current watchOnce() at once (stop() does not wait for the stream to close). */
  private endWatch: (() => void) | null = null;
  private wake: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private readonly backoff: Backoff;
  readonly stats: ReflectorStats = { lists: 0, watches: 0, relists: 0, resumes: 0, bookmarks: 0, events: 0, errors: 0 };
  /** The last error (list or watch), for diagnostics. */
  lastError: string | null = null;

  constructor(private readonly lw: ListerWatcher, private readonly handler: ReflectorHandler, private readonly opts: ReflectorOptions = {}) {
    this.backoff = new Backoff(opts.backoff);
  }

  /** The resourceVersion the next watch starts from (null: the next step is a list). */
  get lastSyncResourceVersion(): string | null { return this.resourceVersion; }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.running = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abortWatch?.();
    this.endWatch?.();
    this.wake?.();
    await this.running;
  }

  private log(msg: string): void {
    this.opts.log?.(`${this.lw.kind}: ${msg}`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = null; resolve(); }, ms);
      this.wake = () => { clearTimeout(t); this.wake = null; resolve(); };
    });
  }

  private fail(what: string, err: unknown): void {
    this.stats.errors++;
    this.lastError = `${what}: ${(err as Error)?.message ?? String(err)}`;
    this.log(this.lastError);
  }

  private async run(): Promise<void> {
    let afterGone = false;
    while (!this.stopped) {
      if (this.resourceVersion === null) {
        try {
          const l = await this.lw.list();
          if (this.stopped) return;
          this.stats.lists++;
          if (afterGone) this.stats.relists++;
          afterGone = false;
          this.handler.replace(l.items, l.resourceVersion);
          this.resourceVersion = l.resourceVersion;
          this.backoff.reset();
        } catch (e) {
          this.fail('list', e);
          await this.sleep(this.backoff.next());
          continue;
        }
      } else {
        this.stats.resumes++;
      }
      if (this.stopped) return;
      const end = await this.watchOnce(this.resourceVersion);
      if (this.stopped) return;
      if (end.gone) {
        this.log(`resourceVersion ${this.resourceVersion} is too old (410 Gone): relisting`);
        this.resourceVersion = null;
        afterGone = true;
        continue;
      }
      if (end.sawEvents || end.durationMs > 1000) this.backoff.reset();
      if (end.err !== null) this.fail('watch', end.err);
      // A clean end (the server's timeout) is resumed at once; failures and watches that end as
      // soon as they start wait, so a broken server is not hammered.
      if (end.err !== null || !(end.sawEvents || end.durationMs > 1000)) await this.sleep(this.backoff.next());
    }
  }

  private watchOnce(rv: string): Promise<WatchEnd> {
    const started = Date.now();
    let sawEvents = false, gone = false, eventErr: unknown = null;
    return new Promise<WatchEnd>((resolve) => {
      let finished = false;
      const done = (err: unknown): void => {
        if (finished) return;
        finished = true;
        this.abortWatch = null;
        this.endWatch = null;
        if (statusCode(err) === 410) gone = true;
        resolve({ gone, err: gone ? null : err ?? eventErr, sawEvents, durationMs: Date.now() - started });
      };
      const onEvent = (type: string, obj: any): void => {
        if (finished || this.stopped) return;
        if (type === 'ERROR') {
          // A Status: 410 Expired means the history is gone; anything else ends this watch.
          if (obj?.code === 410) gone = true;
          else eventErr = new Error(`watch ERROR event: ${obj?.reason ?? ''} ${obj?.message ?? JSON.stringify(obj)}`);
          this.abortWatch?.();
          done(null);
          return;
        }
        const v = obj?.metadata?.resourceVersion;
        if (type === 'BOOKMARK') {
          this.stats.bookmarks++;
          if (typeof v === 'string' && v !== '') this.resourceVersion = v;
          return;
        }
        if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
        sawEvents = true;
        this.stats.events++;
        this.handler.event(type, obj as KubeObject);
        if (typeof v === 'string' && v !== '') this.resourceVersion = v;
      };
      this.endWatch = () => done(null);
      this.stats.watches++;
      this.lw.watch(rv, this.opts.watchTimeoutSeconds ?? 0, onEvent, done).then((h) => {
        if (finished || this.stopped) h.abort();
        else this.abortWatch = () => h.abort();
        if (this.stopped) done(null);
      }, (e: unknown) => done(e));
    });
  }
}
