import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import {
  ConfigError, formatCidr, formatIPv4, loadConfig, makeNodeSettings, parseConfig, parseIPv4,
} from '../src/nat';

const ROOT = path.resolve(__dirname, '..');
const LAB = path.join(ROOT, 'lab/cluster.yaml');
const labText = fs.readFileSync(LAB, 'utf8');

function errorOf(text: string, file = 'lab/cluster.yaml'): string {
  try {
    parseConfig([{ file, text }]);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('nat config: the lab', () => {
  const state = loadConfig(LAB);

  it('reads the configuration, nodes, service ports and endpoints', () => {
    expect(formatCidr(state.config.clusterCIDR!)).toBe('10.1.0.0/16');
    expect(formatCidr(state.config.serviceCIDR!)).toBe('10.96.0.0/12');
    expect(state.config.masqueradeBit).toBe(14);
    expect(state.nodes.map((n) => n.name)).toEqual(['worker-1', 'worker-2']);
    expect(formatIPv4(state.nodes[1].tunnelAddr!)).toBe('10.1.236.128');
    const keys = state.servicePorts.map((s) => s.key);
    expect(keys).toEqual(expect.arrayContaining([
      'default/nginx-rr:/TCP', 'default/nginx-service:/TCP', 'default/sticky:/TCP', 'default/test:/TCP',
      'kube-system/kube-dns:dns/UDP', 'kube-system/kube-dns:dns-tcp/TCP',
      'zwf/demoapp-local:http/TCP', 'zwf/demoapp-nodeport-service:http/TCP',
    ]));
    const test = state.servicePorts.find((s) => s.name === 'test')!;
    expect(formatIPv4(test.clusterIP)).toBe('10.99.64.233');
    expect(test.port).toBe(9999);
    expect(test.targetPort).toBe(80);
    expect(state.endpoints[test.key].map((e) => e.endpoint)).toEqual(['10.1.139.84:80', '10.1.139.93:80']);
    const rr = state.servicePorts.find((s) => s.name === 'nginx-rr')!;
    expect(rr.scheduler).toBe('rr');
    const sticky = state.servicePorts.find((s) => s.name === 'sticky')!;
    expect(sticky.sessionAffinityClientIP).toBe(true);
    expect(sticky.stickyMaxAgeSeconds).toBe(10800);
    const local = state.servicePorts.find((s) => s.name === 'demoapp-local')!;
    expect(local.externalPolicyLocal).toBe(true);
    expect(local.nodePort).toBe(30338);
    // apiservice.NeedsHealthCheck: only LoadBalancer services get the health check node port
    expect(local.healthCheckNodePort).toBe(0);
  });

  it('orders endpoints like kube-proxy: deduplicated, sorted by the "ip:port" string', () => {
    const s = loadConfig(path.join(ROOT, 'test/fixtures/nat/seed004-zwf.yaml'));
    // string order, not numeric: 192.33.206.93 < 192.33.229.12 < 192.33.73.139 (seed 004's chain order)
    expect(s.endpoints['zwf/demoapp-service:http/TCP'].map((e) => e.endpoint)).toEqual([
      '192.33.206.93:80', '192.33.229.12:80', '192.33.73.139:80',
    ]);
    const two = parseConfig([{ file: 'x.yaml', text: `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: a, namespace: ns, labels: { kubernetes.io/service-name: s } }
addressType: IPv4
ports: [ { name: p, protocol: UDP, port: 53 } ]
endpoints: [ { addresses: [10.0.0.9] }, { addresses: [10.0.0.10], conditions: { ready: false, serving: true, terminating: true } } ]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: b, namespace: ns, labels: { kubernetes.io/service-name: s } }
addressType: IPv4
ports: [ { name: p, protocol: UDP, port: 53 } ]
endpoints: [ { addresses: [10.0.0.9] }, { addresses: [10.0.0.1] } ]
` }]);
    const eps = two.endpoints['ns/s:p/UDP'];
    expect(eps.map((e) => e.endpoint)).toEqual(['10.0.0.10:53', '10.0.0.1:53', '10.0.0.9:53']);
    expect(eps[0]).toMatchObject({ ready: false, serving: true, terminating: true });
    expect(eps[1]).toMatchObject({ ready: true, serving: true, terminating: false });
  });

  it('builds node settings; flags win over the file', () => {
    const n = makeNodeSettings(state, { hostnameOverride: 'worker-2' });
    expect(n.nodeName).toBe('worker-2');
    expect(n.nodeIPs.map(formatIPv4)).toEqual(['192.168.2.3']);
    expect(n.localAddresses.map(formatIPv4)).toEqual(['192.168.2.3', '10.1.236.128']);
    expect(formatCidr(n.localTrafficCIDR!)).toBe('10.1.0.0/16');
    expect(formatCidr(n.podCIDR!)).toBe('10.1.236.128/26');
    expect(n.masqueradeMark).toBe(0x4000);
    expect(n.masqueradeAll).toBe(false);
    const f = makeNodeSettings(state, { hostnameOverride: 'worker-1', clusterCIDR: '10.0.0.0/8', masqueradeAll: true, nodeIPs: ['192.168.2.22'] });
    expect(formatCidr(f.clusterCIDR!)).toBe('10.0.0.0/8');
    expect(f.masqueradeAll).toBe(true);
    expect(f.nodeIPs.map(formatIPv4)).toEqual(['192.168.2.22']);
    expect(f.localAddresses.map(formatIPv4)).toEqual(['192.168.2.22', '10.1.139.64']);
    expect(() => makeNodeSettings(state, {})).toThrow(/--hostname-override/);
    expect(() => makeNodeSettings(state, { hostnameOverride: 'worker-1', clusterCIDR: '10.0.0.0/99' })).toThrow(/--cluster-cidr: must be an IPv4 CIDR/);
    expect(() => makeNodeSettings(state, { hostnameOverride: 'worker-1', nodeIPs: ['1.2.3'] })).toThrow(/--node-ip/);
  });
});

describe('nat config: errors name file, document and field', () => {
  it('bad port', () => {
    const text = labText.replace('- { protocol: TCP, port: 9999, targetPort: 80 }', '- { protocol: TCP, port: abc, targetPort: 80 }');
    expect(errorOf(text)).toBe('lab/cluster.yaml: document 4 (Service default/test): spec.ports[0].port: must be 1-65535, got "abc"');
  });

  it('bad CIDR, unknown key, bad bit in KubeTunConfiguration', () => {
    expect(errorOf(labText.replace('clusterCIDR: 10.1.0.0/16', 'clusterCIDR: 10.1.0.0/33')))
      .toBe('lab/cluster.yaml: document 1 (KubeTunConfiguration): clusterCIDR: must be an IPv4 CIDR like 10.0.0.0/16, got "10.1.0.0/33"');
    expect(errorOf(labText.replace('masqueradeAll: false', 'masqueradeAll: false\nmasqueradeALL: true')))
      .toMatch(/^lab\/cluster\.yaml: document 1 \(KubeTunConfiguration\): masqueradeALL: unknown field/);
    expect(errorOf(labText.replace('masqueradeBit: 14', 'masqueradeBit: 32')))
      .toBe('lab/cluster.yaml: document 1 (KubeTunConfiguration): masqueradeBit: must be 0-31, got 32');
  });

  it('unknown kind, missing fields, bad addresses', () => {
    expect(errorOf('apiVersion: v1\nkind: Pod\nmetadata: { name: p }\n', 'x.yaml'))
      .toMatch(/^x\.yaml: document 1: kind: unsupported object "v1" "Pod"/);
    expect(errorOf('apiVersion: v1\nkind: Service\nmetadata: { name: s, namespace: n }\nspec: { ports: [ { port: 80 } ] }\n', 'x.yaml'))
      .toBe('x.yaml: document 1 (Service n/s): spec.clusterIP: required (kube-tun does not allocate cluster IPs)');
    expect(errorOf('---\napiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec: { clusterIP: 10.0.0.300, ports: [ { port: 80 } ] }\n', 'x.yaml'))
      .toBe('x.yaml: document 1 (Service default/s): spec.clusterIP: must be an IPv4 address, got "10.0.0.300"');
    expect(errorOf(labText.replace('addresses: [10.1.139.93], conditions: { ready: true }, nodeName: worker-1 }\n---\n# seed 002', 'addresses: [10.1.139.x], conditions: { ready: true }, nodeName: worker-1 }\n---\n# seed 002')))
      .toBe('lab/cluster.yaml: document 5 (EndpointSlice default/test-abcde): endpoints[1].addresses[0]: must be an IPv4 address, got "10.1.139.x"');
    expect(errorOf(labText.replace('nodePort: 30337 }', '}')))
      .toMatch(/document 14 \(Service zwf\/demoapp-nodeport-service\): spec\.ports\[0\]\.nodePort: required for type NodePort/);
    expect(errorOf(labText.replace('clusterIP: 10.99.64.233', 'clusterIP: 10.200.64.233')))
      .toBe('lab/cluster.yaml: document 4 (Service default/test): spec.clusterIP: 10.200.64.233 is outside serviceCIDR 10.96.0.0/12');
    expect(errorOf('apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: e }\naddressType: IPv4\n', 'x.yaml'))
      .toBe('x.yaml: document 1 (EndpointSlice default/e): metadata.labels["kubernetes.io/service-name"]: required (names the Service this slice belongs to)');
    expect(errorOf('apiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec: { clusterIP: 10.0.0.1, ports: [ { port: 80, protocol: tcp } ] }\n', 'x.yaml'))
      .toBe('x.yaml: document 1 (Service default/s): spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got "tcp"');
  });

  it('YAML syntax errors, duplicates and Lists', () => {
    expect(errorOf('a: [1, 2\n', 'bad.yaml')).toMatch(/^bad\.yaml: document 1: YAML: /);
    expect(errorOf(`${labText}\n---\napiVersion: v1\nkind: Service\nmetadata: { name: test, namespace: default }\nspec: { clusterIP: 10.96.0.5, ports: [ { port: 1 } ] }\n`))
      .toMatch(new RegExp(`document ${parseAllDocuments(labText).length + 1} \\(Service default/test\\): metadata\\.name: duplicate Service default/test`));
    const list = parseConfig([{ file: 'l.yaml', text: `
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: s, namespace: n }
    spec: { clusterIP: 10.0.0.1, ports: [ { port: 80 } ] }
` }]);
    expect(list.servicePorts.map((s) => s.key)).toEqual(['n/s:/TCP']);
    expect(errorOf('apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Service\n    metadata: { name: s }\n    spec: { clusterIP: 10.0.0.1, ports: [ { port: 0 } ] }\n', 'l.yaml'))
      .toBe('l.yaml: document 1 (Service default/s): items[0].spec.ports[0].port: must be 1-65535, got 0');
  });

  it('skips what kube-proxy skips: headless, ExternalName, IPv6 slices', () => {
    const s = parseConfig([{ file: 'x.yaml', text: `
apiVersion: v1
kind: Service
metadata: { name: h }
spec: { clusterIP: None, ports: [ { port: 80 } ] }
---
apiVersion: v1
kind: Service
metadata: { name: e }
spec: { type: ExternalName, externalName: example.org }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: v6, labels: { kubernetes.io/service-name: h } }
addressType: IPv6
endpoints: [ { addresses: ["fd00::1"] } ]
` }]);
    expect(s.servicePorts).toEqual([]);
    expect(Object.keys(s.endpoints)).toEqual([]);
    expect(parseIPv4('010.1.1.1')).toBe(-1);
  });
});
