// Bounded child processes for the benchmark: every load runs with a deadline, and everything still
// running can be killed at once on SIGINT.
import { spawn, ChildProcess, execFileSync } from 'node:child_process';

const running = new Set<ChildProcess>();
/** Set on SIGINT/SIGTERM: no new load starts while the labs are torn down. */
export const abort = { requested: false };

export interface RunResult { stdout: string; stderr: string; code: number | null; ms: number; timedOut: boolean }

/** Run `cmd` inside network namespace `ns` (or in ours when ns is ''), killed after timeoutMs. */
export function runIn(ns: string, cmd: string[], timeoutMs: number, input?: string): Promise<RunResult> {
  const argv = ns ? ['ip', 'netns', 'exec', ns, ...cmd] : cmd;
  if (abort.requested) return Promise.reject(new Error('aborted'));
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '', stderr = '', timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (stdout.length < 64 << 20) stdout += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 1 << 20) stderr += d; });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); running.delete(child); reject(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ stdout, stderr, code, ms: Number(process.hrtime.bigint() - t0) / 1e6, timedOut });
    });
    if (input !== undefined) child.stdin!.end(input); else child.stdin!.end();
  });
}

/** Like runIn, but a non-zero exit or a timeout is an error. */
export async function mustRun(ns: string, cmd: string[], timeoutMs: number, input?: string): Promise<RunResult> {
  const r = await runIn(ns, cmd, timeoutMs, input);
  if (r.timedOut) throw new Error(`${cmd.join(' ')} (in ${ns || 'root ns'}): killed after ${timeoutMs} ms`);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} (in ${ns || 'root ns'}) exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 800)}`);
  return r;
}

export function killAllRunning(): void {
  abort.requested = true;
  for (const c of running) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
}

/** Synchronous, for short commands; '' on failure. */
export function tryText(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).trim();
  } catch (e: any) {
    return ((e.stdout || '') + (e.stderr || '')).toString().trim();
  }
}

export function nsText(ns: string, cmd: string[], maxBuffer = 1 << 30): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer, timeout: 120_000 });
}
