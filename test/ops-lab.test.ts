// Issue 6 acceptance on the real lab: metrics scraped before and after known traffic, health,
// pcap read back with tshark (NATed packets on one node, IPIP on two), conntrack -E, cleanup after
// a SIGKILL, and the daemon config file.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, LAB_CONFIG } from '../scripts/lab';
import { startKubeTun, RunningDaemon, parseAnswers, CLI } from './support/daemon';
import { waitFor } from './support/wait';

const VIP = '10.99.64.233';
const CLIENT1 = '10.1.139.70';
const REJECT_VIP = '10.96.0.30';   // a Service without endpoints: kube-proxy REJECTs
const EXTRA_VIP = '10.96.0.31';    // added by a reload

// The lab's objects plus a Service nobody serves (REJECT); written into the lab dir so the reload
// test can change it without touching lab/cluster.yaml.
const REJECT_SERVICE = `
---
apiVersion: v1
kind: Service
metadata: { name: no-endpoints, namespace: default }
spec:
  type: ClusterIP
  clusterIP: ${REJECT_VIP}
  ports:
    - { protocol: TCP, port: 80, targetPort: 80 }
`;
const EXTRA_SERVICE = `
---
apiVersion: v1
kind: Service
metadata: { name: extra, namespace: default }
spec:
  type: ClusterIP
  clusterIP: ${EXTRA_VIP}
  ports:
    - { protocol: TCP, port: 80, targetPort: 80 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: extra-aaaaa
  namespace: default
  labels: { kubernetes.io/service-name: extra }
addressType: IPv4
ports:
  - { name: "", protocol: TCP, port: 80 }
endpoints:
  - { addresses: [10.1.139.84], conditions: { ready: true }, nodeName: worker-1 }
`;

interface Sample { name: string; labels: Record<string, string>; value: number }
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
/** Sum of the samples named `name` whose labels include `labels`. */
function metric(s: Sample[], name: string, labels: Record<string, string> = {}): number {
  return s.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
}
function hasMetric(s: Sample[], name: string): boolean { return s.some((x) => x.name === name); }

/** GET from inside a namespace; returns status and body. */
function http(lab: Lab, ns: string, url: string): { status: number; body: string } {
  const out = lab.exec(ns, ['curl', '-s', '--max-time', '5', '-w', '\n%{http_code}', url]);
  const nl = out.lastIndexOf('\n');
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}

function tsharkFields(lab: Lab, file: string, fields: string[], filter?: string): string[][] {
  const out = lab.exec(lab.ns('ul'), ['tshark', '-r', file, ...(filter ? ['-Y', filter] : []), '-T', 'fields', '-E', 'separator=,', '-E', 'aggregator=+',
    ...fields.flatMap((f) => ['-e', f])]);
  return out.trim().split('\n').filter(Boolean).map((l) => l.split(','));
}

/** Exactly `n` UDP datagrams from a pod. */
function sendUdp(lab: Lab, ns: string, dst: string, port: number, n: number): void {
  lab.exec(ns, [process.execPath, '-e', `const s=require('dgram').createSocket('udp4');let k=0;
    const next=()=>{if(k++===${n})return s.close();s.send('x',${port},'${dst}',next)};next()`]);
}

describe('one node: metrics, health, pcap, conntrack -E, cleanup', () => {
  let lab: Lab;
  let kt: RunningDaemon;
  let config: string;
  let events: ChildProcess | undefined;
  const evLines: string[] = [];
  const metrics = () => parseMetrics(lab.exec(lab.nodeNs('worker-1'), ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:10249/metrics']));
  const curl = (ns: string, url: string, extra: string[] = []) => lab.exec(ns, ['curl', '-s', '--max-time', '5', ...extra, url]);

  beforeAll(async () => {
    lab = await new Lab({ nodes: ['worker-1'] }).build();
    config = path.join(lab.dir, 'cluster.yaml');
    fs.writeFileSync(config, fs.readFileSync(LAB_CONFIG, 'utf8') + REJECT_SERVICE);
    kt = await startKubeTun(lab, 'worker-1', ['--sync-period', '1s'], config);
  });

  afterAll(async () => {
    events?.kill('SIGKILL');
    await kt?.stop();
    await lab?.destroy();
  });

  it('/healthz and /readyz answer 200 in the node namespace, kube-proxy style', () => {
    const h = http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/healthz');
    expect(h.status).toBe(200);
    const j = JSON.parse(h.body);
    expect(j.nodeEligible).toBe(true);
    expect(Date.parse(j.lastUpdated)).toBeGreaterThan(Date.now() - 60_000);
    expect(http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/readyz')).toEqual({ status: 200, body: 'ok\n' });
    expect(http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/livez').status).toBe(200);
  });

  it('/metrics moves by the traffic sent: packets, NAT allocations, conntrack inserts, drops by reason', () => {
    const N = 40, M = 10, K = 7, J = 3;
    const before = metrics();
    for (const name of ['kubetun_packets_total', 'kubetun_bytes_total', 'kubetun_drops_total', 'kubetun_conntrack_max',
      'kubetun_nat_allocations_total', 'kubetun_nat_clashes_total', 'kubetun_batch_size_bucket', 'kubeproxy_sync_proxy_rules_duration_seconds_bucket',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'kubeproxy_sync_proxy_rules_service_changes_total',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total', 'process_cpu_seconds_total']) expect(hasMetric(before, name), name).toBe(true);
    // N pod connections (DNAT), M from the node itself (DNAT + SNAT), K datagrams to a port the
    // ClusterIP does not serve (dropped: no-service), J connections to a Service without endpoints
    // (REJECT: one SYN each, answered by a port-unreachable kube-tun generates).
    expect(parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/[1-${N}]`, ['-H', 'Connection: close']))).toHaveLength(N);
    expect(parseAnswers(curl(lab.nodeNs('worker-1'), `http://${VIP}:9999/[1-${M}]`, ['-H', 'Connection: close']))).toHaveLength(M);
    sendUdp(lab, lab.podNs('client1'), VIP, 1234, K);
    for (let j = 0; j < J; j++) {
      const r = spawnSync('ip', ['netns', 'exec', lab.podNs('client1'), 'curl', '-s', '--max-time', '3', `http://${REJECT_VIP}/`]);
      expect(r.status).toBe(7); // curl: couldn't connect (ECONNREFUSED from the ICMP port-unreachable)
    }
    const after = metrics();
    const d = (name: string, labels: Record<string, string> = {}) => metric(after, name, labels) - metric(before, name, labels);

    expect(d('kubetun_nat_allocations_total', { type: 'dnat' })).toBe(N + M);
    expect(d('kubetun_nat_allocations_total', { type: 'snat' })).toBe(M);
    expect(d('kubetun_conntrack_inserts_total')).toBe(N + M);
    expect(d('kubetun_drops_total', { reason: 'no-service' })).toBe(K);
    expect(d('kubetun_drops_total', { reason: 'rule-reject' })).toBe(J);
    expect(d('kubetun_packets_total', { direction: 'tx_generated' })).toBe(J);
    // A TCP connection through a ClusterIP is at least 7 packets through the TUN (SYN, SYN-ACK, ACK,
    // request, response, two FINs): every one is read, rewritten and written back.
    const rx = d('kubetun_packets_total', { direction: 'rx_tun' }), tx = d('kubetun_packets_total', { direction: 'tx_local' });
    expect(rx).toBeGreaterThanOrEqual(7 * (N + M) + K + J);
    expect(tx).toBeGreaterThanOrEqual(7 * (N + M));
    // Every packet read is either written or dropped for a counted reason.
    expect(rx).toBe(tx + d('kubetun_drops_total'));
    expect(d('kubetun_bytes_total', { direction: 'rx_tun' })).toBeGreaterThanOrEqual(40 * rx);
    expect(d('kubetun_batch_size_sum')).toBe(rx);
    expect(d('kubetun_batch_size_count')).toBeGreaterThan(0);
    expect(d('kubetun_batch_size_count')).toBeLessThanOrEqual(rx);
    // The closed connections are still in the table, by state.
    const tcpEntries = after.filter((s) => s.name === 'kubetun_conntrack_entries' && s.labels.proto === 'tcp').reduce((a, s) => a + s.value, 0);
    expect(tcpEntries).toBeGreaterThanOrEqual(N + M);
    expect(metric(after, 'kubetun_conntrack_max')).toBe(262144);
    expect(metric(after, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 600);
    expect(metric(after, 'kubeproxy_sync_proxy_rules_service_changes_total')).toBeGreaterThanOrEqual(9);
  });

  it('a reload is a sync: duration observed, service and endpoint changes counted, new Service served', async () => {
    const before = metrics();
    fs.appendFileSync(config, EXTRA_SERVICE);
    await waitFor('the reload', () => /"msg":"rules reloaded"/.test(kt.log()));
    const after = metrics();
    const d = (name: string) => metric(after, name) - metric(before, name);
    expect(d('kubeproxy_sync_proxy_rules_duration_seconds_count')).toBe(1);
    expect(d('kubeproxy_sync_proxy_rules_service_changes_total')).toBe(1);
    expect(d('kubeproxy_sync_proxy_rules_endpoint_changes_total')).toBe(1);
    expect(metric(after, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds')).toBeGreaterThan(metric(before, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'));
    expect(parseAnswers(curl(lab.podNs('client1'), `http://${EXTRA_VIP}/`))).toHaveLength(1);
  });

  it('/healthz goes 503 when a change is not applied for 2 sync periods, and recovers when it is', async () => {
    const good = fs.readFileSync(config, 'utf8');
    try {
      const written = Date.now();
      fs.writeFileSync(config, good + '\n---\napiVersion: v1\nkind: Service\nmetadata: { name: broken }\nspec: { ports: nope }\n');
      await waitFor('the failed reload', () => /reload failed/.test(kt.log()));
      const healthz = () => http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/healthz');
      // --sync-period 1s: the change goes stale 2 s after the daemon saw it (never before the write),
      // so until then /healthz must say 200; a slow machine may only get here later.
      const early = healthz().status;
      const elapsed = Date.now() - written;
      expect(early === 200 || elapsed >= 2000, `/healthz ${early} only ${elapsed} ms after the bad write`).toBe(true);
      const h = await waitFor('/healthz 503', () => { const r = healthz(); return r.status === 503 ? r : undefined; }, 15_000);
      expect(Date.now() - written).toBeGreaterThanOrEqual(2000);
      expect(Date.parse(JSON.parse(h.body).lastUpdated)).toBeLessThan(Date.now() - 2000);
      expect(http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/readyz').status).toBe(200); // still forwarding
      expect(parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/`))).toHaveLength(1); // old rules kept
    } finally {
      fs.writeFileSync(config, good);
    }
    await waitFor('/healthz 200 again', () => http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/healthz').status === 200);
  });

  it('pcap toggled at runtime: tshark shows the connection to the ClusterIP before NAT and to the endpoint after', () => {
    const file = path.join(lab.dir, 'runtime.pcap');
    expect(JSON.parse(kt.cli(['pcap', 'status'])).enabled).toBe(false);
    expect(JSON.parse(kt.cli(['pcap', 'start', file]))).toMatchObject({ enabled: true, file, written: 0 });
    const answers = parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/[1-3]`, ['-H', 'Connection: close']));
    expect(answers).toHaveLength(3);
    const st = JSON.parse(kt.cli(['pcap', 'stop']));
    expect(st).toMatchObject({ enabled: false, file, stopped: 'disabled' });
    expect(st.written).toBeGreaterThanOrEqual(3 * 7 * 2);
    const rows = tsharkFields(lab, file, ['ip.src', 'ip.dst', 'tcp.srcport', 'tcp.dstport', 'tcp.flags.str'], 'tcp.flags.syn == 1 && tcp.flags.ack == 0');
    // Each SYN twice: as the pod sent it (to the ClusterIP) and as kube-tun wrote it (to an endpoint, same source port).
    const toVip = rows.filter((r) => r[0] === CLIENT1 && r[1] === VIP && r[3] === '9999');
    const toEp = rows.filter((r) => r[0] === CLIENT1 && /^10\.1\.139\.(84|93)$/.test(r[1]) && r[3] === '80');
    expect(toVip).toHaveLength(3);
    expect(toEp).toHaveLength(3);
    expect(toEp.map((r) => r[2]).sort()).toEqual(toVip.map((r) => r[2]).sort());
    // And the replies: from the endpoint in, from the ClusterIP out.
    const all = tsharkFields(lab, file, ['ip.src', 'ip.dst', 'tcp.srcport']);
    expect(all.some((r) => /^10\.1\.139\.(84|93)$/.test(r[0]) && r[1] === CLIENT1 && r[2] === '80')).toBe(true);
    expect(all.some((r) => r[0] === VIP && r[1] === CLIENT1 && r[2] === '9999')).toBe(true);
    // A file the daemon cannot create is an error on stderr, exit 1.
    const bad = spawnSync(process.execPath, [CLI, 'pcap', 'start', '/nonexistent/dir/x.pcap', '--control-socket', kt.socket], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/ENOENT/);
  });

  it('conntrack -E streams NEW, UPDATEs and DESTROY (conntrack -D) for a short connection, in conntrack-tools format', async () => {
    let buf = '';
    events = spawn(process.execPath, [CLI, 'conntrack', '-E', '--control-socket', kt.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    events.stdout!.setEncoding('utf8');
    events.stdout!.on('data', (s: string) => { buf += s; const parts = buf.split('\n'); buf = parts.pop()!; evLines.push(...parts); });
    await waitFor('the event listener', () => JSON.parse(kt.cli(['stats'])).conntrack.eventListeners === 1);
    expect(parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/`, ['--local-port', '40123', '-H', 'Connection: close']))).toHaveLength(1);
    const mine = () => evLines.filter((l) => l.includes(`src=${CLIENT1} dst=${VIP} sport=40123 `));
    await waitFor('TIME_WAIT', () => mine().some((l) => l.includes('TIME_WAIT')));
    // As conntrack -D: the deleted entry on stdout, the count on stderr.
    const del = spawnSync(process.execPath, [CLI, 'conntrack', '-D', '-p', 'tcp', '-s', CLIENT1, '--sport', '40123', '--control-socket', kt.socket], { encoding: 'utf8' });
    expect(del.status, del.stderr).toBe(0);
    expect(del.stdout).toMatch(new RegExp(`^tcp +6 \\d+ TIME_WAIT src=${CLIENT1.replace(/\./g, '\\.')} dst=${VIP.replace(/\./g, '\\.')} sport=40123 dport=9999 .*\\n$`));
    expect(del.stderr).toBe('kube-tun conntrack: 1 flow entries have been deleted.\n');
    await waitFor('DESTROY', () => mine().some((l) => l.includes('[DESTROY]')));
    const ev = mine();
    const tuple = `src=${CLIENT1} dst=${VIP} sport=40123 dport=9999`;
    const reply = `src=10\\.1\\.139\\.(?:84|93) dst=${CLIENT1.replace(/\./g, '\\.')} sport=80 dport=40123`;
    expect(ev[0]).toMatch(new RegExp(`^    \\[NEW\\] tcp      6 120 SYN_SENT ${tuple} \\[UNREPLIED\\] ${reply}$`));
    expect(ev.some((l) => new RegExp(`^ \\[UPDATE\\] tcp      6 60 SYN_RECV ${tuple} ${reply}$`).test(l))).toBe(true);
    expect(ev.some((l) => new RegExp(`^ \\[UPDATE\\] tcp      6 432000 ESTABLISHED ${tuple} ${reply} \\[ASSURED\\]$`).test(l))).toBe(true);
    expect(ev.some((l) => new RegExp(`^ \\[UPDATE\\] tcp      6 120 TIME_WAIT ${tuple} ${reply} \\[ASSURED\\]$`).test(l))).toBe(true);
    // Deleted by hand, the kernel's DESTROY still shows the time left (an expiry's does not: next test).
    expect(ev.at(-1)).toMatch(new RegExp(`^\\[DESTROY\\] tcp      6 1[01]\\d TIME_WAIT ${tuple} ${reply} \\[ASSURED\\]$`));
    expect(ev.filter((l) => l.includes('[NEW]'))).toHaveLength(1);
    expect(ev.filter((l) => l.includes('[DESTROY]'))).toHaveLength(1);
  });

  it('conntrack -L/-D/-C/-S answer like conntrack-tools: summary on stderr, -D exits 1 on no match, -o extended, usage errors', () => {
    const ct = (...args: string[]) => spawnSync(process.execPath, [CLI, 'conntrack', ...args, '--control-socket', kt.socket], { encoding: 'utf8' });
    expect(parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/`, ['--local-port', '40125', '-H', 'Connection: close']))).toHaveLength(1);
    const list = ct('-L', '-p', 'tcp', '--sport', '40125');
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^tcp +6 \d+ \S+ src=10\.1\.139\.70 dst=10\.99\.64\.233 sport=40125 dport=9999 /);
    expect(list.stdout).not.toMatch(/flow entries/);
    expect(list.stderr).toBe('kube-tun conntrack: 1 flow entries have been shown.\n');
    const ext = ct('-L', '-o', 'extended', '-p', 'tcp', '--sport', '40125');
    const noTimeout = (x: string) => x.replace(/^((?:ipv4 +2 )?tcp +6 )\d+/, '$1');  // the seconds left tick between the calls
    expect(ext.stdout).toMatch(/^ipv4     2 tcp +6 \d+ /);
    expect(noTimeout(ext.stdout)).toBe(noTimeout(`ipv4     2 ${list.stdout}`));
    // -C counts what the table holds, -S prints the statistics line conntrack-tools prints per CPU.
    const count = ct('-C');
    expect(count.stdout).toMatch(/^\d+\n$/);
    expect(Number(count.stdout)).toBe(JSON.parse(kt.cli(['stats'])).conntrack.entries);
    expect(ct('-S').stdout).toMatch(/^cpu=0 +\tfound=\d+ invalid=\d+ insert=[1-9]\d* insert_failed=\d+ drop=\d+ early_drop=\d+ error=0 search_restart=0 clash_resolve=0 chaintoolong=0 \n$/);
    // Nothing to delete: exit 1, like conntrack -D.
    const none = ct('-D', '-p', 'udp', '--sport', '9');
    expect(none.status).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toBe('kube-tun conntrack: 0 flow entries have been deleted.\n');
    // A typo in a filter is a usage error naming the value, not an empty listing.
    for (const [args, msg] of [
      [['-L', '--state', 'ESTABLISHD'], '--state "ESTABLISHD": not a TCP state'],
      [['-L', '-p', 'tcpp'], '-p "tcpp": unknown protocol'],
      [['-L', '-s', '10.1'], '-s "10.1": not an IPv4 address'],
      [['-L', '-o', 'xml'], '-o "xml": only -o extended'],
      [['-L', '-C'], 'give exactly one of -L, -E, -D, -C, -S'],
    ] as const) {
      const r = ct(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(msg);
    }
  });

  it('conntrack -E shows DESTROY when an entry expires: a connection reset goes CLOSE (10 s) and is swept', async () => {
    const start = Date.now();
    lab.exec(lab.podNs('client1'), [process.execPath, '-e',
      `const s=require('net').connect({port:9999,host:'${VIP}',localPort:40124},()=>s.resetAndDestroy());s.on('error',()=>{})`]);
    expect(events, 'the -E reader of the previous test').toBeDefined();
    const ours = () => evLines.filter((l) => l.includes(`src=${CLIENT1} dst=${VIP} sport=40124 `));
    await waitFor('CLOSE', () => ours().some((l) => / CLOSE src=/.test(l)), 5000);
    await waitFor('DESTROY by expiry', () => ours().some((l) => l.startsWith('[DESTROY]')), 15_000);
    const took = Date.now() - start;
    expect(took).toBeGreaterThanOrEqual(9_000);
    const ev = ours();
    expect(ev[0]).toMatch(/^    \[NEW\] tcp      6 120 SYN_SENT /);
    expect(ev.at(-2)).toMatch(/^ \[UPDATE\] tcp      6 10 CLOSE src=.* \[ASSURED\]$/);
    expect(ev.at(-1)).toMatch(/^\[DESTROY\] tcp      6 CLOSE src=10\.1\.139\.70 dst=10\.99\.64\.233 sport=40124 dport=9999 src=10\.1\.139\.(84|93) dst=10\.1\.139\.70 sport=80 dport=40124 \[ASSURED\]$/);
    // The -E reader ends with conntrack-tools' count on stderr.
    let err = '';
    events!.stderr!.on('data', (s) => { err += s; });
    events!.kill('SIGINT');
    await new Promise((r) => events!.once('exit', r));
    expect(err).toMatch(/kube-tun conntrack: \d+ flow events have been shown\./);
    events = undefined;
  });

  it('cleanup refuses while the daemon runs; after a SIGKILL it removes everything, and says so only once', async () => {
    const ns = lab.nodeNs('worker-1');
    const cleanup = () => spawnSync('ip', ['netns', 'exec', ns, process.execPath, CLI, 'cleanup', '--tun', 'kt0', '--control-socket', kt.socket], { encoding: 'utf8' });
    const refused = cleanup();
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/kt0 is held open by a running process/);
    const fresh = lab.exec(lab.podNs('client1'), ['ip', 'rule', 'show']);
    kt.child.kill('SIGKILL');
    await waitFor('the daemon to die', () => kt.child.exitCode !== null || kt.child.signalCode !== null);
    // What a killed daemon leaves behind: its policy rules and the local table moved away from 0.
    const left = lab.exec(ns, ['ip', 'rule', 'show']);
    expect(left).not.toBe(fresh);
    expect(left).toMatch(/^300:\s+from all lookup local/m);
    const first = cleanup();
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/removed rule pref 100\n/);
    expect(first.stdout).toMatch(/^local table restored at pref 0$/m);
    expect(first.stdout).toMatch(/removed stale control socket /);
    expect(lab.exec(ns, ['ip', 'rule', 'show'])).toBe(fresh);
    expect(spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'show', 'kt0']).status).not.toBe(0);
    expect(lab.exec(ns, ['ip', 'route', 'show', 'table', 'all'])).not.toMatch(/kt0|table (100|200)\b/);
    const second = cleanup();
    expect(second.status).toBe(0);
    expect(second.stdout).toBe('nothing to clean up\n');
    // The node routes like before kube-tun: a pod reaches another pod directly.
    expect(parseAnswers(curl(lab.podNs('client1'), 'http://10.1.139.84/'))).toHaveLength(1);
  });

  it('a port it cannot bind fails the start with the flag named, and leaves nothing behind', () => {
    const ns = lab.nodeNs('worker-1');
    const fresh = lab.exec(lab.podNs('client1'), ['ip', 'rule', 'show']);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, CLI, 'run', '--config', config, '--node', 'worker-1',
      '--control-socket', path.join(lab.dir, 'clash.sock'), '--metrics-bind-address', '127.0.0.1:10249', '--healthz-bind-address', '127.0.0.1:10249',
      '--log-level', 'silent'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^kube-tun: (healthz|metrics) server: cannot listen on 127\.0\.0\.1:10249 \(--(healthz|metrics)-bind-address\): .*EADDRINUSE/);
    expect(lab.exec(ns, ['ip', 'rule', 'show'])).toBe(fresh);
    expect(spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'show', 'kt0']).status).not.toBe(0);
    expect(fs.existsSync(path.join(lab.dir, 'clash.sock'))).toBe(false);
  });
});

describe('two nodes: --daemon-config, --ready-fd, pcap with IPIP', () => {
  let lab: Lab;
  let w1: ChildProcess | undefined;
  let w2: RunningDaemon;
  let w1Log = '';
  const pcapFile = () => path.join(lab.dir, 'w2.pcap');

  beforeAll(async () => {
    lab = await new Lab({ nodes: ['worker-1', 'worker-2'], outside: false }).build();
    // worker-1 reports readiness on fd 3: READY=1 only once the servers listen.
    w1Log = path.join(lab.dir, 'kube-tun-w1.log');
    const log = fs.openSync(w1Log, 'a');
    w1 = spawn('ip', ['netns', 'exec', lab.nodeNs('worker-1'), process.execPath, CLI, 'run', '--config', LAB_CONFIG, '--hostname-override', 'worker-1',
      '--control-socket', path.join(lab.dir, 'w1.sock'), '--ready-fd', '3'], { stdio: ['ignore', log, log, 'pipe'] });
    fs.closeSync(log);
    // worker-2 takes most of its settings from a KubeTunDaemonConfiguration; flags win over it.
    const dc = path.join(lab.dir, 'w2-daemon.yaml');
    fs.writeFileSync(dc, [
      'apiVersion: kubetun.dev/v1alpha1',
      'kind: KubeTunDaemonConfiguration',
      'tun: ignored0                       # --tun kt0 on the command line wins',
      'metricsBindAddress: 127.0.0.1:20249',
      'healthzBindAddress: 127.0.0.1:20256',
      'syncPeriod: 10s',
      'pcap: w2.pcap                       # relative to this file',
      'pcapMaxPackets: 100000',
      '',
    ].join('\n'));
    w2 = await startKubeTun(lab, 'worker-2', ['--daemon-config', dc]);
  });

  afterAll(async () => {
    if (w1 && w1.exitCode === null) {
      w1.kill('SIGTERM');
      await waitFor('worker-1 to exit', () => w1!.exitCode !== null || w1!.signalCode !== null, 2500).catch(() => w1!.kill('SIGKILL'));
    }
    await w2?.stop();
    await lab?.destroy();
  });

  it('--ready-fd: READY=1 then EOF, after which /readyz and /metrics answer at once', async () => {
    let got = '';
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no READY on fd 3; log:\n${fs.readFileSync(w1Log, 'utf8')}`)), 15_000);
      w1!.stdio[3]!.on('data', (d: Buffer) => { got += d.toString(); });
      w1!.stdio[3]!.on('end', () => { clearTimeout(t); resolve(); });
    });
    expect(got).toBe('READY=1\n');
    expect(http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10256/readyz').status).toBe(200);
    expect(http(lab, lab.nodeNs('worker-1'), 'http://127.0.0.1:10249/metrics').status).toBe(200);
  });

  it('--daemon-config: the file sets the bind addresses and the capture, flags win (tun kt0)', () => {
    const ns = lab.nodeNs('worker-2');
    expect(http(lab, ns, 'http://127.0.0.1:20256/healthz').status).toBe(200);
    expect(http(lab, ns, 'http://127.0.0.1:20249/metrics').status).toBe(200);
    expect(spawnSync('ip', ['netns', 'exec', ns, 'curl', '-s', '--max-time', '2', 'http://127.0.0.1:10249/metrics']).status).toBe(7);
    expect(lab.exec(ns, ['ip', 'link', 'show', 'kt0'])).toMatch(/kt0/);
    expect(JSON.parse(w2.cli(['pcap', 'status']))).toMatchObject({ enabled: true, file: pcapFile(), maxPackets: 100000 });
  });

  it('tshark on worker-2\'s capture: the ClusterIP packets before NAT and the IPIP packets with inner addresses after', () => {
    const before = parseMetrics(lab.exec(lab.nodeNs('worker-2'), ['curl', '-s', 'http://127.0.0.1:20249/metrics']));
    const answers = parseAnswers(lab.exec(lab.podNs('client'), ['curl', '-s', '--max-time', '5', '-H', 'Connection: close', `http://${VIP}:9999/[1-5]`]));
    expect(answers).toHaveLength(5);
    for (const a of answers) expect(a.client).toBe('10.1.236.141');
    const after = parseMetrics(lab.exec(lab.nodeNs('worker-2'), ['curl', '-s', 'http://127.0.0.1:20249/metrics']));
    const st = JSON.parse(w2.cli(['pcap', 'stop']));
    expect(st.enabled).toBe(false);
    const rows = tsharkFields(lab, pcapFile(), ['ip.src', 'ip.dst', 'ip.proto', 'tcp.srcport', 'tcp.dstport']);
    // In: the pod's packets to the ClusterIP, as the kernel routed them into the TUN.
    const toVip = rows.filter((r) => r[0] === '10.1.236.141' && r[1] === VIP && r[2] === '6');
    // Out: the same connections DNATed and encapsulated towards worker-1 (outer 192.168.2.3 -> 192.168.2.2, protocol 4).
    const ipipOut = rows.filter((r) => r[0] === '192.168.2.3+10.1.236.141' && r[2] === '4+6');
    // In from the raw IPIP socket: the endpoints' replies with their outer header.
    const ipipIn = rows.filter((r) => /^192\.168\.2\.2\+10\.1\.139\.(84|93)$/.test(r[0]) && r[1] === '192.168.2.3+10.1.236.141' && r[2] === '4+6');
    // Out: the replies un-NATed, from the ClusterIP.
    const fromVip = rows.filter((r) => r[0] === VIP && r[1] === '10.1.236.141');
    for (const set of [toVip, ipipOut, ipipIn, fromVip]) expect(set.length).toBeGreaterThanOrEqual(5 * 3);
    for (const r of ipipOut) expect(r[1]).toMatch(/^192\.168\.2\.2\+10\.1\.139\.(84|93)$/);
    expect(ipipOut.length).toBe(toVip.length);
    expect(ipipIn.length).toBe(fromVip.length);
    // The metrics counted the same packets.
    const d = (dir: string) => metric(after, 'kubetun_packets_total', { direction: dir }) - metric(before, 'kubetun_packets_total', { direction: dir });
    expect(d('tx_ipip')).toBe(ipipOut.length);
    expect(d('rx_ipip')).toBe(ipipIn.length);
    expect(metric(after, 'kubetun_nat_allocations_total', { type: 'dnat' }) - metric(before, 'kubetun_nat_allocations_total', { type: 'dnat' })).toBe(5);
  });
});

describe('daemon config file errors', () => {
  it('an unknown key fails with its name, the file and line, exit code 2, before touching the network', () => {
    const dir = fs.mkdtempSync('/tmp/kt-dc-');
    try {
      const f = path.join(dir, 'kube-tun.yaml');
      fs.writeFileSync(f, 'apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunDaemonConfiguration\nhostnameOverride: worker-1\nmetricsBindAdress: 0.0.0.0:10249\n');
      const r = spawnSync(process.execPath, [CLI, 'run', '--config', LAB_CONFIG, '--daemon-config', f], { encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`kube-tun: --daemon-config: ${f}:4: unknown key "metricsBindAdress" (did you mean "metricsBindAddress"?)\n`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bad flag value is a usage error too', () => {
    const r = spawnSync(process.execPath, [CLI, 'run', '--config', LAB_CONFIG, '--node', 'worker-1', '--metrics-bind-address', '1.2.3.4:99999'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--metrics-bind-address: .*port must be 0-65535/);
  });
});
