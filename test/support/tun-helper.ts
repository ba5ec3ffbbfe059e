// Drives test/support/tun-child.ts from a test: spawns it inside a network namespace
// (`ip netns exec NS node -r ts-node/register/transpile-only tun-child.ts`) and exchanges one JSON
// line per request/reply. Every call is bounded by its timeout; a helper that exits rejects what is
// still pending, with its stderr.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

const ROOT = path.resolve(__dirname, '..', '..');

export class Helper {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly stderr: string[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<number | null>;

  constructor(ns: string) {
    const child = path.join(ROOT, 'test', 'support', 'tun-child.ts');
    const register = require.resolve('ts-node/register/transpile-only', { paths: [ROOT] });
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '-r', register, child], {
      cwd: ROOT,
      env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc.stderr.on('data', (d: Buffer) => this.stderr.push(d.toString()));
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let msg: { id: number; ok: boolean; result?: unknown; error?: string };
      try {
        msg = JSON.parse(line);
      } catch {
        this.stderr.push(`stdout: ${line}\n`);
        return;
      }
      const p = this.pending.get(msg.id);
      if (p === undefined) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(`helper: ${msg.error}`));
    });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    this.exited.then(() => {
      for (const p of this.pending.values()) p.reject(new Error(`helper exited; stderr: ${this.stderr.join('')}`));
      this.pending.clear();
    });
  }

  call<T = any>(op: string, args: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`helper ${op} timed out; stderr: ${this.stderr.join('')}`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.proc.stdin.write(JSON.stringify({ id, op, ...args }) + '\n');
    });
  }

  /** Ends its stdin (the helper closes what it opened and exits); SIGKILL after 5 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(t);
  }
}
