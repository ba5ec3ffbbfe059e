import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import {
  ImportError, NAT_DNAT, NatDecision, SeededRandom, buildRules, compileMatcher, formatIPv4, importIptablesSave,
  loadConfig, makeNodeSettings, parseIPv4, renderIptablesSave,
} from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const SEEDS = path.resolve(ROOT, '../shared/seeds');
const seed = (prefix: string) => fs.readFileSync(path.join(SEEDS, fs.readdirSync(SEEDS).find((f) => f.startsWith(prefix))!), 'utf8');
const lab = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
const ip = parseIPv4;

/** The seed's rule lines as a loadable *nat dump (chains declared as iptables-save would). */
function seedDump(prefix: string): string {
  const rules = [...new Set(seed(prefix).split('\n').map((l) => l.replace(/\s+[^\x00-\x7f].*$/, '').trim())
    .filter((l) => l.startsWith('-A ') && !l.includes('DOCKER') && !l.includes('KUBE-LOOP-BACK')))];
  const chains = [...new Set(rules.map((l) => l.split(' ')[1]))];
  const builtin = new Set(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']);
  const decl = [...[...builtin].map((c) => `:${c} ACCEPT [0:0]`), ...chains.filter((c) => !builtin.has(c)).map((c) => `:${c} - [0:0]`)];
  // referenced but never written (e.g. KUBE-NODEPORTS): declare empty
  for (const l of rules) {
    const j = / -j (KUBE-\S+)/.exec(l);
    if (j && !chains.includes(j[1])) { chains.push(j[1]); decl.push(`:${j[1]} - [0:0]`); }
  }
  return ['*nat', ...decl, ...rules, 'COMMIT', ''].join('\n');
}

function importError(text: string): string {
  try {
    importIptablesSave(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ImportError);
    return (e as Error).message;
  }
  throw new Error('expected an ImportError');
}

describe('import: round trips', () => {
  for (const version of ['modern', 'legacy'] as const) {
    for (const format of ['kube-proxy', 'iptables-save'] as const) {
      it(`render (${version}, ${format}) -> import -> render is the identity`, () => {
        const n = makeNodeSettings(lab, { hostnameOverride: 'worker-2' });
        const text = renderIptablesSave(buildRules(lab, n, { proxyVersion: version }), { format });
        const imported = importIptablesSave(text).rules;
        expect(renderIptablesSave(imported, { format })).toBe(text);
        if (version === 'modern') expect(imported.services.map((s) => `${s.name}/${s.protocol}`)).toContain('default/test/tcp');
      });
    }
  }

  it('the imported dump compiles into a matcher that decides like the YAML path', () => {
    const n = makeNodeSettings(lab, { hostnameOverride: 'worker-1' });
    const rs = buildRules(lab, n);
    const imp = importIptablesSave(renderIptablesSave(rs, { format: 'iptables-save' })).rules;
    const dsts = ['10.99.64.233', '10.101.57.97', '10.101.57.98', '10.101.57.99', '10.96.0.10', '10.104.152.224', '192.168.2.2', '8.8.8.8'].map(ip);
    const srcs = ['10.1.236.141', '10.1.139.84', '192.168.2.2', '192.168.2.100'].map(ip);
    fc.assert(fc.property(fc.array(fc.record({
      proto: fc.constantFrom(6, 17), src: fc.constantFrom(...srcs), dst: fc.constantFrom(...dsts),
      dport: fc.constantFrom(80, 53, 9999, 30337, 30338), sport: fc.integer({ min: 1, max: 65535 }),
    }), { minLength: 1, maxLength: 40 }), (pkts) => {
      const a = compileMatcher(rs, n, { random: new SeededRandom(3) });
      const b = compileMatcher(imp, n, { random: new SeededRandom(3) });
      const da = new NatDecision(), db = new NatDecision();
      pkts.forEach((p, i) => {
        a.match(p.proto, p.src, p.dst, p.sport, p.dport, i * 1000, da);
        b.match(p.proto, p.src, p.dst, p.sport, p.dport, i * 1000, db);
        expect([db.action, db.addr, db.port, db.masquerade, db.ruleRef]).toEqual([da.action, da.addr, da.port, da.masquerade, da.ruleRef]);
        if (da.serviceRef >= 0) expect(b.serviceName(db.serviceRef)).toBe(a.serviceName(da.serviceRef));
      });
    }), { numRuns: 100 });
  });
});

describe('import: the seeds\' own rules', () => {
  it('seed 000 (legacy: MARK-MASQ in KUBE-SERVICES, -m mark MASQUERADE) balances default/test and masquerades the node', () => {
    const imp = importIptablesSave(seedDump('000_'));
    const m = compileMatcher(imp.rules, { localAddresses: [ip('192.168.2.3'), ip('10.1.236.128')] });
    const d = new NatDecision();
    const seen = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      m.match(6, ip('10.1.236.141'), ip('10.99.64.233'), 1000 + i, 9999, i, d);
      expect(d.action).toBe(NAT_DNAT);
      expect(d.masquerade).toBe(false);
      seen.set(formatIPv4(d.addr), (seen.get(formatIPv4(d.addr)) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(['10.1.139.84', '10.1.139.93']);
    for (const v of seen.values()) expect(Math.abs(v - 2000)).toBeLessThan(5 * Math.sqrt(1000));
    m.match(6, ip('192.168.2.3'), ip('10.99.64.233'), 5555, 9999, 0, d);
    expect([d.action, d.masquerade, d.randomFully]).toEqual([NAT_DNAT, true, false]);
    expect(m.serviceName(d.serviceRef)).toBe('default/test:/tcp');
  });

  it('seed 002 (modern, probabilities as iptables-save prints them) gives nginx-service 1/3 each', () => {
    const dump = seedDump('002_');
    expect(dump).toContain('--probability 0.33333333349');
    const imp = importIptablesSave(dump);
    const svc = imp.rules.tables[0].chains.find((c) => c.name === 'KUBE-SVC-V2OKYYMBY3REGZOG')!;
    const stat = svc.rules[1].matches.find((x) => x.kind === 'statistic');
    expect(stat).toMatchObject({ mode: 'random', probability: 715827883, text: '0.33333333349' });
    const m = compileMatcher(imp.rules, { localAddresses: [ip('192.168.49.2')] });
    const d = new NatDecision();
    const seen = new Map<string, number>();
    for (let i = 0; i < 30000; i++) {
      m.match(6, ip('10.244.0.5'), ip('10.101.57.97'), 1000 + (i % 60000), 80, i, d);
      seen.set(formatIPv4(d.addr), (seen.get(formatIPv4(d.addr)) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(['10.244.0.27', '10.244.0.28', '10.244.0.30']);
    const sd = Math.sqrt(30000 * (1 / 3) * (2 / 3));
    for (const v of seen.values()) expect(Math.abs(v - 10000)).toBeLessThan(5 * sd);
  });
});

describe('import: both argument orders, and what is refused', () => {
  it('kube-proxy order and iptables-save order of the same rules mean the same', () => {
    const kp = [
      '*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-SVC-X - [0:0]', ':KUBE-SEP-A - [0:0]', ':KUBE-MARK-MASQ - [0:0]', ':KUBE-POSTROUTING - [0:0]',
      '-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN',
      '-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000',
      '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
      '-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000',
      '-A KUBE-SERVICES -m comment --comment "ns/s cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-X',
      '-A KUBE-SVC-X -m comment --comment "ns/s cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
      '-A KUBE-SVC-X -m comment --comment "ns/s -> 10.1.0.1:80" -j KUBE-SEP-A',
      '-A KUBE-SEP-A -m comment --comment ns/s -s 10.1.0.1 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-A -m comment --comment ns/s -m tcp -p tcp -j DNAT --to-destination 10.1.0.1:80',
      'COMMIT', '',
    ].join('\n');
    const a = importIptablesSave(kp).rules;
    const save = renderIptablesSave(a, { format: 'iptables-save' });
    expect(save).toContain('-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment "ns/s cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ');
    expect(save).toContain('-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0');
    const b = importIptablesSave(save).rules;
    const node = { localAddresses: [ip('192.168.0.2')] };
    for (const [src, masq] of [['10.1.0.9', false], ['192.168.0.2', true], ['10.1.0.1', true]] as const) {
      for (const rs of [a, b]) {
        const d = new NatDecision();
        compileMatcher(rs, node).match(6, ip(src), ip('172.30.0.41'), 1234, 80, 0, d);
        expect([d.action, formatIPv4(d.addr), d.port, d.masquerade]).toEqual([NAT_DNAT, '10.1.0.1', 80, masq]);
      }
    }
  });

  it('refuses unsupported matches, options and targets with the line number', () => {
    const wrap = (rule: string) => `*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-X - [0:0]\n${rule}\nCOMMIT\n`;
    expect(importError(wrap('-A KUBE-SERVICES -p tcp -m multiport --dports 80,443 -j KUBE-X'))).toBe('line 4: unsupported match "-m multiport"');
    expect(importError(wrap('-A KUBE-SERVICES -i eth0 -j KUBE-X'))).toBe('line 4: unsupported option "-i" (interfaces are not modelled)');
    expect(importError(wrap('-A KUBE-SERVICES -j SNAT --to-source 1.2.3.4'))).toBe('line 4: unsupported target "-j SNAT"');
    expect(importError(wrap('-A KUBE-SERVICES -j LOG'))).toBe('line 4: unsupported target "-j LOG"');
    expect(importError(wrap('-A KUBE-SERVICES -j KUBE-NOPE'))).toBe('line 4: -j KUBE-NOPE: no such chain in *nat');
    expect(importError(wrap('-A KUBE-SERVICES -m tcp -p tcp --tcp-flags SYN SYN -j KUBE-X'))).toBe('line 4: unsupported option "--tcp-flags" for -m tcp');
    expect(importError(wrap('-A KUBE-SERVICES -m recent --name x --rcheck --hitcount 3 -j KUBE-X'))).toBe('line 4: unsupported recent option "--hitcount"');
    expect(importError(wrap('-A KUBE-SERVICES -m addrtype --dst-type BROADCAST -j KUBE-X'))).toBe('line 4: unsupported addrtype "BROADCAST" (only LOCAL)');
    expect(importError(wrap('-A KUBE-SERVICES -d example.org -j KUBE-X'))).toMatch(/^line 4: -d example\.org: not an IPv4 address/);
    expect(importError(wrap('-A KUBE-SERVICES -j DNAT --to-destination 10.0.0.1-10.0.0.9'))).toMatch(/^line 4: --to-destination .*no ranges/);
    expect(importError(wrap('-A KUBE-NOPE -j KUBE-X'))).toBe('line 4: -A KUBE-NOPE: chain not declared with ":KUBE-NOPE" in *nat');
    expect(importError('*nat\n:KUBE-X - [0:0]\n')).toMatch(/missing COMMIT for \*nat/);
    expect(importError('*security\nCOMMIT\n')).toBe('line 1: unsupported table "*security"');
    expect(importError(wrap('-I KUBE-SERVICES -j KUBE-X'))).toBe('line 4: unsupported command "-I" (only -A, -X and chain lines)');
  });

  it('kubeChainsOnly drops foreign chains of a real node and says so', () => {
    const dump = [
      '# Generated by iptables-save v1.8.9 on Tue Nov 24 08:00:00 2026', '*nat',
      ':PREROUTING ACCEPT [34:2040]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]',
      ':DOCKER - [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-SVC-X - [0:0]',
      '[10:600] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
      '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE',
      '-A DOCKER -i docker0 -j RETURN',
      '-A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m comment --comment "a/b cluster IP" -m tcp --dport 80 -j KUBE-SVC-X',
      '-A KUBE-SVC-X -p tcp -m tcp -j DNAT --to-destination 10.1.0.1:8080',
      'COMMIT', '# Completed on Tue Nov 24 08:00:00 2026', '',
    ].join('\n');
    expect(importError(dump)).toBe('line 12: unsupported option "-o" (interfaces are not modelled)');
    const r = importIptablesSave(dump, { kubeChainsOnly: true });
    expect(r.skipped).toEqual(expect.arrayContaining(['nat: chain DOCKER']));
    expect(r.skipped.some((s) => s.includes('PREROUTING'))).toBe(true);
    const d = new NatDecision();
    compileMatcher(r.rules, { localAddresses: [] }).match(6, ip('10.1.0.9'), ip('10.0.0.1'), 1, 80, 0, d);
    expect([d.action, formatIPv4(d.addr), d.port]).toEqual([NAT_DNAT, '10.1.0.1', 8080]);
  });

  it('large-cluster dumps (no per-endpoint comments) still attribute DNAT rules to their service', () => {
    const n = makeNodeSettings(lab, { hostnameOverride: 'worker-2' });
    const rs = buildRules(lab, n, { largeClusterEndpointsThreshold: 1 });
    const text = renderIptablesSave(rs, { format: 'iptables-save' });
    expect(text).toContain('-A KUBE-SEP-C7RYWFKVYSTQ7IJM -p tcp -m tcp -j DNAT --to-destination 10.1.139.84:80');
    const m = compileMatcher(importIptablesSave(text).rules, n);
    const d = new NatDecision();
    m.match(6, ip('10.1.236.141'), ip('10.99.64.233'), 1, 9999, 0, d);
    expect(m.serviceName(d.serviceRef)).toBe('default/test/tcp');
  });

  it('kube-proxy restore input: a chain line flushes, -X deletes', () => {
    const r = importIptablesSave([
      '*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-SEP-OLD - [0:0]', '-A KUBE-SERVICES -j KUBE-SEP-OLD',
      ':KUBE-SERVICES - [0:0]', '-X KUBE-SEP-OLD', 'COMMIT', '',
    ].join('\n')).rules;
    expect(r.tables[0].chains.map((c) => `${c.name}:${c.rules.length}`)).toEqual(['KUBE-SERVICES:0']);
  });
});
