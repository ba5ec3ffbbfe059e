// Poll for a condition instead of sleeping for a guessed time: a loaded machine only makes the wait
// longer, never the test wrong.
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Resolve with the first truthy value `cond` returns (it may be async), polling every `intervalMs` (100 ms);
 * reject after `timeoutMs` with `what` and, if given, `detail()` (e.g. a log tail) in the message.
 */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 10_000,
  opts: { intervalMs?: number; detail?: () => string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() >= deadline) break;
    await delay(opts.intervalMs ?? 100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${opts.detail ? `:\n${opts.detail()}` : ''}`);
}
