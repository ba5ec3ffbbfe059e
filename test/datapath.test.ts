// Issue 2 acceptance: one node, real namespaces, real nginx, kube-tun doing the service NAT.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { Lab } from '../scripts/lab';
import { startKubeTun, OFFLOAD_MODES, bigFileFixture, downloadBlobSha256, RunningDaemon, parseAnswers, countBy, expectBinomial } from './support/daemon';
import { waitFor } from './support/wait';

const VIP = '10.99.64.233';
let lab: Lab;
let kt: RunningDaemon;

function curl(ns: string, url: string, extra: string[] = []): string {
  return lab.exec(ns, ['curl', '-s', '--max-time', '5', ...extra, url]);
}
/** 1 GiB for nginx to serve, made once per file (hard-linked into each lab's nginx directories). */
const BIG = bigFileFixture('datapath-1g', 1 << 30);

describe.each(OFFLOAD_MODES)('--offload %s', (offload) => {
  beforeAll(async () => {
    lab = await new Lab({ nodes: ['worker-1'] }).build();
    kt = await startKubeTun(lab, 'worker-1', [], undefined, offload);
  });

  afterAll(async () => {
    await kt?.stop();
    await lab?.destroy();
  });
  describe('one node: pod, node and hairpin to a ClusterIP', () => {
    it('leaves the kernel with no NAT or filter rules: every translation is ours', () => {
      expect(lab.kernelRuleCount()).toBe(0);
    });

    it('spreads 200 connections from a pod over both endpoints, no SNAT, one endpoint per connection', () => {
      const out = curl(lab.podNs('client1'), `http://${VIP}:9999/[1-200]`, ['-H', 'Connection: close']);
      const answers = parseAnswers(out);
      expect(answers).toHaveLength(200);
      const byServer = countBy(answers, (a) => a.server);
      expect(Object.keys(byServer).sort()).toEqual(['nginx1', 'nginx2']);
      expectBinomial(byServer, 200, 0.5);
      // The backend saw the pod's own address: DNAT only.
      expect(new Set(answers.map((a) => a.client))).toEqual(new Set(['10.1.139.70']));
      // Each conntrack entry names one endpoint in its reply tuple, and they are all closed properly.
      const lines = kt.cli(['conntrack', '-L', '-p', 'tcp', '-d', VIP]).split('\n').filter((l) => l.startsWith('tcp'));
      expect(lines.length).toBeGreaterThanOrEqual(200);
      for (const l of lines) {
        expect(l).toMatch(/^tcp +6 \d+ (TIME_WAIT|CLOSE|FIN_WAIT|LAST_ACK|CLOSE_WAIT) src=10\.1\.139\.70 dst=10\.99\.64\.233 sport=\d+ dport=9999 src=10\.1\.139\.(84|93) dst=10\.1\.139\.70 sport=80 dport=\d+ \[ASSURED\] mark=0 use=1$/);
      }
    });

    it('keeps every request of one keep-alive connection on the same endpoint', () => {
      for (let k = 0; k < 5; k++) {
        const answers = parseAnswers(curl(lab.podNs('client1'), `http://${VIP}:9999/[1-20]`));
        expect(answers).toHaveLength(20);
        expect(new Set(answers.map((a) => a.server)).size).toBe(1);
      }
    });

    it('masquerades the node itself: the backend sees the node address', () => {
      const answers = parseAnswers(curl(lab.nodeNs('worker-1'), `http://${VIP}:9999/[1-10]`, ['-H', 'Connection: close']));
      expect(answers).toHaveLength(10);
      for (const a of answers) expect(a.client).toBe('192.168.2.2');
      const lines = kt.cli(['conntrack', '-L', '-s', '192.168.2.2', '-d', VIP]).split('\n').filter((l) => l.startsWith('tcp'));
      expect(lines.length).toBeGreaterThanOrEqual(10);
      for (const l of lines) expect(l).toMatch(/ src=10\.1\.139\.(84|93) dst=192\.168\.2\.2 sport=80 dport=\d+ \[ASSURED\]/);
    });

    it('hairpin: nginx1 reaching itself through the Service sees the node address, as in seed 000 c', () => {
      const answers = parseAnswers(curl(lab.podNs('nginx1'), `http://${VIP}:9999/[1-40]`, ['-H', 'Connection: close']));
      expect(answers).toHaveLength(40);
      const self = answers.filter((a) => a.server === 'nginx1');
      const other = answers.filter((a) => a.server === 'nginx2');
      expect(self.length).toBeGreaterThan(0);
      expect(other.length).toBeGreaterThan(0);
      for (const a of self) expect(a.client).toBe('192.168.2.2');   // KUBE-SEP's -s <endpoint> -j KUBE-MARK-MASQ
      for (const a of other) expect(a.client).toBe('10.1.139.84');  // pod source, no SNAT
      const lines = kt.cli(['conntrack', '-L', '-s', '10.1.139.84', '-r', '10.1.139.84']).split('\n').filter((l) => l.startsWith('tcp'));
      expect(lines.length).toBe(self.length);
      for (const l of lines) {
        expect(l).toMatch(/^tcp +6 \d+ (TIME_WAIT|CLOSE) src=10\.1\.139\.84 dst=10\.99\.64\.233 sport=\d+ dport=9999 src=10\.1\.139\.84 dst=192\.168\.2\.2 sport=80 dport=\d+ \[ASSURED\] mark=0 use=1$/);
      }
    });

    it('lists a live connection as ESTABLISHED [ASSURED] while it is open', async () => {
      // A client that connects, sends nothing and holds the connection for a while.
      const holder = spawn('ip', ['netns', 'exec', lab.podNs('client1'), process.execPath, '-e',
        `const s=require('net').connect(9999,'${VIP}',()=>{console.log('up');setTimeout(()=>s.end(),60000)});s.on('error',e=>{console.error(e.message);process.exit(1)})`],
        { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((resolve, reject) => {
          holder.stdout!.on('data', (d) => { if (String(d).includes('up')) resolve(); });
          holder.on('exit', (c) => reject(new Error(`holder exited ${c}`)));
          setTimeout(() => reject(new Error('holder did not connect')), 15_000);
        });
        // The client's last handshake ACK may still be on its way through kube-tun: poll for the entry.
        const listEst = () => kt.cli(['conntrack', '-L', '-p', 'tcp', '--state', 'ESTABLISHED', '-d', VIP]).split('\n').filter((l) => l.startsWith('tcp'));
        await waitFor('the held connection to be ESTABLISHED in conntrack', () => listEst().length > 0, 10_000);
        const est = listEst();
        expect(est).toHaveLength(1);
        expect(est[0]).toMatch(/^tcp +6 43\d{4} ESTABLISHED src=10\.1\.139\.70 dst=10\.99\.64\.233 sport=\d+ dport=9999 src=10\.1\.139\.(84|93) dst=10\.1\.139\.70 sport=80 dport=\d+ \[ASSURED\] mark=0 use=1$/);
      } finally {
        holder.kill();
      }
    });

    it('counts what it did: packets in and out, new connections, DNAT and SNAT', () => {
      const s = JSON.parse(kt.cli(['stats']));
      expect(s.connections.new).toBeGreaterThanOrEqual(250);
      expect(s.connections.dnat).toBeGreaterThanOrEqual(250);
      expect(s.connections.snat).toBeGreaterThanOrEqual(10);
      expect(s.packets.rxTun).toBeGreaterThan(1000);
      expect(s.packets.txLocal).toBeGreaterThan(1000);
    });

    it('drops a ClusterIP nobody serves and counts the reason', () => {
      expect(() => curl(lab.podNs('client1'), 'http://10.99.64.233:1234/', ['--max-time', '1'])).toThrow();
      const s = JSON.parse(kt.cli(['stats']));
      expect(s.drops['no-service']).toBeGreaterThanOrEqual(1);
    });

    it('1 GiB from nginx through the ClusterIP to a pod on the same node arrives with the right sha256', () => {
      expect(downloadBlobSha256(lab, BIG.file, lab.podNs('client1'), `http://${VIP}:9999/blob`, 150)).toBe(BIG.sha);
    }, 160_000);
  });
});
