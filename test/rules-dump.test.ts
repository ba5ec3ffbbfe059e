// Issue 3: `kube-tun run --rules DUMP` compiles an iptables-save dump into the same matcher the
// manifests produce, and the data path behaves the same.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LAB_CONFIG } from '../scripts/lab';
import { startKubeTun, RunningDaemon, parseAnswers, countBy, CLI } from './support/daemon';

const VIP = '10.99.64.233';
let lab: Lab;
let kt: RunningDaemon;

beforeAll(async () => {
  lab = await new Lab({ nodes: ['worker-1'] }).build();
  // The dump as iptables-save prints it: probabilities like 0.50000000000, its own argument order.
  const dump = path.join(lab.dir, 'worker-1.rules');
  fs.writeFileSync(dump, execFileSync(process.execPath, [CLI, 'rules', '--config', LAB_CONFIG, '--hostname-override', 'worker-1',
    '--probability-format', 'iptables-save'], { encoding: 'utf8' }));
  kt = await startKubeTun(lab, 'worker-1', ['--rules', dump]);
});

afterAll(async () => {
  await kt?.stop();
  await lab?.destroy();
});

describe('run --rules', () => {
  it('serves the ClusterIP from the dump: both endpoints, pod source kept, node masqueraded', () => {
    const curl = (ns: string, url: string) => lab.exec(ns, ['curl', '-s', '--max-time', '5', '-H', 'Connection: close', url]);
    const answers = parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/[1-40]`));
    expect(answers).toHaveLength(40);
    expect(Object.keys(countBy(answers, (a) => a.server)).sort()).toEqual(['nginx1', 'nginx2']);
    for (const a of answers) expect(a.client).toBe('10.1.139.70');
    expect(parseAnswers(curl(lab.nodeNs('worker-1'), `http://${VIP}:9999/`))[0].client).toBe('192.168.2.2');
    expect(kt.log()).toMatch(/"msg":"ready"/);
  });

  it('prints what it compiled (rules --live) as kube-proxy rules', () => {
    const live = kt.cli(['rules', '--live']);
    expect(live).toMatch(/-A KUBE-SERVICES .*-d 10\.99\.64\.233(\/32)? .*--dport 9999 -j KUBE-SVC-HQOVHX4BQRA7XPPR/);
    expect(live).toMatch(/-j DNAT --to-destination 10\.1\.139\.84:80/);
  });
});
