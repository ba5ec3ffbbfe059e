// `npm run lab -- up/status/exec/down` keeps a lab up between commands and removes all of it; the
// demo removes what it built when a signal stops it half way.
import { describe, it, expect } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from '../scripts/lab';

const LAB_CLI = path.join(REPO_ROOT, 'dist', 'scripts', 'lab-cli.js');
const DEMO = path.join(REPO_ROOT, 'dist', 'scripts', 'demo.js');
const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);
const processesMentioning = (s: string) =>
  execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(s) && !l.startsWith('ps '));
const lab = (...args: string[]) => spawnSync(process.execPath, [LAB_CLI, ...args], { encoding: 'utf8', timeout: 60_000 });

async function waitFor<T>(what: string, f: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('npm run lab', () => {
  it('up keeps the lab and its daemons after it exits; status, exec and down work on it', () => {
    const prefix = `kl${randomBytes(2).toString('hex')}`;
    try {
      const up = lab('up', '--nodes', '1', '--lab', prefix);
      expect(up.status, up.stderr).toBe(0);
      expect(up.stdout).toContain(`lab ${prefix} is up`);
      expect(up.stdout).toMatch(/worker-1 +\S+-w1 +node 192\.168\.2\.2, .*kube-tun pid \d+/);
      // `up` has exited; the lab and kube-tun are still there.
      expect(namespaces().filter((n) => n.startsWith(`${prefix}-`)).length).toBeGreaterThan(3);
      const st = lab('status', '--lab', prefix);
      expect(st.status, st.stderr).toBe(0);
      expect(st.stdout).toMatch(/kube-tun pid \d+/);
      const curl = lab('exec', 'client1', '--lab', prefix, '--', 'curl', '-s', '--max-time', '5', 'http://10.99.64.233:9999/');
      expect(curl.stdout).toMatch(/ClientIP: 10\.1\.139\.70, ServerName: nginx[12]/);
      // kube-tun is on PATH inside exec and finds the node's own daemon without --control-socket.
      const ct = lab('exec', 'worker-1', '--lab', prefix, '--', 'kube-tun', 'conntrack', '-L', '-d', '10.99.64.233');
      expect(ct.status, ct.stderr).toBe(0);
      expect(ct.stdout).toMatch(/^tcp +6 \d+ TIME_WAIT src=10\.1\.139\.70 dst=10\.99\.64\.233 /m);
      const bad = lab('exec', 'nosuchpod', '--lab', prefix, '--', 'true');
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain('no "nosuchpod" in the lab');
    } finally {
      const down = lab('down', '--lab', prefix);
      expect(down.stdout).toContain(`lab ${prefix} removed`);
    }
    expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    expect(processesMentioning(`kube-tun-${prefix}`)).toEqual([]);
    expect(fs.existsSync(`/tmp/kube-tun-${prefix}`)).toBe(false);
  });

  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    it(`the demo removes everything it built on ${sig}`, async () => {
      const child = spawn(process.execPath, [DEMO], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      try {
        // Signal it once both daemons run and the first scenario is under way.
        const prefix = await waitFor('the demo to start its scenarios', () => {
          if (!/kube-tun running on both nodes/.test(out)) return undefined;
          return /building lab (\w+)/.exec(out)?.[1];
        }, 60_000);
        child.kill(sig);
        const code = await exited;
        expect(code, out).toBe(128 + { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig]);
        expect(out).toContain(`${sig}: removing what this run built`);
        expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
        expect(processesMentioning(`kube-tun-${prefix}`)).toEqual([]);
        expect(fs.existsSync(`/tmp/kube-tun-${prefix}`)).toBe(false);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    }, 90_000);
  }
});
