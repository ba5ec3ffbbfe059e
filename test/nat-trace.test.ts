import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import {
  NAT_ACTION_NAMES, NAT_DNAT, NatDecision, buildRules, compileMatcher, formatIPv4, formatTrace, importIptablesSave,
  loadConfig, makeNodeSettings, parseIPv4, renderIptablesSave, traceRules,
} from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const lab = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
const ip = parseIPv4;
const w1 = makeNodeSettings(lab, { hostnameOverride: 'worker-1' });
const w2 = makeNodeSettings(lab, { hostnameOverride: 'worker-2' });
const rs1 = buildRules(lab, w1), rs2 = buildRules(lab, w2);
const pkt = (proto: number, src: string, dst: string, dport: number) => ({ proto, src: ip(src), dst: ip(dst), sport: 40000, dport });

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

describe('the compiled matcher agrees with the trace (two interpreters of one IR)', () => {
  const srcs = ['10.1.236.141', '10.1.139.84', '10.1.139.93', '192.168.2.2', '192.168.2.3', '192.168.2.100', '127.0.0.1'];
  const dsts: [number, string, number][] = [
    [6, '10.99.64.233', 9999], [6, '10.101.57.97', 80], [6, '10.104.152.223', 80], [6, '10.104.152.224', 80],
    [17, '10.96.0.10', 53], [6, '10.96.0.10', 53], [6, '192.168.2.2', 30337], [6, '192.168.2.3', 30337],
    [6, '192.168.2.2', 30338], [6, '192.168.2.3', 30338], [6, '10.99.64.233', 80], [6, '1.1.1.1', 443], [6, '127.0.0.1', 30337],
  ];
  const legacy1 = buildRules(lab, w1, { proxyVersion: 'legacy' }), legacy2 = buildRules(lab, w2, { proxyVersion: 'legacy' });
  for (const [name, rs, node] of [
    ['worker-1', rs1, w1], ['worker-2', rs2, w2], ['worker-1 (legacy rules)', legacy1, w1], ['worker-2 (legacy rules)', legacy2, w2],
  ] as const) {
    it(`${name}: every decision is one the trace allows, at the trace's frequency`, () => {
      const m = compileMatcher(rs, node);
      const d = new NatDecision();
      const N = 3000;
      for (const src of srcs) for (const [proto, dst, dport] of dsts) {
        const t = traceRules(rs, node, pkt(proto, src, dst, dport));
        const allowed = new Map(t.outcomes.map((o) => [`${o.outcome}/${o.addr ?? ''}:${o.port ?? ''}/${o.masquerade}`, o.probability]));
        const counts = new Map<string, number>();
        for (let i = 0; i < N; i++) {
          m.match(proto, ip(src), ip(dst), 1024 + i, dport, i, d);
          const k = d.action === NAT_DNAT
            ? `DNAT/${formatIPv4(d.addr)}:${d.port}/${d.masquerade}`
            : `${NAT_ACTION_NAMES[d.action]}/:/${d.masquerade}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
        for (const [k, c] of counts) {
          const p = allowed.get(k);
          expect(p, `${src} -> ${dst}:${dport}/${proto}: ${k} not in trace ${[...allowed.keys()]}`).toBeDefined();
          expect(Math.abs(c - N * p!)).toBeLessThanOrEqual(5 * Math.sqrt(N * p! * (1 - p!)) + 1e-9);
        }
      }
    });
  }
});
