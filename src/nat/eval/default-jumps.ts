// The jump rules kube-proxy ensures in the built-in chains, for rule sets that leave them out (a
// restore buffer, buildRules with includeJumpRules: false): the matcher and the trace both add them.
import { BUILTIN_CHAINS, Match, Rule, Table } from '../rules/ir';

/**
 * When a table has no builtin chains (a kube-proxy restore buffer, or buildRules with
 * includeJumpRules: false), add the jump rules kube-proxy ensures at a full sync, so the hooks
 * reach its chains.
 */
export function withDefaultJumps(tables: readonly Table[]): Table[] {
  return tables.map((t) => {
    if (t.chains.some((c) => c.builtin)) return t;
    const has = (n: string) => t.chains.some((c) => c.name === n);
    const j = (chain: string, extra: Match[] = []): Rule => ({ matches: extra, target: { kind: 'jump', chain }, svc: -1 });
    const ctNew: Match = { kind: 'conntrack', states: ['NEW'], inv: false };
    // The table's built-in chains (all of them, in their order), with these rules.
    const withBuiltins = (rules: Readonly<Record<string, Rule[]>>): Table => ({ name: t.name, chains: [
      ...BUILTIN_CHAINS[t.name].map((name) => ({ name, builtin: true, policy: 'ACCEPT' as const, rules: rules[name] ?? [] })), ...t.chains,
    ] });
    if (t.name === 'nat') {
      const svc = has('KUBE-SERVICES') ? [j('KUBE-SERVICES')] : [];
      return withBuiltins({ PREROUTING: svc, OUTPUT: svc, POSTROUTING: has('KUBE-POSTROUTING') ? [j('KUBE-POSTROUTING')] : [] });
    }
    if (t.name === 'filter') {
      const input: Rule[] = [], fwd: Rule[] = [], output: Rule[] = [];
      if (has('KUBE-FIREWALL')) { input.push(j('KUBE-FIREWALL')); output.push(j('KUBE-FIREWALL')); }
      if (has('KUBE-PROXY-FIREWALL')) { input.push(j('KUBE-PROXY-FIREWALL', [ctNew])); fwd.push(j('KUBE-PROXY-FIREWALL', [ctNew])); output.push(j('KUBE-PROXY-FIREWALL', [ctNew])); }
      if (has('KUBE-NODEPORTS')) input.push(j('KUBE-NODEPORTS'));
      if (has('KUBE-FORWARD')) fwd.push(j('KUBE-FORWARD'));
      if (has('KUBE-SERVICES')) { fwd.push(j('KUBE-SERVICES', [ctNew])); output.push(j('KUBE-SERVICES', [ctNew])); }
      if (has('KUBE-EXTERNAL-SERVICES')) { input.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); fwd.push(j('KUBE-EXTERNAL-SERVICES', [ctNew])); }
      return withBuiltins({ INPUT: input, FORWARD: fwd, OUTPUT: output });
    }
    return t;
  });
}
