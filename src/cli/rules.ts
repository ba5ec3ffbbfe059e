// `kube-tun rules` and `kube-tun trace`: kube-proxy's rules for a node, and one packet's walk through them.
import * as fs from 'node:fs';
import { loadConfig, makeNodeSettings, buildRules, renderIptablesSave, parseIPv4, importIptablesSave, tracePacket, formatTrace } from '../nat';
import type { RuleSet, NodeSettings } from '../nat';
import { IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, protoName } from '../netstack/proto';
import { UsageError, intFlag } from './flags';

/** What `kube-tun trace --proto` takes. */
const TRACE_PROTOS = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP].map(protoName);

function flagsOf(v: Record<string, any>) {
  return { hostnameOverride: v['hostname-override'] ?? v.node, clusterCIDR: v['cluster-cidr'], masqueradeAll: v['masquerade-all'], nodeIPs: v['node-ip'] };
}

function proxyVersion(v: Record<string, any>): 'modern' | 'legacy' {
  const pv = v['proxy-version'] ?? 'modern';
  if (pv !== 'modern' && pv !== 'legacy') throw new UsageError(`--proxy-version: expected modern or legacy, got "${pv}"`);
  return pv;
}

export function rules(v: Record<string, any>): number {
  if (!v.config?.length) throw new UsageError('rules: --config FILE is required (or --live for the running daemon)');
  const state = loadConfig(v.config);
  const node = makeNodeSettings(state, flagsOf(v));
  const rs = buildRules(state, node, { proxyVersion: proxyVersion(v) });
  const pf = v['probability-format'];
  if (pf !== undefined && pf !== 'kube-proxy' && pf !== 'iptables-save') throw new UsageError(`--probability-format: expected kube-proxy or iptables-save, got "${pf}"`);
  process.stdout.write(renderIptablesSave(rs, { probabilityFormat: pf }));
  return 0;
}

/** The rule set and node a trace runs against: from manifests, or from an iptables-save dump. */
export function ruleSetFor(v: Record<string, any>): { rs: RuleSet; localAddresses: number[] } {
  const extraLocal = String(v['local-addrs'] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const a = parseIPv4(s);
    if (a < 0) throw new UsageError(`--local-addrs: "${s}" is not an IPv4 address`);
    return a;
  });
  if (v.rules) {
    return { rs: importIptablesSave(fs.readFileSync(v.rules, 'utf8'), v.rules), localAddresses: extraLocal };
  }
  if (!v.config?.length) throw new UsageError('give --config FILE… or --rules DUMP');
  const state = loadConfig(v.config);
  const node: NodeSettings = makeNodeSettings(state, flagsOf(v));
  return { rs: buildRules(state, node, { proxyVersion: proxyVersion(v) }), localAddresses: [...node.localAddresses, ...extraLocal] };
}

export function trace(v: Record<string, any>): number {
  const { rs, localAddresses } = ruleSetFor(v);
  const addr = (name: string) => {
    const s = v[name];
    if (!s) throw new UsageError(`trace: --${name} ADDR is required`);
    const a = parseIPv4(s);
    if (a < 0) throw new UsageError(`--${name}: "${s}" is not an IPv4 address`);
    return a;
  };
  const port = (name: 'sport' | 'dport', dflt: number) => intFlag(v[name], name) ?? dflt;
  const proto = String(v.proto ?? protoName(IPPROTO_TCP)).toLowerCase();
  if (!TRACE_PROTOS.includes(proto)) {
    throw new UsageError(`--proto: expected ${TRACE_PROTOS.slice(0, -1).join(', ')} or ${TRACE_PROTOS[TRACE_PROTOS.length - 1]}, got "${proto}"`);
  }
  const result = tracePacket(rs, { proto, src: addr('src'), dst: addr('dst'), sport: port('sport', 40000), dport: port('dport', 0) }, { localAddresses });
  process.stdout.write(v.json ? JSON.stringify(result, null, 2) + '\n' : formatTrace(result).replace(/\n?$/, '\n'));
  return 0;
}
