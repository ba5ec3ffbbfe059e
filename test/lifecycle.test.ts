// Issue 4: restarting one node's kube-tun and removing an endpoint mid-run: clear log lines, no
// crash, new connections only to the remaining endpoints. Issue 10 item 6: the TUN deleted under
// a running daemon stops it in order (log line, routing removed, non-zero exit).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LAB_CONFIG } from '../scripts/lab';
import { startKubeTun, RunningDaemon, parseAnswers } from './support/daemon';
import { waitFor } from './support/wait';

const VIP = '10.99.64.233';
let lab: Lab;
let config: string;
let w1: RunningDaemon;
let w2: RunningDaemon;

beforeAll(async () => {
  lab = await new Lab({ nodes: ['worker-1', 'worker-2'], outside: false }).build();
  config = path.join(lab.dir, 'cluster.yaml');
  fs.copyFileSync(LAB_CONFIG, config);
  w1 = await startKubeTun(lab, 'worker-1', [], config);
  w2 = await startKubeTun(lab, 'worker-2', [], config);
});

afterAll(async () => {
  await w1?.stop();
  await w2?.stop();
  await lab?.destroy();
});

const servers = (ns: string, n: number) =>
  parseAnswers(lab.exec(ns, ['curl', '-s', '--max-time', '5', '-H', 'Connection: close', `http://${VIP}:9999/[1-${n}]`])).map((a) => a.server);

function waitForLog(d: RunningDaemon, re: RegExp, after: number, timeoutMs = 10_000): Promise<string> {
  return waitFor(`a log line matching ${re}`, () => d.log().slice(after).split('\n').find((l) => re.test(l)), timeoutMs,
    { detail: () => d.log().slice(after) });
}

describe('lifecycle', () => {
  it('removing an endpoint mid-run: reload is logged, new connections avoid it, nothing crashes', async () => {
    expect(new Set(servers(lab.podNs('client'), 40))).toEqual(new Set(['nginx1', 'nginx2']));
    // A UDP flow DNAT'ed to an endpoint that is about to go away.
    lab.exec(lab.podNs('client'), ['sh', '-c', 'dig +time=1 +tries=1 -p 5353 @10.96.0.20 x.lab >/dev/null 2>&1; true']);
    expect(w2.cli(['conntrack', '-L', '-p', 'udp', '-d', '10.96.0.20'])).toMatch(/dport=5353/);
    const mark = w2.log().length;
    // Drop nginx2 (10.1.139.93) from default/test's EndpointSlice, as an endpoints controller would.
    const text = fs.readFileSync(config, 'utf8');
    const marker = 'name: test-abcde';
    const at = text.indexOf(marker);
    const end = text.indexOf('---', at);
    const slice = text.slice(at, end).replace(/\n  - \{ addresses: \[10\.1\.139\.93\][^\n]*/, '');
    let edited = text.slice(0, at) + slice + text.slice(end);
    // ... and udp-void's only endpoint.
    const voidAt = edited.indexOf('name: udp-void-fffff');
    edited = edited.slice(0, voidAt) + edited.slice(voidAt).replace(/endpoints:\n  - \{ addresses: \[10\.1\.139\.84\][^\n]*/, 'endpoints: []');
    fs.writeFileSync(config, edited);
    const line = await waitForLog(w2, /"msg":"rules reloaded"/, mark);
    expect(JSON.parse(line).services).toBeGreaterThan(0);
    // kube-proxy's deleteEndpointConnections: the UDP entry to the removed endpoint is gone.
    expect(JSON.parse(line).staleUdpFlushed).toBeGreaterThanOrEqual(1);
    expect(w2.cli(['conntrack', '-L', '-p', 'udp', '-d', '10.96.0.20'])).not.toMatch(/dport=5353/);
    const after = servers(lab.podNs('client'), 40);
    expect(after).toHaveLength(40);
    expect(new Set(after)).toEqual(new Set(['nginx1']));
    expect(w2.child.exitCode).toBeNull();
  });

  it('a bad config on reload is refused with the field named, and the old rules keep working', async () => {
    const mark = w2.log().length;
    const good = fs.readFileSync(config, 'utf8');
    fs.writeFileSync(config, good.replace('clusterIP: 10.99.64.233', 'clusterIP: 10.99.64.999'));
    const line = await waitForLog(w2, /reload failed/, mark);
    expect(line).toMatch(/clusterIP/);
    expect(servers(lab.podNs('client'), 5)).toHaveLength(5);
    fs.writeFileSync(config, good);
    await waitForLog(w2, /"msg":"rules reloaded"/, mark);
  });

  it('restarting worker-1\'s kube-tun: it logs stop and start, and traffic flows again', async () => {
    await w1.stop();
    expect(w1.log()).toMatch(/"msg":"stopping"/);
    // While it is down, cross-node traffic to worker-1's pods has no way in.
    expect(() => lab.exec(lab.podNs('client'), ['curl', '-s', '--max-time', '1', `http://${VIP}:9999/`])).toThrow();
    w1 = await startKubeTun(lab, 'worker-1', [], config);
    expect(w1.log()).toMatch(/"msg":"routing installed"/);
    expect(servers(lab.podNs('client'), 10)).toHaveLength(10);
    expect(w2.child.exitCode).toBeNull();
  });

  it('the TUN deleted under a running daemon: a log line naming kt0 and the errno, exit 1, no routing left', async () => {
    const ns = lab.nodeNs('worker-1');
    // kube-tun's rules are there while it runs (the test below must see them go).
    expect(lab.exec(ns, ['ip', 'rule', 'show'])).toMatch(/iif kt0/);
    const mark = w1.log().length;
    lab.exec(ns, ['ip', 'link', 'del', 'kt0']);
    await waitFor('the daemon to exit after losing its TUN', () => w1.child.exitCode !== null || w1.child.signalCode !== null, 10_000);
    const log = w1.log().slice(mark);
    expect(w1.child.exitCode, log).toBe(1);
    const line = JSON.parse(log.split('\n').find((l) => l.includes('tun device kt0 failed'))!);
    expect(line.level).toBe(50); // error
    // read(2) without offloads, readv(2) with them (the vnet header is read into its own buffer).
    expect(line.msg).toMatch(/^tun device kt0 failed: readv?: EBADFD \(errno 77\); stopping the daemon$/);
    expect(line).toMatchObject({ device: 'kt0', errno: 77, code: 'EBADFD' });
    expect(log).toMatch(/"msg":"stopping"/);
    expect(log).toMatch(/"msg":"routing removed"/);
    // Nothing of kube-tun's is left in the node's namespace: policy rules back to the kernel's
    // three, no routes in tables 100/200, no route through kt0, the control socket gone.
    const rules = lab.exec(ns, ['ip', 'rule', 'show']).trim().split('\n').map((l) => l.trim());
    expect(rules).toEqual(['0:\tfrom all lookup local', '32766:\tfrom all lookup main', '32767:\tfrom all lookup default']);
    const routes = lab.exec(ns, ['ip', 'route', 'show', 'table', 'all']);
    expect(routes).not.toMatch(/table (100|200)\b/);
    expect(routes).not.toMatch(/\bkt0\b/);
    expect(fs.existsSync(w1.socket)).toBe(false);
    expect(w2.child.exitCode).toBeNull();
  });
});
