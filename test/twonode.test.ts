// Issue 4 acceptance: the whole lab of LAB.md, two kube-tun instances, IPIP between them.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab, DNS_NAME, DNS_ANSWER } from '../scripts/lab';
import { startKubeTun, OFFLOAD_MODES, bigFileFixture, downloadBlobSha256, RunningDaemon, parseAnswers, countBy, expectBinomial } from './support/daemon';
import { waitFor } from './support/wait';

const VIP = '10.99.64.233';
let lab: Lab;
let w1: RunningDaemon;
let w2: RunningDaemon;

function curl(ns: string, url: string, extra: string[] = []): string {
  return lab.exec(ns, ['curl', '-s', '--max-time', '5', ...extra, url]);
}
const close = ['-H', 'Connection: close'];
const ctLines = (d: RunningDaemon, args: string[]) => d.cli(['conntrack', '-L', ...args]).split('\n').filter((l) => /^(tcp|udp|icmp) /.test(l));

/**
 * Capture on the underlay bridge port of a node while `fn` runs; returns tshark's field lines once
 * `until(lines)` holds (polled: tcpdump -U writes each packet as it sees it), or throws after 15 s.
 */
async function capture(port: string, filter: string, fields: string[], fn: () => void, until: (lines: string[]) => boolean): Promise<string[]> {
  const file = path.join(lab.dir, `cap-${port}-${Date.now()}.pcap`);
  const cap = spawn('ip', ['netns', 'exec', lab.ns('ul'), 'tcpdump', '-i', port, '-U', '-w', file, '-c', '200', filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  cap.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const read = (): string[] | undefined => {
    try {
      const out = lab.exec(lab.ns('ul'), ['tshark', '-r', file, '-T', 'fields', '-E', 'separator=,', '-E', 'aggregator=+', ...fields.flatMap((f) => ['-e', f])]);
      return out.trim().split('\n').filter(Boolean);
    } catch {
      return undefined; // not written yet, or a packet half written
    }
  };
  let last: string[] | undefined;
  try {
    // tcpdump says "listening on <port>" once its socket is bound: nothing before that is seen.
    await waitFor(`tcpdump on ${port} to listen`, () => err.includes('listening on') || cap.exitCode !== null, 10_000, { detail: () => err });
    if (cap.exitCode !== null) throw new Error(`tcpdump exited ${cap.exitCode}: ${err}`);
    fn();
    return await waitFor(`the capture on ${port} to show the expected packets`, () => {
      last = read();
      return last !== undefined && until(last) ? last : undefined;
    }, 15_000, { intervalMs: 200, detail: () => (last ?? ['(unreadable)']).join('\n') });
  } finally {
    if (cap.exitCode === null) {
      cap.kill('SIGINT');
      await new Promise((r) => cap.once('exit', r));
    }
  }
}
/** 1 GiB for nginx to serve, made once per file (hard-linked into each lab's nginx directories). */
const BIG = bigFileFixture('twonode-1g', 1 << 30);

describe.each(OFFLOAD_MODES)('--offload %s', (offload) => {
  beforeAll(async () => {
    lab = await new Lab({ nodes: ['worker-1', 'worker-2'], outside: true }).build();
    w1 = await startKubeTun(lab, 'worker-1', [], undefined, offload);
    w2 = await startKubeTun(lab, 'worker-2', [], undefined, offload);
  });

  afterAll(async () => {
    await w1?.stop();
    await w2?.stop();
    await lab?.destroy();
  });
  describe('two nodes, IPIP between them', () => {
    it('leaves the kernel with no NAT or filter rules', () => {
      expect(lab.kernelRuleCount()).toBe(0);
    });

    it('scenario 1: pod on worker-2 -> ClusterIP -> nginx on worker-1 inside IPIP, no SNAT', async () => {
      let out = '';
      const pkts = await capture('p-w2', 'ip proto 4', ['ip.src', 'ip.dst', 'ip.proto'], () => {
        out = curl(lab.podNs('client'), `http://${VIP}:9999/[1-10]`, close);
      }, (lines) => lines.filter((l) => l.startsWith('192.168.2.3+')).length > 10);
      const answers = parseAnswers(out);
      expect(answers).toHaveLength(10);
      for (const a of answers) expect(a.client).toBe('10.1.236.141');
      // tshark shows both headers: outer 192.168.2.3 -> 192.168.2.2 protocol 4, inner pod -> endpoint.
      const fromW2 = pkts.filter((l) => l.startsWith('192.168.2.3+'));
      expect(fromW2.length).toBeGreaterThan(10);
      for (const l of fromW2) expect(l).toMatch(/^192\.168\.2\.3\+10\.1\.236\.141,192\.168\.2\.2\+10\.1\.139\.(84|93),4\+6$/);
      const w2Lines = ctLines(w2, ['-d', VIP, '-s', '10.1.236.141']);
      expect(w2Lines.length).toBeGreaterThanOrEqual(10);
      for (const l of w2Lines) expect(l).toMatch(/^tcp +6 \d+ TIME_WAIT src=10\.1\.236\.141 dst=10\.99\.64\.233 sport=(\d+) dport=9999 src=10\.1\.139\.(84|93) dst=10\.1\.236\.141 sport=80 dport=\1 \[ASSURED\] mark=0 use=1$/);
      // worker-1 sees the already-translated flow: no NAT there.
      const w1Lines = ctLines(w1, ['-s', '10.1.236.141', '--dport', '80']);
      expect(w1Lines.length).toBeGreaterThanOrEqual(10);
      for (const l of w1Lines) expect(l).toMatch(/src=10\.1\.236\.141 dst=(10\.1\.139\.\d+) sport=(\d+) dport=80 src=\1 dst=10\.1\.236\.141 sport=80 dport=\2 \[ASSURED\]/);
    });

    it('scenario 2: worker-2 itself -> ClusterIP is masqueraded to its tunnel address 10.1.236.128', () => {
      const answers = parseAnswers(curl(lab.nodeNs('worker-2'), `http://${VIP}:9999/[1-5]`, close));
      expect(answers).toHaveLength(5);
      for (const a of answers) expect(a.client).toBe('10.1.236.128');
      for (const l of ctLines(w2, ['-d', VIP, '-s', '192.168.2.3'])) expect(l).toMatch(/src=10\.1\.139\.(84|93) dst=10\.1\.236\.128 sport=80 dport=\d+ \[ASSURED\]/);
    });

    it('scenario 3: pod -> its own Service, other endpoint, same node: DNAT only', () => {
      const answers = parseAnswers(curl(lab.podNs('nginx2'), `http://${VIP}:9999/[1-30]`, close));
      const toOther = answers.filter((a) => a.server === 'nginx1');
      expect(toOther.length).toBeGreaterThan(0);
      for (const a of toOther) expect(a.client).toBe('10.1.139.93');
    });

    it('scenario 4: hairpin, the backend sees the node address', () => {
      const answers = parseAnswers(curl(lab.podNs('nginx2'), `http://${VIP}:9999/[1-30]`, close));
      const self = answers.filter((a) => a.server === 'nginx2');
      expect(self.length).toBeGreaterThan(0);
      for (const a of self) expect(a.client).toBe('192.168.2.2');
    });

    it('scenario 5: NodePort 30337 on worker-2, endpoints on worker-1: DNAT + SNAT to worker-2, over IPIP', () => {
      const answers = parseAnswers(curl(lab.ns('out'), 'http://192.168.2.3:30337/[1-6]', close));
      expect(answers).toHaveLength(6);
      for (const a of answers) expect(a.client).toBe('10.1.236.128');
      for (const l of ctLines(w2, ['-s', '192.168.2.100', '--dport', '30337'])) {
        expect(l).toMatch(/src=192\.168\.2\.100 dst=192\.168\.2\.3 sport=\d+ dport=30337 src=10\.1\.139\.(84|93) dst=10\.1\.236\.128 sport=80 dport=\d+ \[ASSURED\]/);
      }
    });

    it('scenario 6: externalTrafficPolicy Local keeps the client address where an endpoint is, drops elsewhere', () => {
      const answers = parseAnswers(curl(lab.ns('out'), 'http://192.168.2.2:30338/[1-4]', close));
      expect(answers).toHaveLength(4);
      for (const a of answers) expect(a.client).toBe('192.168.2.100');
      expect(() => curl(lab.ns('out'), 'http://192.168.2.3:30338/', ['--max-time', '1'])).toThrow();
      const s = JSON.parse(w2.cli(['stats']));
      expect(s.drops['rule-drop']).toBeGreaterThanOrEqual(1);
    });

    it('scenario 7: three endpoints (seed 002) get a third each, per connection', () => {
      const answers = parseAnswers(curl(lab.podNs('client'), 'http://10.101.57.97/[1-300]', close));
      expect(answers).toHaveLength(300);
      const by = countBy(answers, (a) => a.server);
      expect(Object.keys(by).sort()).toEqual(['nginx1', 'nginx2', 'nginx3']);
      expectBinomial(by, 300, 1 / 3);
    });

    it('scenario 8: kube-dns over UDP from pods on both nodes and from a node, with UDP conntrack entries', () => {
      for (const ns of [lab.podNs('client'), lab.podNs('client1'), lab.nodeNs('worker-2')]) {
        const out = lab.exec(ns, ['dig', '+short', '+time=2', '+tries=2', '@10.96.0.10', DNS_NAME]);
        expect(out.trim()).toBe(DNS_ANSWER);
      }
      const lines = ctLines(w2, ['-p', 'udp', '-d', '10.96.0.10']);
      expect(lines.length).toBeGreaterThanOrEqual(2);
      for (const l of lines) expect(l).toMatch(/^udp +17 (2\d|30|1\d\d) src=\S+ dst=10\.96\.0\.10 sport=\d+ dport=53 src=10\.1\.139\.90 dst=\S+ sport=53 dport=\d+ (\[ASSURED\] )?mark=0 use=1$/);
    });

    it('scenario 9: rr rotates strictly; sessionAffinity ClientIP sticks', () => {
      const rr = parseAnswers(curl(lab.podNs('client'), 'http://10.101.57.98/[1-9]', close)).map((a) => a.server);
      expect(rr).toHaveLength(9);
      for (let i = 3; i < 9; i++) expect(rr[i]).toBe(rr[i - 3]);
      expect(new Set(rr.slice(0, 3)).size).toBe(3);
      const sticky = parseAnswers(curl(lab.podNs('client'), 'http://10.101.57.99/[1-20]', close));
      expect(sticky).toHaveLength(20);
      expect(new Set(sticky.map((a) => a.server)).size).toBe(1);
    });

    it('ICMP errors: a backend\'s port-unreachable reaches the client with the ClusterIP in the quoted header', async () => {
      let out = '';
      const icmpInTunnel = /^192\.168\.2\.2\+10\.1\.139\.84\+10\.1\.236\.141,192\.168\.2\.3\+10\.1\.236\.141\+10\.1\.139\.84,3,5353$/;
      const pkts = await capture('p-w2', 'ip proto 4', ['ip.src', 'ip.dst', 'icmp.type', 'udp.dstport'], () => {
        out = lab.exec(lab.podNs('client'), ['sh', '-c', 'dig +time=2 +tries=1 -p 5353 @10.96.0.20 x.lab 2>&1; true']);
      }, (lines) => lines.some((l) => icmpInTunnel.test(l)));
      // The client's kernel matched the error to its socket connected to 10.96.0.20:5353.
      expect(out).toMatch(/connection refused/i);
      // On the underlay the error travels inside IPIP from nginx1 to the client, still quoting the endpoint.
      expect(pkts.some((l) => icmpInTunnel.test(l))).toBe(true);
      const lines = ctLines(w2, ['-p', 'udp', '-d', '10.96.0.20']);
      expect(lines.length).toBeGreaterThanOrEqual(1);
      expect(lines[0]).toMatch(/src=10\.1\.236\.141 dst=10\.96\.0\.20 sport=\d+ dport=5353 \[UNREPLIED\] src=10\.1\.139\.84 dst=10\.1\.236\.141 sport=5353/);
    });

    it('PMTU: a 1500-byte DF packet to a remote pod gets frag-needed 1480; 10 MB crosses the tunnel intact', () => {
      // ping exits non-zero here (no echo reply for an oversized probe): keep its output either way.
      const ping = lab.exec(lab.podNs('client'), ['sh', '-c', 'ping -M do -s 1472 -c 1 -W 2 10.1.139.84 2>&1; true']);
      expect(ping).toMatch(/mtu ?= ?1480/i);
      const blob = randomBytes(10 * 1024 * 1024);
      for (const p of ['nginx1', 'nginx2']) fs.writeFileSync(path.join(lab.dir, p, 'blob'), blob);
      const out = lab.exec(lab.podNs('client'), ['sh', '-c', `curl -s --max-time 30 http://${VIP}:9999/blob | sha256sum`]);
      expect(out.split(' ')[0]).toBe(createHash('sha256').update(blob).digest('hex'));
    });

    it('1 GiB from nginx on worker-1 through the ClusterIP to a pod on worker-2 (IPIP) arrives with the right sha256', () => {
      expect(downloadBlobSha256(lab, BIG.file, lab.podNs('client'), `http://${VIP}:9999/blob`, 150)).toBe(BIG.sha);
    }, 160_000);
  });
});
