// The lab leaves nothing behind: namespaces, processes, files, also after kube-tun ran in it.
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Lab } from '../scripts/lab';
import { startKubeTun } from './support/daemon';

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);
const processesMentioning = (s: string) => execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(s) && !l.startsWith('ps '));

describe('lab hygiene', () => {
  it('destroy() removes every namespace, process and file the run created', async () => {
    const lab = new Lab({ nodes: ['worker-1'] });
    try {
      await lab.build();
      await startKubeTun(lab, 'worker-1');
      expect(namespaces().filter((n) => n.startsWith(`${lab.prefix}-`)).length).toBeGreaterThan(4);
      expect(processesMentioning(lab.dir).length).toBeGreaterThan(0);
    } finally {
      await lab.destroy();
    }
    expect(namespaces().filter((n) => n.startsWith(`${lab.prefix}-`))).toEqual([]);
    expect(processesMentioning(lab.dir)).toEqual([]);
    expect(fs.existsSync(lab.dir)).toBe(false);
  });

  it('a failing build cleans up after itself', async () => {
    const lab = new Lab({ nodes: ['worker-1'] });
    // Sabotage: occupy the first namespace name so the build fails half way.
    execFileSync('ip', ['netns', 'add', `${lab.prefix}-w1`]);
    try {
      await expect(lab.build()).rejects.toThrow(/netns add/);
      expect(namespaces().filter((n) => n.startsWith(`${lab.prefix}-`) && n !== `${lab.prefix}-w1`)).toEqual([]);
    } finally {
      execFileSync('ip', ['netns', 'del', `${lab.prefix}-w1`]);
    }
  });
});
