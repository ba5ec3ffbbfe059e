// Policy routing that puts kube-tun in the node's data path, and takes it out again.
//
// What must reach the TUN: packets to the service CIDR, everything pods send (replies from
// endpoints must be un-NATed), NodePort traffic to the node's address, and traffic to other
// nodes' pod CIDRs (kube-tun encapsulates it in IPIP). What comes back out of the TUN is routed
// normally and must not loop. The local table is moved below our rules, otherwise a pod's reply
// to the node's (masquerade) address would be delivered locally without passing through us.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, protoName } from '../netstack/proto';

export interface RoutingPlan {
  tun: string;
  serviceCIDR: string;
  nodeIP: string;
  tunnelAddress?: string;
  localPodCIDR?: string;
  remotePodCIDRs: string[];
  nodePortRange: [number, number];
  tableFromTun: number;   // iif <tun>: unreachable service/remote-pod routes, so nothing loops
  tableToTun: number;     // default dev <tun>
  mtu: number;
}

export const DEFAULT_TABLE_FROM_TUN = 100;
export const DEFAULT_TABLE_TO_TUN = 200;
// Rule priorities; the local table is moved from 0 to PREF_LOCAL.
const POD_PROTOS = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP].map(protoName);
const PREF_FROM_TUN = 100, PREF_FROM_TUN_SKIP = 101, PREF_PODS = 200, PREF_NODEPORT_TCP = 210,
  PREF_NODEPORT_UDP = 211, PREF_LOCAL = 300;

export interface Runner { (args: string[]): string }

const ipRunner: Runner = (args) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

function sysctl(key: string, value: string): void {
  writeFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, value);
}

/** The `ip` commands that realise the plan, in order (also printed by `kube-tun run --dry-run`). */
export function setupCommands(p: RoutingPlan): string[][] {
  const cmds: string[][] = [
    ['link', 'set', p.tun, 'mtu', String(p.mtu), 'up'],
  ];
  if (p.tunnelAddress) cmds.push(['addr', 'replace', `${p.tunnelAddress}/32`, 'dev', p.tun]);
  cmds.push(['route', 'replace', p.serviceCIDR, 'dev', p.tun, 'src', p.nodeIP]);
  for (const cidr of p.remotePodCIDRs) {
    cmds.push(['route', 'replace', cidr, 'dev', p.tun, 'src', p.tunnelAddress ?? p.nodeIP]);
  }
  cmds.push(['route', 'replace', 'unreachable', p.serviceCIDR, 'table', String(p.tableFromTun)]);
  for (const cidr of p.remotePodCIDRs) cmds.push(['route', 'replace', 'unreachable', cidr, 'table', String(p.tableFromTun)]);
  cmds.push(['route', 'replace', 'default', 'dev', p.tun, 'table', String(p.tableToTun)]);
  const range = `${p.nodePortRange[0]}-${p.nodePortRange[1]}`;
  cmds.push(
    ['rule', 'add', 'pref', String(PREF_LOCAL), 'lookup', 'local'],
    ['rule', 'del', 'pref', '0', 'lookup', 'local'],
    ['rule', 'add', 'pref', String(PREF_FROM_TUN), 'iif', p.tun, 'lookup', String(p.tableFromTun)],
    ['rule', 'add', 'pref', String(PREF_FROM_TUN_SKIP), 'iif', p.tun, 'goto', String(PREF_LOCAL)],
  );
  // Per protocol, not "everything from the pods": ARP's route lookups (protocol 0) for the pods'
  // gateway must still find the local table, or no pod could resolve its next hop.
  if (p.localPodCIDR) {
    for (const [k, proto] of POD_PROTOS.entries()) {
      cmds.push(['rule', 'add', 'pref', String(PREF_PODS + k), 'from', p.localPodCIDR, 'ipproto', proto, 'lookup', String(p.tableToTun)]);
    }
  }
  cmds.push(
    ['rule', 'add', 'pref', String(PREF_NODEPORT_TCP), 'to', p.nodeIP, 'ipproto', protoName(IPPROTO_TCP), 'dport', range, 'lookup', String(p.tableToTun)],
    ['rule', 'add', 'pref', String(PREF_NODEPORT_UDP), 'to', p.nodeIP, 'ipproto', protoName(IPPROTO_UDP), 'dport', range, 'lookup', String(p.tableToTun)],
  );
  return cmds;
}

export function setupRouting(p: RoutingPlan, ip: Runner = ipRunner): void {
  teardownRouting(p, ip, false); // idempotent start: a crashed predecessor may have left rules behind
  for (const [k, v] of [['net.ipv4.ip_forward', '1'], ['net.ipv4.conf.all.rp_filter', '0'],
    [`net.ipv4.conf.${p.tun}.rp_filter`, '0'], [`net.ipv4.conf.${p.tun}.accept_local`, '1']]) sysctl(k, v);
  // kube-tun is IPv4 only: without this the kernel sends router solicitations into the TUN.
  try { sysctl(`net.ipv6.conf.${p.tun}.disable_ipv6`, '1'); } catch { /* IPv6 off in this namespace */ }
  for (const cmd of setupCommands(p)) {
    try {
      ip(cmd);
    } catch (e: any) {
      throw new Error(`routing setup failed at "ip ${cmd.join(' ')}": ${(e.stderr || e.message).toString().trim()}`);
    }
  }
}

/** Remove everything setupRouting added; safe to run any number of times (kube-tun cleanup). */
export function teardownRouting(p: Pick<RoutingPlan, 'tun' | 'tableFromTun' | 'tableToTun'>, ip: Runner = ipRunner, removeLink = true): string[] {
  const removed: string[] = [];
  const rules = ip(['rule', 'show']);
  for (const pref of [PREF_FROM_TUN, PREF_FROM_TUN_SKIP, ...POD_PROTOS.map((_, k) => PREF_PODS + k), PREF_NODEPORT_TCP, PREF_NODEPORT_UDP]) {
    while (ip(['rule', 'show', 'pref', String(pref)]).trim()) {
      ip(['rule', 'del', 'pref', String(pref)]);
      removed.push(`rule pref ${pref}`);
    }
  }
  if (!/^0:\s+from all lookup local/m.test(rules)) {
    ip(['rule', 'add', 'pref', '0', 'lookup', 'local']);
    removed.push('local table restored at pref 0');
  }
  while (ip(['rule', 'show', 'pref', String(PREF_LOCAL)]).trim()) {
    ip(['rule', 'del', 'pref', String(PREF_LOCAL)]);
    removed.push(`rule pref ${PREF_LOCAL}`);
  }
  for (const table of [p.tableFromTun, p.tableToTun]) {
    let routes = '';
    try { routes = ip(['route', 'show', 'table', String(table)]); } catch { /* table does not exist */ }
    if (routes.trim()) {
      ip(['route', 'flush', 'table', String(table)]);
      removed.push(`table ${table}`);
    }
  }
  if (removeLink) try {
    ip(['link', 'show', p.tun]);
    ip(['link', 'del', p.tun]);
    removed.push(`link ${p.tun}`);
  } catch { /* no such device */ }
  return removed;
}
