import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import fc from 'fast-check';
import {
  Chain, ClusterState, Match, Matcher, MatcherError, NAT_DNAT, NAT_DROP, NAT_NONE, NAT_REJECT, NatDecision,
  Rule, RuleSet, Target, buildRules, cidrOf, compileMatcher, formatIPv4, loadConfig, makeNodeSettings, parseConfig,
  parseIPv4,
} from '../src/nat';
import { SeededRandom } from '../src/lib/random';

const ROOT = path.resolve(__dirname, '..');
const lab = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
const ip = parseIPv4;
const TCP = 6, UDP = 17;

function matcherFor(state: ClusterState, node: string, opts: Parameters<typeof compileMatcher>[2] = {}, build: Parameters<typeof buildRules>[2] = {}): Matcher {
  const n = makeNodeSettings(state, { hostnameOverride: node });
  return compileMatcher(buildRules(state, n, build), n, opts);
}

/** Counts DNAT destinations over `n` new connections (distinct source ports). */
function spread(m: Matcher, proto: number, src: string, dst: string, dport: number, n: number): Map<string, { count: number; masq: number }> {
  const d = new NatDecision();
  const out = new Map<string, { count: number; masq: number }>();
  for (let i = 0; i < n; i++) {
    m.match(proto, ip(src), ip(dst), 1024 + (i % 60000), dport, i, d);
    const k = d.action === NAT_DNAT ? `${formatIPv4(d.addr)}:${d.port}` : ['NONE', 'DNAT', 'DROP', 'REJECT'][d.action];
    const e = out.get(k) ?? { count: 0, masq: 0 };
    e.count++;
    if (d.masquerade) e.masq++;
    out.set(k, e);
  }
  return out;
}

/** |k - np| within 5 standard deviations (two-sided p < 6e-7 per check). */
function expectBinomial(k: number, n: number, p: number): void {
  const sd = Math.sqrt(n * p * (1 - p));
  expect(Math.abs(k - n * p), `count ${k} of ${n}, expected ~${n * p}`).toBeLessThanOrEqual(5 * sd);
}

function decide(m: Matcher, proto: number, src: string, dst: string, dport: number, nowMs = 0): NatDecision {
  const d = new NatDecision();
  m.match(proto, ip(src), ip(dst), 40000, dport, nowMs, d);
  return d;
}

describe('matcher: load balancing per new connection', () => {
  const w2 = matcherFor(lab, 'worker-2');

  it('default/test: 20,000 connections split ~1/2 each, no SNAT for a pod source', () => {
    const s = spread(w2, TCP, '10.1.236.141', '10.99.64.233', 9999, 20000);
    expect([...s.keys()].sort()).toEqual(['10.1.139.84:80', '10.1.139.93:80']);
    for (const v of s.values()) { expectBinomial(v.count, 20000, 1 / 2); expect(v.masq).toBe(0); }
  });

  it('default/nginx-service: 1/3 each', () => {
    const s = spread(w2, TCP, '10.1.236.141', '10.101.57.97', 80, 30000);
    expect([...s.keys()].sort()).toEqual(['10.1.139.84:80', '10.1.139.93:80', '10.1.236.150:80']);
    for (const v of s.values()) expectBinomial(v.count, 30000, 1 / 3);
  });

  it('kube-dns over UDP and TCP', () => {
    const u = decide(w2, UDP, '10.1.236.141', '10.96.0.10', 53);
    expect([u.action, formatIPv4(u.addr), u.port, u.masquerade]).toEqual([NAT_DNAT, '10.1.139.90', 53, false]);
    expect(w2.serviceName(u.serviceRef)).toBe('kube-system/kube-dns:dns/udp');
    const t = decide(w2, TCP, '10.1.236.141', '10.96.0.10', 53);
    expect(w2.serviceName(t.serviceRef)).toBe('kube-system/kube-dns:dns-tcp/tcp');
    expect(decide(w2, UDP, '10.1.236.141', '10.96.0.10', 54).action).toBe(NAT_NONE);
  });

  it('unknown ClusterIP port, unknown address, other protocols: untouched', () => {
    expect(decide(w2, TCP, '10.1.236.141', '10.99.64.233', 9998).action).toBe(NAT_NONE);
    expect(decide(w2, UDP, '10.1.236.141', '10.99.64.233', 9999).action).toBe(NAT_NONE);
    expect(decide(w2, TCP, '10.1.236.141', '10.99.64.234', 9999).action).toBe(NAT_NONE);
    expect(decide(w2, 1, '10.1.236.141', '10.99.64.233', 0).action).toBe(NAT_NONE);
    const d = decide(w2, TCP, '10.1.236.141', '8.8.8.8', 443);
    expect([d.action, d.masquerade, d.ruleRef, d.serviceRef]).toEqual([NAT_NONE, false, -1, -1]);
  });
});

describe('matcher: masquerade', () => {
  const w1 = matcherFor(lab, 'worker-1');
  const w2 = matcherFor(lab, 'worker-2');

  it('sources outside the cluster CIDR are masqueraded (the node itself, an outside client)', () => {
    for (const src of ['192.168.2.3', '192.168.2.100']) {
      const d = decide(w2, TCP, src, '10.99.64.233', 9999);
      expect(d.action, src).toBe(NAT_DNAT);
      expect(d.masquerade, src).toBe(true);
      expect(d.randomFully).toBe(true);
    }
    expect(decide(w2, TCP, '10.1.236.141', '10.99.64.233', 9999).masquerade).toBe(false);
    // the node's tunnel address is inside the cluster CIDR: like the kernel, no KUBE-MARK-MASQ
    expect(decide(w2, TCP, '10.1.236.128', '10.99.64.233', 9999).masquerade).toBe(false);
  });

  it('hairpin: a pod reaching itself through its service is masqueraded, other endpoints are not', () => {
    const s = spread(w1, TCP, '10.1.139.84', '10.99.64.233', 9999, 4000);
    expect(s.get('10.1.139.84:80')!.masq).toBe(s.get('10.1.139.84:80')!.count);
    expect(s.get('10.1.139.93:80')!.masq).toBe(0);
  });

  it('masquerade-all marks every ClusterIP connection', () => {
    const n = makeNodeSettings(lab, { hostnameOverride: 'worker-2', masqueradeAll: true });
    const m = compileMatcher(buildRules(lab, n), n);
    expect(decide(m, TCP, '10.1.236.141', '10.99.64.233', 9999).masquerade).toBe(true);
  });
});

describe('matcher: NodePorts and externalTrafficPolicy', () => {
  const w1 = matcherFor(lab, 'worker-1');
  const w2 = matcherFor(lab, 'worker-2');

  it('NodePort (eTP Cluster) on a node without endpoints: DNAT to the other node\'s pods, masqueraded', () => {
    const s = spread(w2, TCP, '192.168.2.100', '192.168.2.3', 30337, 2000);
    expect([...s.keys()].sort()).toEqual(['10.1.139.84:80', '10.1.139.93:80']);
    for (const v of s.values()) expect(v.masq).toBe(v.count);
    // not a local address of worker-2: no NodePort there
    expect(decide(w2, TCP, '192.168.2.100', '192.168.2.2', 30337).action).toBe(NAT_NONE);
    expect(decide(w2, TCP, '192.168.2.100', '192.168.2.3', 30339).action).toBe(NAT_NONE);
  });

  it('eTP Local: dropped on a node without local endpoints, source kept on a node with them', () => {
    const drop = decide(w2, TCP, '192.168.2.100', '192.168.2.3', 30338);
    expect(drop.action).toBe(NAT_DROP);
    expect(w2.describeRule(drop.ruleRef)).toMatchObject({ table: 'filter', chain: 'KUBE-EXTERNAL-SERVICES' });
    expect(w2.describeRule(drop.ruleRef)!.text).toContain('has no local endpoints');
    const keep = decide(w1, TCP, '192.168.2.100', '192.168.2.2', 30338);
    expect(keep.action).toBe(NAT_DNAT);
    expect(keep.masquerade).toBe(false);
    // pods and the node itself are short-circuited to the cluster-wide chain
    const pod = decide(w2, TCP, '10.1.236.141', '192.168.2.3', 30338);
    expect([pod.action, pod.masquerade]).toEqual([NAT_DNAT, false]);
    const self = decide(w2, TCP, '192.168.2.3', '192.168.2.3', 30338);
    expect([self.action, self.masquerade]).toEqual([NAT_DNAT, true]);
    // the ClusterIP of an eTP Local service is not affected
    expect(decide(w2, TCP, '10.1.236.141', '10.104.152.224', 80).action).toBe(NAT_DNAT);
  });

  it('legacy rules: eTP Local via KUBE-XLB, KUBE-MARK-DROP and kubelet\'s KUBE-FIREWALL', () => {
    const l2 = matcherFor(lab, 'worker-2', {}, { proxyVersion: 'legacy' });
    const l1 = matcherFor(lab, 'worker-1', {}, { proxyVersion: 'legacy' });
    const drop = decide(l2, TCP, '192.168.2.100', '192.168.2.3', 30338);
    expect(drop.action).toBe(NAT_DROP);
    expect(l2.describeRule(drop.ruleRef)).toMatchObject({ table: 'filter', chain: 'KUBE-FIREWALL' });
    const keep = decide(l1, TCP, '192.168.2.100', '192.168.2.2', 30338);
    expect([keep.action, keep.masquerade]).toEqual([NAT_DNAT, false]);
    const np = decide(l2, TCP, '192.168.2.100', '192.168.2.3', 30337);
    expect([np.action, np.masquerade]).toEqual([NAT_DNAT, true]);
  });

  it('no endpoints: REJECT from filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES', () => {
    const s = parseConfig([{ file: 'x.yaml', text: `
apiVersion: kubetun.dev/v1alpha1
kind: KubeTunConfiguration
clusterCIDR: 10.1.0.0/16
nodeIPs: [192.168.2.3]
hostnameOverride: worker-2
---
apiVersion: v1
kind: Service
metadata: { name: empty, namespace: default }
spec: { type: NodePort, clusterIP: 10.96.7.7, ports: [ { port: 80, nodePort: 30999 } ] }
` }]);
    const m = matcherFor(s, 'worker-2');
    const d = decide(m, TCP, '10.1.236.141', '10.96.7.7', 80);
    expect(d.action).toBe(NAT_REJECT);
    expect(m.serviceName(d.serviceRef)).toBe('default/empty/tcp');
    expect(decide(m, TCP, '192.168.2.100', '192.168.2.3', 30999).action).toBe(NAT_REJECT);
  });
});

import { hookProbeRules, NODE_ADDR } from './support/hook-probe-rules';

describe('matcher: hook order (forwarded, local in, local out, local out to a local address)', () => {
  const m = compileMatcher(hookProbeRules(true), { localAddresses: [ip(NODE_ADDR)] });
  /** The hooks a packet crosses (sorted: the counters do not keep the order). */
  const hooks = (src: string, dst: string, dport: number): string[] => {
    m.hits.fill(0);
    decide(m, TCP, src, dst, dport);
    return m.counters().filter((c) => c.ruleNum === 1).map((c) => `${c.table} ${c.chain}`).sort();
  };
  const outcome = (src: string, dst: string, dport: number): string => {
    const d = decide(m, TCP, src, dst, dport);
    const what = ['NONE', 'DNAT', 'DROP', 'REJECT'][d.action];
    const rule = m.describeRule(d.ruleRef);
    return `${what}${d.action === NAT_DNAT ? ` ${formatIPv4(d.addr)}:${d.port}` : ''}${d.masquerade ? ' masq' : ''}${d.randomFully ? ' fully' : ''}`
      + `${d.action >= NAT_DROP && rule ? ` ${rule.table}/${rule.chain}:${rule.ruleNum}` : ''}`;
  };

  it('routed through the node: nat PREROUTING -> filter FORWARD -> nat POSTROUTING', () => {
    const want = ['filter FORWARD', 'nat POSTROUTING', 'nat PREROUTING'];
    expect(hooks('10.2.0.5', '10.3.0.7', 80)).toEqual(want);
    expect(hooks('10.2.0.5', '10.0.0.101', 80)).toEqual(want);
    expect(outcome('10.2.0.5', '10.0.0.101', 80)).toBe('DNAT 10.9.9.9:80');
    expect(outcome('10.2.0.5', '10.3.0.7', 7)).toBe('DROP filter/FORWARD:2');
    expect(outcome('10.2.0.5', '10.3.0.7', 82)).toBe('NONE masq fully');
  });

  it('routed to the node: nat PREROUTING -> filter INPUT -> nat INPUT (no nat POSTROUTING)', () => {
    const want = ['filter INPUT', 'nat INPUT', 'nat PREROUTING'];
    expect(hooks('10.2.0.5', NODE_ADDR, 80)).toEqual(want);
    expect(hooks('10.2.0.5', '10.0.0.102', 80)).toEqual(want);
    expect(outcome('10.2.0.5', '10.0.0.102', 80)).toBe(`DNAT ${NODE_ADDR}:8081`);
    expect(outcome('10.2.0.5', NODE_ADDR, 7)).toBe('REJECT filter/INPUT:2');
    expect(outcome('10.2.0.5', '10.0.0.100', 80)).toBe('DROP filter/INPUT:4'); // ctstate DNAT
    expect(outcome('10.2.0.5', NODE_ADDR, 81)).toBe('NONE'); // nat OUTPUT's mark: not on this path
    expect(outcome('10.2.0.5', NODE_ADDR, 82)).toBe('NONE masq fully'); // from nat INPUT
  });

  it('from the node elsewhere: nat OUTPUT -> filter OUTPUT -> nat POSTROUTING', () => {
    const want = ['filter OUTPUT', 'nat OUTPUT', 'nat POSTROUTING'];
    expect(hooks(NODE_ADDR, '10.3.0.7', 80)).toEqual(want);
    expect(hooks(NODE_ADDR, '10.0.0.101', 80)).toEqual(want);
    expect(hooks('127.0.0.1', '10.3.0.7', 80)).toEqual(want);
    expect(outcome(NODE_ADDR, '10.3.0.7', 7)).toBe('NONE');
    expect(outcome(NODE_ADDR, '10.3.0.7', 81)).toBe('NONE');
    expect(outcome(NODE_ADDR, '10.3.0.7', 82)).toBe('NONE masq fully');
  });

  it('from the node to a local address: nat OUTPUT -> filter OUTPUT -> nat POSTROUTING -> (lo) filter INPUT, no nat INPUT', () => {
    const want = ['filter INPUT', 'filter OUTPUT', 'nat OUTPUT', 'nat POSTROUTING'];
    for (const [src, dst] of [[NODE_ADDR, NODE_ADDR], ['127.0.0.1', '127.0.0.1'], ['127.0.0.1', NODE_ADDR], [NODE_ADDR, '127.0.0.5']]) {
      expect(hooks(src, dst, 80), `${src} -> ${dst}`).toEqual(want);
      expect(outcome(src, dst, 7), `${src} -> ${dst}:7`).toBe('REJECT filter/INPUT:2');
    }
    expect(hooks(NODE_ADDR, '10.0.0.102', 80)).toEqual(want);
    expect(outcome(NODE_ADDR, '10.0.0.102', 80)).toBe(`DNAT ${NODE_ADDR}:8081`);
    expect(outcome(NODE_ADDR, '10.0.0.100', 80)).toBe('DROP filter/INPUT:4'); // still ctstate DNAT
    expect(outcome(NODE_ADDR, NODE_ADDR, 81)).toBe('REJECT filter/INPUT:3'); // the mark survives lo, still NEW
    expect(outcome(NODE_ADDR, NODE_ADDR, 82)).toBe('NONE masq fully'); // nat POSTROUTING's, kept
  });

  it('kube-proxy rules: the node reaching its own NodePort without endpoints is REJECTed by KUBE-EXTERNAL-SERVICES', () => {
    const extra = loadConfig([path.join(ROOT, 'lab/cluster.yaml'), path.join(ROOT, 'test/fixtures/nat/kernel-extra.yaml')]);
    const w1 = matcherFor(extra, 'worker-1');
    for (const proto of [TCP, UDP]) {
      for (const [src, dst] of [['192.168.2.2', '192.168.2.2'], ['10.1.139.64', '192.168.2.2'], ['10.1.139.64', '10.1.139.64'],
        ['127.0.0.1', '127.0.0.1'], ['192.168.2.100', '192.168.2.2'], ['10.1.139.70', '192.168.2.2']]) {
        const d = new NatDecision();
        w1.match(proto, ip(src), ip(dst), 555, 30339, 0, d);
        expect(d.action, `${proto} ${src} -> ${dst}:30339`).toBe(NAT_REJECT);
        const r = w1.describeRule(d.ruleRef)!;
        expect([r.table, r.chain]).toEqual(['filter', 'KUBE-EXTERNAL-SERVICES']);
        expect(r.text).toContain('has no endpoints');
        expect(w1.serviceName(d.serviceRef)).toMatch(/^default\/no-eps:(tcp|udp)\//);
      }
    }
    // eTP Local without local endpoints: the node itself is short-circuited to the cluster-wide endpoints
    const self = decide(w1, TCP, '192.168.2.2', '192.168.2.2', 30340);
    expect([self.action, formatIPv4(self.addr), self.port, self.masquerade]).toEqual([NAT_DNAT, '10.1.236.150', 8080, true]);
  });
});

describe('matcher: schedulers, affinity, state', () => {
  it('rr (kube-tun.dev/scheduler) rotates strictly per new connection', () => {
    const m = matcherFor(lab, 'worker-2');
    const d = new NatDecision();
    const seq: string[] = [];
    for (let i = 0; i < 9; i++) {
      m.match(TCP, ip('10.1.236.141'), ip('10.101.57.98'), 2000 + i, 80, i, d);
      seq.push(formatIPv4(d.addr));
    }
    expect(seq).toEqual(['10.1.139.84', '10.1.139.93', '10.1.236.150', '10.1.139.84', '10.1.139.93', '10.1.236.150',
      '10.1.139.84', '10.1.139.93', '10.1.236.150']);
  });

  it('sessionAffinity ClientIP sticks per client until the timeout', () => {
    const m = matcherFor(lab, 'worker-2', { random: new SeededRandom(7) });
    const d = new NatDecision();
    const first = new Map<number, number>();
    let changedAfterTimeout = 0;
    for (let c = 0; c < 50; c++) {
      const src = ip('10.1.236.10') + c;
      m.match(TCP, src, ip('10.101.57.99'), 3000, 80, 1000, d);
      first.set(src, d.addr);
      for (let i = 1; i <= 20; i++) {
        m.match(TCP, src, ip('10.101.57.99'), 3000 + i, 80, 1000 + i * 60_000, d);
        expect(d.addr).toBe(first.get(src));
      }
    }
    expect(new Set(first.values()).size).toBe(2);
    // 10800 s after the last connection the entry has expired (and is reaped): a fresh choice
    for (let c = 0; c < 50; c++) {
      const src = ip('10.1.236.10') + c;
      m.match(TCP, src, ip('10.101.57.99'), 4000, 80, 1000 + 20 * 60_000 + 10_800_001, d);
      if (d.addr !== first.get(src)) changedAfterTimeout++;
    }
    expect(changedAfterTimeout).toBeGreaterThan(5);
    // a swapped-in matcher keeps the xt_recent tables (the kernel keeps them across a restore)
    const src = ip('10.1.236.99');
    m.match(TCP, src, ip('10.101.57.99'), 5000, 80, 5e7, d);
    const chosen = d.addr;
    const next = matcherFor(lab, 'worker-2', { previous: m });
    for (let i = 0; i < 20; i++) {
      next.match(TCP, src, ip('10.101.57.99'), 5001 + i, 80, 5e7 + i, d);
      expect(d.addr).toBe(chosen);
    }
  });

  it('counts rule hits and describes the deciding rule', () => {
    const m = matcherFor(lab, 'worker-2');
    const d = decide(m, TCP, '10.1.236.141', '10.99.64.233', 9999);
    const r = m.describeRule(d.ruleRef)!;
    expect(r.table).toBe('nat');
    expect(r.chain).toMatch(/^KUBE-SEP-/);
    expect(r.ruleNum).toBe(2);
    expect(r.text).toMatch(/-j DNAT --to-destination 10\.1\.139\.(84|93):80$/);
    expect(m.hits[d.ruleRef]).toBe(1);
    expect(m.counters().some((c) => c.chain === 'KUBE-SERVICES' && c.hits === 1)).toBe(true);
    expect(m.describe()).toMatch(/rules in \d+ chains/);
  });

  it('refuses jump loops and unknown chains', () => {
    const loop: RuleSet = {
      services: [], meta: { proxyVersion: 'imported', nodeName: 'n', masqueradeMark: 0x4000 },
      tables: [{ name: 'nat', chains: [
        { name: 'A', builtin: false, policy: null, rules: [{ matches: [], target: { kind: 'jump', chain: 'B' }, svc: -1 }] },
        { name: 'B', builtin: false, policy: null, rules: [{ matches: [], target: { kind: 'jump', chain: 'A' }, svc: -1 }] },
      ] }],
    };
    expect(() => compileMatcher(loop, { localAddresses: [] })).toThrow(MatcherError);
    const missing: RuleSet = { ...loop, tables: [{ name: 'nat', chains: [
      { name: 'A', builtin: false, policy: null, rules: [{ matches: [], target: { kind: 'jump', chain: 'NOPE' }, svc: -1 }] },
    ] }] };
    expect(() => compileMatcher(missing, { localAddresses: [] })).toThrow(/no such chain/);
  });
});

describe('matcher: the index never changes a decision', () => {
  it('indexed and linear evaluation agree on random packets (fast-check)', () => {
    const n = makeNodeSettings(lab, { hostnameOverride: 'worker-2' });
    const rs = buildRules(lab, n);
    const addrs = ['10.99.64.233', '10.101.57.97', '10.101.57.98', '10.101.57.99', '10.96.0.10', '10.104.152.223',
      '10.104.152.224', '192.168.2.3', '192.168.2.2', '10.1.139.84', '127.0.0.1', '8.8.8.8'].map(ip);
    const srcs = ['10.1.236.141', '10.1.139.84', '192.168.2.3', '192.168.2.100', '10.1.236.128', '127.0.0.1'].map(ip);
    const ports = [9999, 80, 53, 30337, 30338, 32000, 443, 1];
    fc.assert(fc.property(
      fc.array(fc.record({
        proto: fc.constantFrom(TCP, UDP, 1), src: fc.constantFrom(...srcs), dst: fc.constantFrom(...addrs),
        dport: fc.constantFrom(...ports), sport: fc.integer({ min: 1, max: 65535 }),
      }), { minLength: 1, maxLength: 60 }),
      (pkts) => {
        const a = compileMatcher(rs, n, { random: new SeededRandom(1), indexMinRules: 2 });
        const b = compileMatcher(rs, n, { random: new SeededRandom(1), indexMinRules: 1e9 });
        const da = new NatDecision(), db = new NatDecision();
        pkts.forEach((p, i) => {
          a.match(p.proto, p.src, p.dst, p.sport, p.dport, i, da);
          b.match(p.proto, p.src, p.dst, p.sport, p.dport, i, db);
          expect({ ...da }).toEqual({ ...db });
        });
      },
    ), { numRuns: 200 });
  });

  it('10,000 services: the first and the last both resolve', () => {
    const text: string[] = ['apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunConfiguration\nclusterCIDR: 10.1.0.0/16\nhostnameOverride: n1\nnodeIPs: [192.168.2.3]'];
    for (let i = 0; i < 10000; i++) {
      const cip = `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
      text.push(`apiVersion: v1\nkind: Service\nmetadata: { name: s${i}, namespace: bench }\nspec: { type: NodePort, clusterIP: ${cip}, ports: [ { port: 80, nodePort: ${30000 + (i % 2000)} } ] }`);
      text.push(`apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: s${i}-a, namespace: bench, labels: { kubernetes.io/service-name: s${i} } }\naddressType: IPv4\nports: [ { name: "", port: 8080 } ]\nendpoints: [ { addresses: [10.1.${i >> 8}.${i & 255}] } ]`);
    }
    const s = parseConfig([{ file: 'big.yaml', text: text.join('\n---\n') }]);
    const m = matcherFor(s, 'n1');
    expect(formatIPv4(decide(m, TCP, '10.1.200.1', '10.96.0.0', 80).addr)).toBe('10.1.0.0');
    expect(formatIPv4(decide(m, TCP, '10.1.200.1', '10.96.39.15', 80).addr)).toBe('10.1.39.15');
    expect(decide(m, TCP, '10.1.200.1', '10.96.39.15', 81).action).toBe(NAT_NONE);
    // NodePort 30000 belongs to services 0, 2000, 4000, …: the first in KUBE-NODEPORTS wins
    expect(formatIPv4(decide(m, TCP, '192.168.2.100', '192.168.2.3', 30000).addr)).toBe('10.1.0.0');
  });
});
