import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import {
  Chain, Match, NAT_ACTION_NAMES, NAT_DNAT, NatDecision, Rule, RuleSet, Target, buildRules, cidrOf, compileMatcher, formatIPv4,
  formatTrace, importIptablesSave, loadConfig, makeNodeSettings, parseIPv4, renderIptablesSave, tracePacket, traceRules,
} from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const lab = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
const ip = parseIPv4;
const w1 = makeNodeSettings(lab, { hostnameOverride: 'worker-1' });
const w2 = makeNodeSettings(lab, { hostnameOverride: 'worker-2' });
const rs1 = buildRules(lab, w1), rs2 = buildRules(lab, w2);
const pkt = (proto: number, src: string, dst: string, dport: number) => ({ proto, src: ip(src), dst: ip(dst), sport: 40000, dport });
// lab/cluster.yaml plus the differential test's services (no endpoints -> REJECT, eTP Local
// without local endpoints -> DROP, externalIPs, a load balancer with source ranges).
const extra = loadConfig([path.join(ROOT, 'lab/cluster.yaml'), path.join(ROOT, 'test/fixtures/nat/kernel-extra.yaml')]);
const wx1 = makeNodeSettings(extra, { hostnameOverride: 'worker-1' });
const rsx1 = buildRules(extra, wx1);

import { hookProbeRules, NODE_ADDR } from './support/hook-probe-rules';

describe('trace', () => {
  it('nginx-service: three destinations, kernel probabilities, masquerade for the node', () => {
    const t = traceRules(rs2, w2, pkt(6, '192.168.2.3', '10.101.57.97', 80));
    expect(t.outcome).toBe('DNAT');
    expect(t.masquerade).toBe(true);
    expect(t.destinations.map((d) => `${d.addr}:${d.port}`)).toEqual(['10.1.139.84:80', '10.1.139.93:80', '10.1.236.150:80']);
    // 0.3333333333 is stored as 715827883 / 2^31
    expect(t.destinations[0].probability).toBeCloseTo(715827883 / 2 ** 31, 15);
    expect(t.destinations.reduce((s, d) => s + d.probability, 0)).toBeCloseTo(1, 12);
    for (const d of t.destinations) expect(d.masquerade).toBe(true);
    const first = t.steps[0];
    expect(first).toMatchObject({ table: 'nat', chain: 'OUTPUT', ruleNum: 1, verdict: 'jump KUBE-SERVICES' });
    expect(t.steps.some((s) => s.chain === 'KUBE-SVC-V2OKYYMBY3REGZOG' && s.ruleText.includes('--probability 0.33333333349'))).toBe(true);
    expect(formatTrace(t)).toMatch(/outcome: DNAT \(masqueraded\)\n {2}-> 10\.1\.139\.84:80 {2}p=0\.3333 {2}masquerade/);
  });

  it('hairpin: only the branch back to the client is masqueraded', () => {
    const t = traceRules(rs1, w1, pkt(6, '10.1.139.84', '10.99.64.233', 9999));
    expect(t.destinations).toEqual([
      { addr: '10.1.139.84', port: 80, probability: 0.5, masquerade: true },
      { addr: '10.1.139.93', port: 80, probability: 0.5, masquerade: false },
    ]);
  });

  it('eTP Local DROP, untouched traffic, affinity and rr notes', () => {
    const drop = traceRules(rs2, w2, pkt(6, '192.168.2.100', '192.168.2.3', 30338));
    expect(drop.outcome).toBe('DROP');
    const last = drop.steps[drop.steps.length - 1];
    expect(last).toMatchObject({ table: 'filter', chain: 'KUBE-EXTERNAL-SERVICES', verdict: 'DROP' });
    const none = traceRules(rs2, w2, pkt(6, '10.1.236.141', '10.99.64.233', 1));
    expect([none.outcome, none.destinations, none.masquerade]).toEqual(['NONE', [], false]);
    const sticky = traceRules(rs2, w2, pkt(6, '10.1.236.141', '10.101.57.99', 80));
    expect(sticky.notes.join()).toMatch(/no affinity entry assumed/);
    const rr = traceRules(rs2, w2, pkt(6, '10.1.236.141', '10.101.57.98', 80));
    expect(rr.destinations.map((d) => d.probability.toFixed(6))).toEqual(['0.333333', '0.333333', '0.333333']);
    expect(rr.notes.join()).toMatch(/nth/);
  });

  it('JSON shape of issue 3', () => {
    const t = traceRules(rs2, w2, pkt(17, '10.1.236.141', '10.96.0.10', 53));
    const j = JSON.parse(JSON.stringify(t));
    expect(j).toMatchObject({ outcome: 'DNAT', destinations: [{ addr: '10.1.139.90', port: 53, probability: 1 }], masquerade: false });
    expect(Array.isArray(j.steps)).toBe(true);
  });

  it('render -> import -> trace gives the same outcome as tracing the IR', () => {
    for (const [rs, node] of [[rs1, w1], [rs2, w2]] as const) {
      const imported = importIptablesSave(renderIptablesSave(rs, { format: 'iptables-save' })).rules;
      for (const p of [
        pkt(6, '192.168.2.3', '10.101.57.97', 80), pkt(6, '192.168.2.100', '192.168.2.3', 30337),
        pkt(6, '192.168.2.100', '192.168.2.2', 30338), pkt(6, '10.1.139.84', '10.99.64.233', 9999),
      ]) {
        const a = traceRules(rs, node, p), b = traceRules(imported, node, p);
        expect(b.outcomes).toEqual(a.outcomes);
        expect(b.steps.map((s) => s.ruleText)).toEqual(a.steps.map((s) => s.ruleText));
      }
    }
  });
});

describe('trace: hook order (forwarded, local in, local out, local out to a local address)', () => {
  const rs = hookProbeRules();
  const node = { localAddresses: [ip(NODE_ADDR)] };
  const hooks = (src: string, dst: string, dport: number) =>
    traceRules(rs, node, pkt(6, src, dst, dport)).steps.filter((s) => s.ruleText.includes('hook')).map((s) => `${s.table} ${s.chain}`);

  it('routed through the node: nat PREROUTING -> filter FORWARD -> nat POSTROUTING', () => {
    const want = ['nat PREROUTING', 'filter FORWARD', 'nat POSTROUTING'];
    expect(hooks('10.2.0.5', '10.3.0.7', 80)).toEqual(want);
    expect(hooks('10.2.0.5', '10.0.0.101', 80)).toEqual(want); // DNATed elsewhere
    expect(traceRules(rs, node, pkt(6, '10.2.0.5', '10.3.0.7', 7)).outcome).toBe('DROP');
    expect(traceRules(rs, node, pkt(6, '10.2.0.5', '10.3.0.7', 82)).masquerade).toBe(true);
  });

  it('routed to the node: nat PREROUTING -> filter INPUT -> nat INPUT (no nat POSTROUTING)', () => {
    const want = ['nat PREROUTING', 'filter INPUT', 'nat INPUT'];
    expect(hooks('10.2.0.5', NODE_ADDR, 80)).toEqual(want);
    expect(hooks('10.2.0.5', '10.0.0.102', 80)).toEqual(want); // DNATed to a local address
    expect(traceRules(rs, node, pkt(6, '10.2.0.5', NODE_ADDR, 7)).outcome).toBe('REJECT');
    // ctstate DNAT holds in filter INPUT after a PREROUTING DNAT
    expect(traceRules(rs, node, pkt(6, '10.2.0.5', '10.0.0.100', 80)).outcome).toBe('DROP');
    // nat OUTPUT's mark is not set on this path
    expect(traceRules(rs, node, pkt(6, '10.2.0.5', NODE_ADDR, 81)).outcome).toBe('NONE');
  });

  it('from the node elsewhere: nat OUTPUT -> filter OUTPUT -> nat POSTROUTING', () => {
    const want = ['nat OUTPUT', 'filter OUTPUT', 'nat POSTROUTING'];
    expect(hooks(NODE_ADDR, '10.3.0.7', 80)).toEqual(want);
    expect(hooks(NODE_ADDR, '10.0.0.101', 80)).toEqual(want);
    expect(hooks('127.0.0.1', '10.3.0.7', 80)).toEqual(want);
    expect(traceRules(rs, node, pkt(6, NODE_ADDR, '10.3.0.7', 7)).outcome).toBe('NONE');
    expect(traceRules(rs, node, pkt(6, NODE_ADDR, '10.3.0.7', 81)).outcome).toBe('NONE');
    expect(traceRules(rs, node, pkt(6, NODE_ADDR, '10.3.0.7', 82)).masquerade).toBe(true);
  });

  it('from the node to a local address: nat OUTPUT -> filter OUTPUT -> nat POSTROUTING -> (lo) filter INPUT, no nat INPUT', () => {
    const want = ['nat OUTPUT', 'filter OUTPUT', 'nat POSTROUTING', 'filter INPUT'];
    for (const [src, dst] of [[NODE_ADDR, NODE_ADDR], ['127.0.0.1', '127.0.0.1'], ['127.0.0.1', NODE_ADDR], [NODE_ADDR, '127.0.0.5']]) {
      expect(hooks(src, dst, 80), `${src} -> ${dst}`).toEqual(want);
      expect(traceRules(rs, node, pkt(6, src, dst, 7)).outcome, `${src} -> ${dst}:7`).toBe('REJECT');
    }
    expect(hooks(NODE_ADDR, '10.0.0.102', 80)).toEqual(want); // DNATed to a local address by nat OUTPUT
    expect(traceRules(rs, node, pkt(6, NODE_ADDR, '10.0.0.100', 80)).outcome).toBe('DROP'); // still ctstate DNAT
    // the mark set in nat OUTPUT survives the loop through lo, and the packet is still NEW
    const marked = traceRules(rs, node, pkt(6, NODE_ADDR, NODE_ADDR, 81));
    expect(marked.outcome).toBe('REJECT');
    expect(marked.steps[marked.steps.length - 1]).toMatchObject({ table: 'filter', chain: 'INPUT', ruleNum: 3, verdict: 'REJECT' });
    // nat POSTROUTING's MASQUERADE is kept once filter INPUT accepts
    expect(traceRules(rs, node, pkt(6, NODE_ADDR, NODE_ADDR, 82)).outcomes).toEqual([{ outcome: 'NONE', probability: 1, masquerade: true }]);
  });

  it('kube-proxy rules: the node reaching its own NodePort without endpoints is REJECTed in filter INPUT', () => {
    for (const proto of ['tcp', 'udp']) {
      for (const [src, dst] of [['192.168.2.2', '192.168.2.2'], ['10.1.139.64', '192.168.2.2'], ['10.1.139.64', '10.1.139.64'],
        ['192.168.2.2', '10.1.139.64'], ['127.0.0.1', '127.0.0.1']]) {
        const t = tracePacket(rsx1, { proto, src: ip(src), dst: ip(dst), sport: 555, dport: 30339 }, wx1);
        expect(t.outcome, `${proto} ${src} -> ${dst}:30339`).toBe('REJECT');
        const last = t.steps[t.steps.length - 1];
        expect(last).toMatchObject({ table: 'filter', chain: 'KUBE-EXTERNAL-SERVICES', verdict: 'REJECT' });
        expect(last.ruleText).toContain('has no endpoints');
      }
    }
    // the same from outside and from a pod (filter INPUT before, too)
    expect(traceRules(rsx1, wx1, pkt(6, '192.168.2.100', '192.168.2.2', 30339)).outcome).toBe('REJECT');
    expect(traceRules(rsx1, wx1, pkt(17, '10.1.139.70', '192.168.2.2', 30339)).outcome).toBe('REJECT');
    // a NodePort with endpoints is still DNATed for the node itself (masqueraded)
    const ok = traceRules(rsx1, wx1, pkt(6, '192.168.2.2', '192.168.2.2', 30337));
    expect([ok.outcome, ok.masquerade]).toEqual(['DNAT', true]);
  });
});

describe('the compiled matcher agrees with the trace (two interpreters of one IR)', () => {
  const srcs = ['10.1.236.141', '10.1.139.84', '10.1.139.93', '192.168.2.2', '192.168.2.3', '192.168.2.100', '127.0.0.1', '10.1.139.64',
    '10.2.0.5', NODE_ADDR];
  const dsts: [number, string, number][] = [
    [6, '10.99.64.233', 9999], [6, '10.101.57.97', 80], [6, '10.104.152.223', 80], [6, '10.104.152.224', 80],
    [17, '10.96.0.10', 53], [6, '10.96.0.10', 53], [6, '192.168.2.2', 30337], [6, '192.168.2.3', 30337],
    [6, '192.168.2.2', 30338], [6, '192.168.2.3', 30338], [6, '10.99.64.233', 80], [6, '1.1.1.1', 443], [6, '127.0.0.1', 30337],
    // kernel-extra.yaml: no endpoints (REJECT), eTP Local remote-only (DROP), source ranges, external IP
    [6, '192.168.2.2', 30339], [17, '192.168.2.2', 30339], [6, '127.0.0.1', 30339], [6, '10.1.139.64', 30339],
    [6, '10.96.5.1', 80], [6, '192.168.2.2', 30340], [6, '192.168.2.2', 30341], [6, '203.0.113.10', 80],
    // hookProbeRules()
    [6, NODE_ADDR, 7], [6, '10.0.0.100', 80], [6, '10.0.0.101', 80], [6, '10.0.0.102', 80], [6, NODE_ADDR, 81], [6, NODE_ADDR, 82], [6, '10.3.0.7', 82],
  ];
  const legacy1 = buildRules(lab, w1, { proxyVersion: 'legacy' }), legacy2 = buildRules(lab, w2, { proxyVersion: 'legacy' });
  for (const [name, rs, node] of [
    ['worker-1', rs1, w1], ['worker-2', rs2, w2], ['worker-1 (legacy rules)', legacy1, w1], ['worker-2 (legacy rules)', legacy2, w2],
    ['worker-1 (with kernel-extra.yaml)', rsx1, wx1], ['hook probe rules', hookProbeRules(), { localAddresses: [ip(NODE_ADDR)] }],
  ] as const) {
    it(`${name}: every decision is one the trace allows, at the trace's frequency`, () => {
      const m = compileMatcher(rs, node);
      const d = new NatDecision();
      const N = 3000;
      for (const src of srcs) for (const [proto, dst, dport] of dsts) {
        const t = traceRules(rs, node, pkt(proto, src, dst, dport));
        const allowed = new Map(t.outcomes.map((o) => [`${o.outcome}/${o.addr ?? ''}:${o.port ?? ''}/${o.masquerade}`, o.probability]));
        const counts = new Map<string, number>();
        const n = t.outcomes.length === 1 ? 50 : N; // a certain outcome needs no statistics
        for (let i = 0; i < n; i++) {
          m.match(proto, ip(src), ip(dst), 1024 + i, dport, i, d);
          const k = d.action === NAT_DNAT
            ? `DNAT/${formatIPv4(d.addr)}:${d.port}/${d.masquerade}`
            : `${NAT_ACTION_NAMES[d.action]}/:/${d.masquerade}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
        for (const [k, c] of counts) {
          const p = allowed.get(k);
          expect(p, `${src} -> ${dst}:${dport}/${proto}: ${k} not in trace ${[...allowed.keys()]}`).toBeDefined();
          expect(Math.abs(c - n * p!)).toBeLessThanOrEqual(5 * Math.sqrt(n * p! * (1 - p!)) + 1e-9);
        }
      }
    });
  }
});
