// iptables-save text surgery for the rule-update case: what kube-proxy hands iptables-restore
// --noflush on a partial sync (only the chains that changed) and on a full sync (every KUBE chain,
// no built-in chains: their jump rules are ensured separately and must not be appended twice).

const BUILTIN = new Set(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING', 'FORWARD']);

interface Table { name: string; chains: Map<string, string[]>; decl: Map<string, string> }

export function parseDump(text: string): Map<string, Table> {
  const tables = new Map<string, Table>();
  let cur: Table | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\[\d+:\d+\] /, '');
    if (line.startsWith('*')) {
      cur = { name: line.slice(1).trim(), chains: new Map(), decl: new Map() };
      tables.set(cur.name, cur);
    } else if (!cur || line.startsWith('#') || !line.trim()) {
      continue;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0];
      cur.decl.set(name, line.replace(/\[\d+:\d+\]$/, '[0:0]'));
      if (!cur.chains.has(name)) cur.chains.set(name, []);
    } else if (line.startsWith('-A ')) {
      const name = line.split(' ')[1];
      if (!cur.chains.has(name)) cur.chains.set(name, []);
      cur.chains.get(name)!.push(line);
    }
  }
  return tables;
}

/** The restore input that turns ruleset `from` into `to`, touching only chains that differ. */
export function partialRestore(fromText: string, toText: string): { text: string; changed: string[]; deleted: string[] } {
  const from = parseDump(fromText), to = parseDump(toText);
  const out: string[] = [];
  const changedAll: string[] = [], deletedAll: string[] = [];
  for (const [tname, t] of to) {
    const f = from.get(tname);
    const changed: string[] = [], deleted: string[] = [];
    for (const [c, rules] of t.chains) {
      const old = f?.chains.get(c);
      if (!old || old.length !== rules.length || old.some((r, i) => r !== rules[i])) changed.push(c);
    }
    for (const c of f?.chains.keys() ?? []) if (!t.chains.has(c)) deleted.push(c);
    if (changed.length === 0 && deleted.length === 0) continue;
    for (const c of [...changed, ...deleted]) if (BUILTIN.has(c)) throw new Error(`partial restore would touch built-in chain ${tname}/${c}`);
    out.push(`*${tname}`);
    for (const c of changed) out.push(`:${c} - [0:0]`);
    for (const c of deleted) out.push(`:${c} - [0:0]`);
    for (const c of changed) out.push(...t.chains.get(c)!);
    for (const c of deleted) out.push(`-X ${c}`);
    out.push('COMMIT');
    changedAll.push(...changed.map((c) => `${tname}/${c}`));
    deletedAll.push(...deleted.map((c) => `${tname}/${c}`));
  }
  return { text: out.join('\n') + '\n', changed: changedAll, deleted: deletedAll };
}

/** Every table and non-built-in chain of a dump, for `iptables-restore --noflush` (a full sync). */
export function fullSyncRestore(text: string): string {
  const out: string[] = [];
  for (const [tname, t] of parseDump(text)) {
    out.push(`*${tname}`);
    for (const c of t.chains.keys()) if (!BUILTIN.has(c)) out.push(`:${c} - [0:0]`);
    for (const [c, rules] of t.chains) if (!BUILTIN.has(c)) out.push(...rules);
    out.push('COMMIT');
  }
  return out.join('\n') + '\n';
}

export function countRules(text: string, chainPrefix = ''): number {
  let n = 0;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\[\d+:\d+\] /, '');
    if (line.startsWith(`-A ${chainPrefix}`)) n++;
  }
  return n;
}
