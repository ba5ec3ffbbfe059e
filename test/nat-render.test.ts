import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  buildRules, endpointChainName, formatFixed, formatProbabilityIptablesSave, kubeProxyProbability, loadConfig,
  makeNodeSettings, parseConfig, portProtoHash, probabilityToU32, renderIptablesSave, servicePortChainName,
} from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const SEEDS = path.join(ROOT, 'test/fixtures/seeds'); // vendored rule lines of the shared seeds (see its README)
const seed = (prefix: string) => fs.readFileSync(path.join(SEEDS, fs.readdirSync(SEEDS).find((f) => f.startsWith(prefix))!), 'utf8');
const lines = (text: string) => text.split('\n');

function render(file: string, node: string, version: 'modern' | 'legacy', format: 'kube-proxy' | 'iptables-save', prob?: 'kube-proxy' | 'iptables-save'): string {
  const state = loadConfig(path.join(ROOT, file));
  const n = makeNodeSettings(state, { hostnameOverride: node });
  return renderIptablesSave(buildRules(state, n, { proxyVersion: version }), { format, probabilityFormat: prob });
}

describe('chain-name hashing (KUBE-PROXY.md §1.2)', () => {
  it('reproduces the verified vectors', () => {
    expect(portProtoHash('ns1/svc1:p80', 'tcp')).toBe('XPGD46QRK7WJZT7O');
    expect(portProtoHash('ns1/svc1', 'tcp')).toBe('AQI2S6QIMU7PVVRP');
    expect(endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80')).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
    expect(endpointChainName('ns1/svc1:p80', 'tcp', '[ff06::c1]:80')).toBe('KUBE-SEP-LIGRYQQLSZN4UWQ5');
    expect(servicePortChainName('default/kubernetes:https', 'tcp')).toBe('KUBE-SVC-NPX46M4PTMTKRN6Y');
    expect(servicePortChainName('kube-system/kube-dns:dns', 'udp')).toBe('KUBE-SVC-TCOU7JCQXEZGVUNU');
    expect(servicePortChainName('ns1/svc1:p80', 'tcp', 'KUBE-EXT-')).toBe('KUBE-EXT-XPGD46QRK7WJZT7O');
  });

  it('reproduces the seeds\' chain names (legacy "ns/name:" and modern "ns/name")', () => {
    expect(servicePortChainName('default/test:', 'tcp')).toBe('KUBE-SVC-IOIC7CRUMQYLZ32S');
    expect(endpointChainName('default/test:', 'tcp', '10.1.139.84:80')).toBe('KUBE-SEP-LOGU6L2JYVKGEHXE');
    expect(endpointChainName('default/test:', 'tcp', '10.1.139.93:80')).toBe('KUBE-SEP-ZSSX2RT66T6MAGNI');
    expect(servicePortChainName('default/heketi:', 'tcp')).toBe('KUBE-SVC-7RUAH544RSSBQYKK');
    expect(servicePortChainName('default/nginx-service', 'tcp')).toBe('KUBE-SVC-V2OKYYMBY3REGZOG');
    expect(servicePortChainName('zwf/demoapp-nodeport-service:http', 'tcp')).toBe('KUBE-SVC-YSWRJGOK5VEB6HOG');
    expect(servicePortChainName('kube-system/kube-dns:dns-tcp', 'tcp')).toBe('KUBE-SVC-ERIFXISQEP7F7OF4');
  });
});

describe('probabilities (KUBE-PROXY.md §1.3)', () => {
  it('formats and stores like kube-proxy and iptables', () => {
    expect(kubeProxyProbability(3)).toBe('0.3333333333');
    expect(kubeProxyProbability(2)).toBe('0.5000000000');
    expect(kubeProxyProbability(3, true)).toBe('0.33333');
    expect(probabilityToU32(Number('0.3333333333'))).toBe(715827883);
    expect(formatProbabilityIptablesSave(715827883)).toBe('0.33333333349');
    expect(formatProbabilityIptablesSave(probabilityToU32(0.2))).toBe('0.20000000019');
    expect(formatProbabilityIptablesSave(probabilityToU32(0.1))).toBe('0.10000000009');
    expect(formatProbabilityIptablesSave(probabilityToU32(0.5))).toBe('0.50000000000');
    expect(formatProbabilityIptablesSave(probabilityToU32(0.33333))).toBe('0.33332999982');
    // Go/C round half to even on the exact binary value; 1/2048 is an exact tie at 10 decimals
    expect(formatFixed(1 / 2048, 10)).toBe('0.0004882812');
    expect(formatFixed(1 / 3, 10)).toBe('0.3333333333');
  });
});

describe('golden render: seed 000 (legacy kube-proxy, iptables-save output)', () => {
  it('the lab\'s default/test produces every rule line of seed 000', () => {
    const ours = new Set(lines(render('lab/cluster.yaml', 'worker-2', 'legacy', 'iptables-save')));
    const want = [...new Set(lines(seed('000_')).filter((l) => l.startsWith('-A ') || l.startsWith(':')))];
    expect(want.length).toBeGreaterThanOrEqual(13);
    for (const l of want) expect(ours, l).toContain(l);
  });

  it('kube-proxy format keeps kube-proxy\'s own spellings of that era', () => {
    const out = lines(render('lab/cluster.yaml', 'worker-2', 'legacy', 'kube-proxy'));
    expect(out).toContain('-A KUBE-SERVICES -m comment --comment "default/test: cluster IP" -m tcp -p tcp -d 10.99.64.233/32 --dport 9999 ! -s 10.1.0.0/16 -j KUBE-MARK-MASQ');
    expect(out).toContain('-A KUBE-SVC-IOIC7CRUMQYLZ32S -m comment --comment default/test: -m statistic --mode random --probability 0.50000 -j KUBE-SEP-LOGU6L2JYVKGEHXE');
    expect(out).toContain('-A KUBE-SEP-LOGU6L2JYVKGEHXE -m comment --comment default/test: -s 10.1.139.84/32 -j KUBE-MARK-MASQ');
    expect(out).toContain('-A KUBE-SEP-LOGU6L2JYVKGEHXE -m comment --comment default/test: -m tcp -p tcp -j DNAT --to-destination 10.1.139.84:80');
    expect(out).toContain('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x00004000/0x00004000');
    expect(out).toContain('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x00004000/0x00004000 -j MASQUERADE');
  });

  it('seed 001\'s heketi NodePort (legacy) gets its chain names', () => {
    const out = lines(render('test/fixtures/nat/seed003-heketi.yaml', 'master-192', 'legacy', 'iptables-save'));
    expect(out).toContain('-A KUBE-SERVICES ! -s 10.254.0.0/16 -d 10.96.125.27/32 -p tcp -m comment --comment "default/heketi: cluster IP" -m tcp --dport 8080 -j KUBE-MARK-MASQ');
    expect(out).toContain('-A KUBE-SERVICES -d 10.96.125.27/32 -p tcp -m comment --comment "default/heketi: cluster IP" -m tcp --dport 8080 -j KUBE-SVC-7RUAH544RSSBQYKK');
    expect(out).toContain('-A KUBE-SVC-7RUAH544RSSBQYKK -m comment --comment "default/heketi:" -j KUBE-SEP-IWORYNCAYHBSQHXU');
    expect(out).toContain('-A KUBE-SEP-IWORYNCAYHBSQHXU -s 10.254.20.8/32 -m comment --comment "default/heketi:" -j KUBE-MARK-MASQ');
    expect(out).toContain('-A KUBE-NODEPORTS -p tcp -m comment --comment "default/heketi:" -m tcp --dport 31131 -j KUBE-MARK-MASQ');
    expect(out).toContain('-A KUBE-NODEPORTS -p tcp -m comment --comment "default/heketi:" -m tcp --dport 31131 -j KUBE-SVC-7RUAH544RSSBQYKK');
    expect(out).toContain('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  });
});

describe('golden render: seed 002 (modern kube-proxy)', () => {
  const save = render('test/fixtures/nat/seed002-minikube.yaml', 'minikube', 'modern', 'iptables-save');
  const ours = new Set(lines(save));

  it('iptables-save output contains seed 002\'s SVC/SEP lines, probabilities printed 0.33333333349', () => {
    // (the blog annotates some lines with prose after the rule: cut it off)
    const want = lines(seed('002_')).map((l) => l.replace(/\s+[^\x00-\x7f].*$/, '')).filter((l) => l.startsWith('-A KUBE-'))
      .filter((l) => !l.includes('KUBE-LOOP-BACK'));
    expect(want.length).toBeGreaterThanOrEqual(15);
    // The blog's KUBE-SERVICES / masquerade lines leave out iptables-save's "-m tcp --dport N";
    // compare those with it removed from ours.
    const stripped = new Set([...ours].map((l) => l.replace(/ -m (tcp|udp) --dport \d+/, '')));
    for (const l of new Set(want)) {
      if (l.startsWith('-A KUBE-SERVICES') || l.includes('cluster IP"')) expect(stripped, l).toContain(l);
      else expect(ours, l).toContain(l);
    }
    expect(ours).toContain('-A KUBE-SVC-V2OKYYMBY3REGZOG ! -s 10.244.0.0/16 -d 10.101.57.97/32 -p tcp -m comment --comment "default/nginx-service cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ');
    expect(ours).toContain('-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN');
    expect(ours).toContain('-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0');
    expect(ours).toContain('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully');
  });

  it('kube-proxy format: argument order, bare addresses, probabilities 0.3333333333 / 0.5000000000', () => {
    const kp = lines(render('test/fixtures/nat/seed002-minikube.yaml', 'minikube', 'modern', 'kube-proxy'));
    const svc = kp.filter((l) => l.startsWith('-A KUBE-SVC-V2OKYYMBY3REGZOG'));
    expect(svc).toEqual([
      '-A KUBE-SVC-V2OKYYMBY3REGZOG -m comment --comment "default/nginx-service cluster IP" -m tcp -p tcp -d 10.101.57.97 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
      '-A KUBE-SVC-V2OKYYMBY3REGZOG -m comment --comment "default/nginx-service -> 10.244.0.27:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-POZMZY2HDLRATSJV',
      '-A KUBE-SVC-V2OKYYMBY3REGZOG -m comment --comment "default/nginx-service -> 10.244.0.28:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-Z3HXRORN5VDCFRJU',
      '-A KUBE-SVC-V2OKYYMBY3REGZOG -m comment --comment "default/nginx-service -> 10.244.0.30:80" -j KUBE-SEP-S46ZL6MIFVWDY42O',
    ]);
    expect(kp).toContain('-A KUBE-SEP-POZMZY2HDLRATSJV -m comment --comment default/nginx-service -s 10.244.0.27 -j KUBE-MARK-MASQ');
    expect(kp).toContain('-A KUBE-SEP-POZMZY2HDLRATSJV -m comment --comment default/nginx-service -m tcp -p tcp -j DNAT --to-destination 10.244.0.27:80');
    expect(kp).toContain('-A KUBE-SERVICES -m comment --comment "default/nginx-service cluster IP" -m tcp -p tcp -d 10.101.57.97 --dport 80 -j KUBE-SVC-V2OKYYMBY3REGZOG');
    // Go's "%#08x" of 1<<14
    expect(kp).toContain('-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000');
    expect(kp).toContain('-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN');
    const kpSave = lines(render('test/fixtures/nat/seed002-minikube.yaml', 'minikube', 'modern', 'kube-proxy', 'iptables-save'));
    expect(kpSave).toContain('-A KUBE-SVC-V2OKYYMBY3REGZOG -m comment --comment "default/nginx-service -> 10.244.0.27:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-POZMZY2HDLRATSJV');
  });

  it('seed 004: zwf/demoapp-service endpoint chains in kube-proxy\'s (string) order', () => {
    const out = lines(render('test/fixtures/nat/seed004-zwf.yaml', 'dmoc-fa163e7188d6', 'modern', 'iptables-save'))
      .filter((l) => l.startsWith('-A KUBE-SVC-FIHIHDNRZEG5VQEQ') && l.includes('KUBE-SEP'));
    expect(out).toEqual([
      '-A KUBE-SVC-FIHIHDNRZEG5VQEQ -m comment --comment "zwf/demoapp-service:http -> 192.33.206.93:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-FO7YK2K5DAKTCVSE',
      '-A KUBE-SVC-FIHIHDNRZEG5VQEQ -m comment --comment "zwf/demoapp-service:http -> 192.33.229.12:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-IPKL7NSNTVGKI4T5',
      '-A KUBE-SVC-FIHIHDNRZEG5VQEQ -m comment --comment "zwf/demoapp-service:http -> 192.33.73.139:80" -j KUBE-SEP-BPER562ISF3UFYOQ',
    ]);
  });
});

describe('buildRules semantics (proxier_test.go shapes)', () => {
  const base = `
apiVersion: kubetun.dev/v1alpha1
kind: KubeTunConfiguration
clusterCIDR: 10.0.0.0/24
hostnameOverride: node1
nodeIPs: [192.168.0.2]
---
`;
  const NP = '[ { name: p80, port: 80, nodePort: 3001 } ]';
  const svc = (extra: string, slice = '[ { addresses: [10.180.0.1], nodeName: node1 } ]', ports = NP) => parseConfig([{ file: 't.yaml', text: `${base}
apiVersion: v1
kind: Service
metadata: { name: svc1, namespace: ns1 }
spec:
  clusterIP: 172.30.0.41
  ports: ${ports}
${extra}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: svc1-a, namespace: ns1, labels: { kubernetes.io/service-name: svc1 } }
addressType: IPv4
ports: [ { name: p80, port: 80 } ]
endpoints: ${slice}
` }]);
  const out = (state: ReturnType<typeof parseConfig>, node = 'node1') =>
    lines(renderIptablesSave(buildRules(state, makeNodeSettings(state, { hostnameOverride: node })), { format: 'kube-proxy' }));

  it('NodePort with eTP Cluster: KUBE-NODEPORTS -> KUBE-EXT (masquerade) -> KUBE-SVC', () => {
    const o = out(svc('  type: NodePort'));
    expect(o).toContain('-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ');
    expect(o).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ');
    expect(o).toContain('-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80');
    expect(o).toContain('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/24 -j KUBE-MARK-MASQ');
  });

  it('eTP Local without local endpoints: KUBE-EXT short-circuits, filter DROPs external traffic', () => {
    const s = svc('  type: NodePort\n  externalTrafficPolicy: Local', '[ { addresses: [10.180.0.1], nodeName: node2 } ]');
    const o = out(s);
    expect(o).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -s 10.0.0.0/24 -j KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ');
    expect(o).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(o.some((l) => l.startsWith('-A KUBE-EXT-XPGD46QRK7WJZT7O -j'))).toBe(false);
    expect(o).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP');
    // with a local endpoint the KUBE-EXT chain falls through to KUBE-SVL
    const o2 = out(s, 'node2');
    expect(o2).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O');
    expect(o2).toContain('-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ');
  });

  it('no endpoints: REJECT in filter, no nat chains', () => {
    const o = out(svc('  type: NodePort\n  externalIPs: [192.168.99.11]', '[]'));
    expect(o).toContain('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT');
    expect(o).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT');
    expect(o).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT');
    expect(o.some((l) => l.includes('KUBE-SVC-'))).toBe(false);
  });

  it('iTP Local without local endpoints: DROP in filter KUBE-SERVICES', () => {
    const o = out(svc('  internalTrafficPolicy: Local', '[ { addresses: [10.180.0.1], nodeName: node2 } ]', '[ { name: p80, port: 80 } ]'));
    expect(o).toContain('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP');
  });

  it('LoadBalancer with source ranges: KUBE-FW, KUBE-PROXY-FIREWALL; externalIPs; affinity; masqueradeAll', () => {
    const s = svc(`  type: LoadBalancer
  externalIPs: [192.168.99.11]
  loadBalancerSourceRanges: [203.0.113.0/25, 192.168.0.0/24]
  sessionAffinity: ClientIP
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } }
status: { loadBalancer: { ingress: [ { ip: 1.2.3.4 } ] } }`);
    const o = out(s);
    expect(o).toContain('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 external IP" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j KUBE-EXT-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-FW-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 loadbalancer IP" -s 1.2.3.4 -j KUBE-EXT-XPGD46QRK7WJZT7O');
    expect(o).toContain('-A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"');
    expect(o).toContain('-A KUBE-PROXY-FIREWALL -m comment --comment "ns1/svc1:p80 traffic not accepted by KUBE-FW-XPGD46QRK7WJZT7O" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP');
    expect(o).toContain('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --rcheck --seconds 600 --reap -j KUBE-SEP-SXIVWICOYRO3J4NJ');
    expect(o).toContain('-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80');
    const save = lines(renderIptablesSave(buildRules(s, makeNodeSettings(s, {})), { format: 'iptables-save' }));
    expect(save).toContain('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --rcheck --seconds 600 --reap --name KUBE-SEP-SXIVWICOYRO3J4NJ --mask 255.255.255.255 --rsource -j KUBE-SEP-SXIVWICOYRO3J4NJ');
    const all = lines(renderIptablesSave(buildRules(s, makeNodeSettings(s, { masqueradeAll: true }))));
    expect(all).toContain('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ');
  });

  it('rr scheduler renders as an nth cascade; large clusters drop per-endpoint comments', () => {
    const rr = parseConfig([{ file: 't.yaml', text: `${base}
apiVersion: v1
kind: Service
metadata: { name: svc1, namespace: ns1, annotations: { kube-tun.dev/scheduler: rr } }
spec: { clusterIP: 172.30.0.41, ports: [ { name: p80, port: 80 } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: svc1-a, namespace: ns1, labels: { kubernetes.io/service-name: svc1 } }
addressType: IPv4
ports: [ { name: p80, port: 80 } ]
endpoints: [ { addresses: [10.180.0.1] }, { addresses: [10.180.0.2] }, { addresses: [10.180.0.3] } ]
` }]);
    const o = out(rr).filter((l) => l.startsWith('-A KUBE-SVC-XPGD46QRK7WJZT7O') && l.includes('KUBE-SEP'));
    expect(o.map((l) => l.replace(/.*-> /, ''))).toEqual([
      '10.180.0.1:80" -m statistic --mode nth --every 3 --packet 2 -j KUBE-SEP-SXIVWICOYRO3J4NJ',
      expect.stringContaining('--mode nth --every 2 --packet 1'),
      expect.not.stringContaining('statistic'),
    ]);
    const big = lines(renderIptablesSave(buildRules(rr, makeNodeSettings(rr, {}), { largeClusterEndpointsThreshold: 2 })));
    expect(big).toContain('-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1 -j KUBE-MARK-MASQ');
  });
});
