// Watch mode end to end: two lab nodes whose kube-tun daemons run with --kubeconfig against the API
// server double, and kubectl changes they follow: apply a Service + EndpointSlice -> a pod reaches
// it through the ClusterIP; the slice moves to another endpoint -> new connections go there;
// sessionAffinity kept across an endpoint update; delete the Service -> no service.
//
// Reaching the double from the node namespaces: it listens on the test process's loopback (kubectl
// and the test talk to it there); a Unix socket (not network-namespaced) bridges to it, and in
// each node namespace a small forwarder listens on that namespace's 127.0.0.1:16443 -> the socket.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Lab, LAB_CONFIG } from '../scripts/lab';
import { startKubeTun, RunningDaemon, parseAnswers } from './support/daemon';
import { waitFor } from './support/wait';
import { ApiDouble } from './support/api-double';

const KUBECTL = '/usr/bin/kubectl';
const FORWARD_PORT = 16443;
const VIP = '10.99.70.10', STICKY_VIP = '10.99.70.11';
const NGINX1 = '10.1.139.84', NGINX2 = '10.1.139.93', NGINX3 = '10.1.236.150';

let lab: Lab;
let api: ApiDouble;
let bridge: net.Server;
const daemons: RunningDaemon[] = [];

function kubectl(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // Async: the double answers from this process's event loop.
    execFile(KUBECTL, ['--server', api.url, '--cache-dir', path.join(lab.dir, 'kcache'), ...args],
      { env: { ...process.env, KUBECONFIG: '/dev/null', HOME: lab.dir }, timeout: 30_000 }, (err, out, errText) => {
        if (err) reject(new Error(`kubectl ${args.join(' ')}: ${errText || err.message}`)); else resolve(out);
      });
  });
}

/**
 * One request through the ClusterIP from a pod: the endpoint that answered, or the failure. Async:
 * this process also carries the daemons' watches (the bridge), which a blocking curl would stall.
 */
function ask(pod: string, vip: string, port = 80): Promise<string> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', lab.podNs(pod), 'curl', '-s', '--max-time', '2', '-H', 'Connection: close', `http://${vip}:${port}/`],
      { encoding: 'utf8', timeout: 10_000 }, (err, out) => {
        if (err) { resolve(`failed: exit ${err.code}`); return; }
        const a = parseAnswers(out);
        resolve(a.length === 1 ? a[0].serverIp : 'no answer');
      });
  });
}

function service(name: string, ip: string, extra = ''): string {
  return `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default }
spec: { type: ClusterIP, clusterIP: ${ip}, ports: [{ protocol: TCP, port: 80, targetPort: 80 }]${extra} }
`;
}
function slice(svc: string, ips: string[]): string {
  return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${svc}-x, namespace: default, labels: { kubernetes.io/service-name: ${svc} } }
addressType: IPv4
ports: [{ name: "", protocol: TCP, port: 80 }]
endpoints: [${ips.map((ip) => `{ addresses: [${ip}], conditions: { ready: true } }`).join(', ')}]
`;
}
function manifest(name: string, ...docs: string[]): string {
  const f = path.join(lab.dir, `${name}.yaml`);
  fs.writeFileSync(f, docs.join('---\n'));
  return f;
}

describe.skipIf(!fs.existsSync(KUBECTL))('watch mode: two nodes follow kubectl through the API server double', () => {
  beforeAll(async () => {
    lab = await new Lab({ nodes: ['worker-1', 'worker-2'] }).build();
    api = await ApiDouble.start({ bookmarkIntervalMs: 5000 });
    // The lab's Nodes come from the API server; its KubeTunConfiguration from --config.
    const docs = parseAllDocuments(fs.readFileSync(LAB_CONFIG, 'utf8')).map((d) => d.toJS());
    api.apply(...docs.filter((d) => d?.kind === 'Node'));
    const config = path.join(lab.dir, 'kubetun-config.yaml');
    fs.writeFileSync(config, JSON.stringify(docs.find((d) => d?.kind === 'KubeTunConfiguration')));
    const sock = path.join(lab.dir, 'api.sock');
    bridge = net.createServer((c) => {
      const up = net.connect(api.port, '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => bridge.listen(sock, r));
    const forwarder = `require('net').createServer((c) => { const u = require('net').connect(${JSON.stringify(sock)});`
      + ` c.pipe(u).pipe(c); c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); }).listen(${FORWARD_PORT}, '127.0.0.1');`;
    const kubeconfig = path.join(lab.dir, 'kubeconfig');
    // client-node 1.x refuses plain http unless TLS verification is explicitly off.
    fs.writeFileSync(kubeconfig, `apiVersion: v1
kind: Config
clusters: [{ name: double, cluster: { server: "http://127.0.0.1:${FORWARD_PORT}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: {} }]
contexts: [{ name: c, context: { cluster: double, user: u } }]
current-context: c
`);
    for (const node of ['worker-1', 'worker-2'] as const) {
      lab.spawn(lab.nodeNs(node), [process.execPath, '-e', forwarder], { logFile: path.join(lab.dir, `fwd-${node}.log`) });
      await lab.waitListening(lab.nodeNs(node), 'tcp', FORWARD_PORT);
      daemons.push(await startKubeTun(lab, node, ['--kubeconfig', kubeconfig], config));
    }
  }, 90_000);

  afterAll(async () => {
    for (const d of daemons) await d.stop().catch(() => undefined);
    await new Promise<void>((r) => (bridge ? bridge.close(() => r()) : r()));
    await api?.close();
    await lab?.destroy();
  });

  it('the daemons listed the API server: its Nodes are their IPIP peers', () => {
    for (const d of daemons) expect(d.log()).toMatch(/"msg":"ipip socket open"/);
  });

  it('kubectl apply: a pod on the other node reaches the new ClusterIP; the slice moves -> new connections follow', async () => {
    const t0 = Date.now();
    await kubectl('apply', '-f', manifest('svc', service('watch-demo', VIP), slice('watch-demo', [NGINX1])));
    const applied = Date.now();
    await waitFor('the new ClusterIP to answer from worker-2', async () => (await ask('client', VIP)) === NGINX1, 15_000, { intervalMs: 20 });
    console.log(`kubectl apply (${applied - t0} ms) -> first answer through the new ClusterIP: ${Date.now() - applied} ms after kubectl returned`);
    expect(await ask('client1', VIP)).toBe(NGINX1);

    const t1 = Date.now();
    await kubectl('apply', '-f', manifest('svc2', slice('watch-demo', [NGINX3])));
    const applied2 = Date.now();
    await waitFor('new connections to reach the new endpoint', async () => (await ask('client', VIP)) === NGINX3, 15_000, { intervalMs: 20 });
    console.log(`kubectl apply of the moved slice (${applied2 - t1} ms) -> first new connection to it: ${Date.now() - applied2} ms after kubectl returned`);
    // What each daemon logged: the watch event and the sync that applied it (min-sync-period's token bucket may delay it).
    for (const d of daemons) {
      const lines = d.log().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((o) => o.time >= t1);
      const ev = lines.find((o) => o.msg === 'watch: changed'), sync = lines.find((o) => o.msg === 'rules reloaded');
      if (ev && sync) console.log(`${d.node}: watch event -> rules swapped ${sync.time - ev.time} ms (build+compile+swap ${sync.ms} ms)`);
    }
    await waitFor('worker-1 too', async () => (await ask('client1', VIP)) === NGINX3, 15_000, { intervalMs: 20 });
    for (let i = 0; i < 5; i++) expect(await ask('client', VIP)).toBe(NGINX3);
    for (let i = 0; i < 5; i++) expect(await ask('client1', VIP)).toBe(NGINX3);
  });

  it('sessionAffinity ClientIP: each client keeps its endpoint across an endpoint update', async () => {
    await kubectl('apply', '-f', manifest('sticky', service('watch-sticky', STICKY_VIP, ', sessionAffinity: ClientIP'), slice('watch-sticky', [NGINX1, NGINX2])));
    await waitFor('the sticky ClusterIP to answer', async () => [NGINX1, NGINX2].includes(await ask('client', STICKY_VIP)) && [NGINX1, NGINX2].includes(await ask('client1', STICKY_VIP)), 15_000, { intervalMs: 50 });
    const pods = ['client', 'client1'];
    const all = () => Promise.all(pods.map((p) => ask(p, STICKY_VIP)));
    const first = await all();
    for (let i = 0; i < 3; i++) expect(await all()).toEqual(first);
    const syncs = daemons.map((d) => (d.log().match(/"msg":"rules reloaded"/g) ?? []).length);
    await kubectl('apply', '-f', manifest('sticky2', slice('watch-sticky', [NGINX1, NGINX2, NGINX3])));
    await waitFor('both daemons to apply the endpoint update', () => daemons.every((d, i) => (d.log().match(/"msg":"rules reloaded"/g) ?? []).length > syncs[i]), 15_000);
    // With the xt_recent tables lost, each of the two clients would keep its endpoint with p = 1/3.
    for (let i = 0; i < 5; i++) expect(await all()).toEqual(first);
    // and new clients can reach the added endpoint: the update did apply
    expect(daemons[1].cli(['rules', '--live'])).toContain(NGINX3);
  });

  it('the event-loop delay is exported: kubetun_event_loop_delay_seconds in /metrics, eventLoopDelay in stats', () => {
    const text = lab.exec(lab.nodeNs('worker-2'), ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:10249/metrics']);
    expect(text).toMatch(/^# TYPE kubetun_event_loop_delay_seconds summary$/m);
    const p99 = Number(/^kubetun_event_loop_delay_seconds\{quantile="0.99"\} (\S+)$/m.exec(text)?.[1]);
    const count = Number(/^kubetun_event_loop_delay_seconds_count (\S+)$/m.exec(text)?.[1]);
    expect(count).toBeGreaterThan(100); // a 1 ms timer for several seconds
    expect(p99).toBeGreaterThan(0);
    const stats = JSON.parse(daemons[1].cli(['stats']));
    expect(stats.eventLoopDelay.count).toBeGreaterThan(100);
    expect(stats.eventLoopDelay.quantiles['0.99']).toBeGreaterThan(0);
  });

  it('kubectl delete: the ClusterIP no longer answers', async () => {
    expect(await ask('client', VIP)).toBe(NGINX3);
    await kubectl('delete', 'service', 'watch-demo');
    await waitFor('the deleted service to stop answering', async () => (await ask('client', VIP)).startsWith('failed'), 15_000, { intervalMs: 50 });
    expect(await ask('client1', VIP)).toMatch(/^failed/);
  });
});
