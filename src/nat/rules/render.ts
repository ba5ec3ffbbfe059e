// The rule IR as iptables-save / iptables-restore text.
//
// format 'kube-proxy' (default): what kube-proxy hands to `iptables-restore`: its argument order
// (the IR's match order), its spellings (bare /32 addresses in modern mode, marks as Go's "%#08x",
// --or-mark/--xor-mark, comments quoted only when they contain spaces, probabilities as written).
// format 'iptables-save': what `iptables-save` prints for the same rules once loaded: -s/-d/-p
// first, then the matches in order, /32 everywhere, --set-xmark, "%.11f" probabilities,
// `--reject-with icmp-port-unreachable`, `-m recent … --mask 255.255.255.255 --rsource`.
// Chains are grouped (declarations, then each chain's rules in order), as iptables-save does; this
// is equally valid restore input.
import { goHex08 } from './build';
import { Cidr, formatCidr, formatIPv4 } from '../ip';
import {
  Chain, Match, Rule, RuleSet, Table, Target, formatProbabilityIptablesSave, ruleProtoName,
} from './ir';

export interface RenderOptions {
  format?: 'kube-proxy' | 'iptables-save';
  /** Default: follows `format`. */
  probabilityFormat?: 'kube-proxy' | 'iptables-save';
}

interface Style {
  save: boolean;
  legacy: boolean; // legacy kube-proxy wrote "/32" (utilproxy.ToCIDR); modern writes bare IPs
  probSave: boolean;
}

export function renderIptablesSave(rs: RuleSet, opts: RenderOptions = {}): string {
  const save = opts.format === 'iptables-save';
  const style: Style = {
    save,
    legacy: !(rs.meta.proxyVersion === 'modern' || rs.meta.bareHostAddresses === true),
    probSave: (opts.probabilityFormat ?? (save ? 'iptables-save' : 'kube-proxy')) === 'iptables-save',
  };
  const out: string[] = [];
  for (const t of rs.tables) renderTable(t, style, out);
  return out.join('\n') + '\n';
}

function renderTable(t: Table, st: Style, out: string[]): void {
  out.push(`*${t.name}`);
  for (const c of t.chains) out.push(c.builtin ? `:${c.name} ${c.policy ?? 'ACCEPT'} [0:0]` : `:${c.name} - [0:0]`);
  for (const c of t.chains) for (const r of c.rules) out.push(renderRule(c, r, st));
  out.push('COMMIT');
}

/** One rule as a `-A CHAIN …` line. */
export function renderRule(c: Chain | string, r: Rule, st: Style | RenderOptions = {}, proxyVersion: 'modern' | 'legacy' | 'imported' = 'modern'): string {
  const style: Style = 'save' in st ? st : {
    save: st.format === 'iptables-save', legacy: proxyVersion !== 'modern',
    probSave: (st.probabilityFormat ?? (st.format === 'iptables-save' ? 'iptables-save' : 'kube-proxy')) === 'iptables-save',
  };
  const parts: string[] = [`-A ${typeof c === 'string' ? c : c.name}`];
  if (style.save) renderSaveOrder(r, style, parts);
  else for (const m of r.matches) renderMatch(m, style, parts);
  if (r.target) parts.push(renderTarget(r.target, style));
  return parts.join(' ');
}

function addr(c: Cidr, st: Style): string {
  return formatCidr(c, !st.save && !st.legacy);
}

function quote(s: string, always: boolean): string {
  if (!always && s !== '' && !/[\s"'\\]/.test(s)) return s;
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function hex(v: number, st: Style): string {
  return st.save ? `0x${(v >>> 0).toString(16)}` : goHex08(v);
}

function ports(lo: number, hi: number): string {
  return lo === hi ? String(lo) : `${lo}:${hi}`;
}

function l4Name(r: Rule): string {
  for (const m of r.matches) if (m.kind === 'l4' || m.kind === 'proto') return ruleProtoName(m.proto);
  return 'tcp';
}

/** kube-proxy order: the IR's order, each item in place. */
function renderMatch(m: Match, st: Style, parts: string[]): void {
  const neg = (inv: boolean) => (inv ? '! ' : '');
  switch (m.kind) {
    case 'src': parts.push(`${neg(m.inv)}-s ${addr(m.cidr, st)}`); return;
    case 'dst': parts.push(`${neg(m.inv)}-d ${addr(m.cidr, st)}`); return;
    case 'proto': parts.push(`${neg(m.inv)}-p ${ruleProtoName(m.proto)}`); return;
    case 'l4': parts.push(`-m ${ruleProtoName(m.proto)}`); return;
    case 'sport': parts.push(`${neg(m.inv)}--sport ${ports(m.lo, m.hi)}`); return;
    case 'dport': parts.push(`${neg(m.inv)}--dport ${ports(m.lo, m.hi)}`); return;
    case 'comment': parts.push(`-m comment --comment ${quote(m.text, st.save)}`); return;
    case 'statistic':
      if (m.mode === 'random') {
        const p = st.probSave ? formatProbabilityIptablesSave(m.probability) : m.text;
        parts.push(`-m statistic --mode random ${neg(m.inv)}--probability ${p}`);
      } else {
        parts.push(`-m statistic --mode nth ${neg(m.inv)}--every ${m.every} --packet ${m.packet}`);
      }
      return;
    case 'mark':
      parts.push(`-m mark ${neg(m.inv)}--mark ${m.mask === 0xffffffff ? hex(m.value, st) : `${hex(m.value, st)}/${hex(m.mask, st)}`}`);
      return;
    case 'addrtype': {
      const a: string[] = ['-m addrtype'];
      if (m.srcType) a.push(`${neg(m.srcInv)}--src-type ${m.srcType}`);
      if (m.dstType) a.push(`${neg(m.dstInv)}--dst-type ${m.dstType}`);
      parts.push(a.join(' '));
      return;
    }
    case 'recent':
      if (st.save) {
        const a = [`-m recent ${neg(m.inv)}--${m.op}`];
        if (m.seconds) a.push(`--seconds ${m.seconds}`);
        if (m.reap) a.push('--reap');
        a.push(`--name ${m.name} --mask 255.255.255.255 --rsource`);
        parts.push(a.join(' '));
      } else {
        const a = [`-m recent --name ${m.name} ${neg(m.inv)}--${m.op}`];
        if (m.seconds) a.push(`--seconds ${m.seconds}`);
        if (m.reap) a.push('--reap');
        parts.push(a.join(' '));
      }
      return;
    case 'conntrack': {
      const states = st.save ? CT_SAVE_ORDER.filter((s) => m.states.includes(s)) : [...m.states];
      parts.push(`-m conntrack ${neg(m.inv)}--ctstate ${states.join(',')}`);
      return;
    }
    case 'nfacct': parts.push(`-m nfacct --nfacct-name ${m.name}`); return;
  }
}

const CT_SAVE_ORDER = ['INVALID', 'NEW', 'RELATED', 'ESTABLISHED', 'UNTRACKED', 'SNAT', 'DNAT'] as const;

/** iptables-save order: -s, -d, -p, then the matches in order with the L4 options inside their module. */
function renderSaveOrder(r: Rule, st: Style, parts: string[]): void {
  for (const k of ['src', 'dst', 'proto'] as const) {
    for (const m of r.matches) if (m.kind === k) renderMatch(m, st, parts);
  }
  const l4opts: Match[] = [...r.matches.filter((m) => m.kind === 'sport'), ...r.matches.filter((m) => m.kind === 'dport')];
  let l4done = false;
  for (const m of r.matches) {
    if (m.kind === 'src' || m.kind === 'dst' || m.kind === 'proto') continue;
    if (m.kind === 'l4' || m.kind === 'dport' || m.kind === 'sport') {
      if (l4done) continue;
      l4done = true;
      parts.push(`-m ${m.kind === 'l4' ? ruleProtoName(m.proto) : l4Name(r)}`);
      for (const o of l4opts) renderMatch(o, st, parts);
      continue;
    }
    renderMatch(m, st, parts);
  }
}

function renderTarget(t: Target, st: Style): string {
  switch (t.kind) {
    case 'jump': return `-j ${t.chain}`;
    case 'goto': return `-g ${t.chain}`;
    case 'RETURN': case 'ACCEPT': case 'DROP': return `-j ${t.kind}`;
    case 'REJECT':
      if (t.rejectWith) return `-j REJECT --reject-with ${t.rejectWith}`;
      return st.save ? '-j REJECT --reject-with icmp-port-unreachable' : '-j REJECT';
    case 'DNAT': return `-j DNAT --to-destination ${formatIPv4(t.addr)}${t.port ? `:${t.port}` : ''}`;
    case 'MASQUERADE': return `-j MASQUERADE${t.random ? ' --random' : ''}${t.randomFully ? ' --random-fully' : ''}`;
    case 'MARK': {
      if (st.save) {
        const [v, m] = t.op === 'or' ? [t.value, t.value] : t.op === 'xor' ? [t.value, 0] : t.op === 'and' ? [0, ~t.value >>> 0] : [t.value, t.mask];
        return `-j MARK --set-xmark ${hex(v, st)}/${hex(m, st)}`;
      }
      if (t.op === 'setx') return `-j MARK --set-xmark ${hex(t.value, st)}/${hex(t.mask, st)}`;
      return `-j MARK --${t.op}-mark ${hex(t.value, st)}`;
    }
  }
}
