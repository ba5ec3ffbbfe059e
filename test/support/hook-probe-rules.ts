// A rule set for testing netfilter's hook order in the trace and the matcher (shared by both).
import type { RuleSet, Match, Target, Rule, Chain } from '../../src/nat';
import { parseIPv4, cidrOf } from '../../src/nat';

const ip = parseIPv4;
/**
 * A node (local address 192.168.1.1) whose every builtin chain starts with a counting rule, so a
 * trace shows which hooks a packet crosses, in which order. Besides:
 * - nat PREROUTING/OUTPUT: tcp/80 to 10.0.0.100 -> DNAT 192.168.1.1:8080 and to 10.0.0.102 ->
 *   DNAT 192.168.1.1:8081 (a local address), to 10.0.0.101 -> DNAT 10.9.9.9:80 (elsewhere);
 *   nat OUTPUT marks tcp/81 with 0x1;
 * - nat INPUT and POSTROUTING: tcp/82 -> MASQUERADE;
 * - filter INPUT: tcp/7 -> REJECT, tcp/81 with mark 0x1 and ctstate NEW -> REJECT,
 *   ctstate DNAT to tcp/8080 -> DROP;
 * - filter FORWARD: tcp/7 -> DROP; filter OUTPUT: nothing else.
 */
export const NODE_ADDR = '192.168.1.1';
export function hookProbeRules(randomFully = false): RuleSet {
  const tcp: Match[] = [{ kind: 'proto', proto: 6, inv: false }, { kind: 'l4', proto: 6 }];
  const port = (n: number): Match[] => [...tcp, { kind: 'dport', lo: n, hi: n, inv: false }];
  const to = (a: string): Match => ({ kind: 'dst', cidr: cidrOf(ip(a)), inv: false });
  const rule = (matches: Match[], target: Target | null): Rule => ({ matches, target, svc: -1 });
  const count = rule([{ kind: 'comment', text: 'hook' }], null);
  const builtin = (name: string, rules: Rule[]): Chain => ({ name, builtin: true, policy: 'ACCEPT', rules: [count, ...rules] });
  const dnat = [
    rule([to('10.0.0.100'), ...port(80)], { kind: 'DNAT', addr: ip(NODE_ADDR), port: 8080 }),
    rule([to('10.0.0.101'), ...port(80)], { kind: 'DNAT', addr: ip('10.9.9.9'), port: 0 }),
    rule([to('10.0.0.102'), ...port(80)], { kind: 'DNAT', addr: ip(NODE_ADDR), port: 8081 }),
  ];
  const masq = rule(port(82), { kind: 'MASQUERADE', randomFully, random: false });
  return {
    services: [], meta: { proxyVersion: 'imported', nodeName: 'n', masqueradeMark: 0x4000 },
    tables: [
      { name: 'nat', chains: [
        builtin('PREROUTING', dnat), builtin('INPUT', [masq]),
        builtin('OUTPUT', [...dnat, rule(port(81), { kind: 'MARK', op: 'or', value: 1, mask: 1 })]),
        builtin('POSTROUTING', [masq]),
      ] },
      { name: 'filter', chains: [
        builtin('INPUT', [
          rule(port(7), { kind: 'REJECT', rejectWith: null }),
          rule([...port(81), { kind: 'mark', value: 1, mask: 1, inv: false }, { kind: 'conntrack', states: ['NEW'], inv: false }],
            { kind: 'REJECT', rejectWith: null }),
          rule([...port(8080), { kind: 'conntrack', states: ['DNAT'], inv: false }], { kind: 'DROP' }),
        ]),
        builtin('FORWARD', [rule(port(7), { kind: 'DROP' })]),
        builtin('OUTPUT', []),
      ] },
    ],
  };
}
