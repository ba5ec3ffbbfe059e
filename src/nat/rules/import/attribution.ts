// Service attribution: which service port each rule of an imported dump belongs to, read from
// kube-proxy's comments and, for rules without one, inherited along the jumps.
import { Chain, Match, ServiceRef, Table } from '../ir';
import { TableJumps } from './chains';
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../../netstack/proto';

// kube-proxy's comments around a ServicePortName (proxier.go): "<svc>", "<svc> cluster IP",
// "<svc> -> <ep>", "<svc> has no endpoints", …, and a few with a prefix ("masquerade traffic for <svc>
// external destinations", "other traffic to <svc> will be dropped …", "Balancing rule 0 for <svc>").
const SVC_NAME_RE = /^[a-z0-9][-a-z0-9.]*\/[a-z0-9][-a-z0-9.]*(:[-a-z0-9]*)?$/;
const COMMENT_PREFIXES = ['masquerade traffic for ', 'pod traffic for ', 'masquerade LOCAL traffic for ', 'route LOCAL traffic for ', 'other traffic to '];

function serviceNameOfComment(text: string): string | null {
  let start = 0;
  for (const p of COMMENT_PREFIXES) if (text.startsWith(p)) { start = p.length; break; }
  if (start === 0 && text.startsWith('Balancing rule ')) {
    const f = text.indexOf(' for ');
    if (f < 0) return null;
    start = f + 5;
  }
  const sp = text.indexOf(' ', start);
  const word = sp < 0 ? text.slice(start) : text.slice(start, sp);
  return SVC_NAME_RE.test(word) ? word : null;
}

/**
 * The service ports named by kube-proxy's comments. While a dump is read, a rule of a KUBE- chain
 * gets a code in its svc field: -1 (no service) or -2 - (rec * 4 + p), rec the service name's
 * record and p its protocol (0 none or another, 1 tcp, 2 udp, 3 sctp), from its first comment and
 * its first -p / -m tcp|udp|sctp. number() then numbers the service ports in table order.
 */
export class ServiceRefs {
  readonly services: ServiceRef[] = [];
  /** Per service name: the first service port of that name, and the one per protocol. */
  private readonly recs: { name: string; any: number; tcp: number; udp: number; sctp: number }[] = [];
  private readonly recOfName = new Map<string, number>();
  private readonly recOfText = new Map<string, number>(); // comment -> rec, -1 for none
  private lastText = '';
  private lastRec = -1;

  code(matches: readonly Match[]): number {
    let text: string | null = null;
    let p = -1;
    for (let k = 0; k < matches.length; k++) {
      const m = matches[k];
      if (m.kind === 'comment') { if (text === null) text = m.text; }
      else if ((m.kind === 'proto' || m.kind === 'l4') && p < 0) p = m.proto === IPPROTO_TCP ? 1 : m.proto === IPPROTO_UDP ? 2 : m.proto === IPPROTO_SCTP ? 3 : 0;
    }
    if (text === null) return -1;
    let rec = this.lastRec;
    if (text !== this.lastText) {
      const known = this.recOfText.get(text);
      if (known !== undefined) rec = known;
      else {
        const name = serviceNameOfComment(text);
        rec = name === null ? -1 : this.recOf(name);
        this.recOfText.set(text, rec);
      }
      this.lastText = text;
      this.lastRec = rec;
    }
    return rec < 0 ? -1 : -2 - (rec * 4 + (p < 0 ? 0 : p));
  }

  private recOf(name: string): number {
    let r = this.recOfName.get(name);
    if (r === undefined) {
      r = this.recs.length;
      this.recs.push({ name, any: -1, tcp: -1, udp: -1, sctp: -1 });
      this.recOfName.set(name, r);
    }
    return r;
  }

  /** The index in services of a code (a new service port the first time). */
  number(code: number): number {
    const c = -2 - code, p = c & 3, rec = this.recs[c >> 2];
    // Rules without a protocol (SVC jumps, hairpin) belong to the service port of that name seen first.
    let idx = p === 1 ? rec.tcp : p === 2 ? rec.udp : p === 3 ? rec.sctp : rec.any;
    if (idx < 0) {
      idx = this.services.length;
      this.services.push({ name: rec.name, protocol: p === 1 ? 'tcp' : p === 2 ? 'udp' : p === 3 ? 'sctp' : '', key: '' });
      if (p === 1) rec.tcp = idx;
      else if (p === 2) rec.udp = idx;
      else if (p === 3) rec.sctp = idx;
      if (rec.any < 0) rec.any = idx;
    }
    return idx;
  }
}

/** Service refs from kube-proxy's comments (rules without comments get -1), and the masquerade mark. */
export function attachServices(tables: Table[], jumps: readonly TableJumps[], refs: ServiceRefs): { services: ServiceRef[]; mark: number } {
  let mark = 0x4000;
  for (const t of tables) for (const c of t.chains) {
    if (c.name === 'KUBE-MARK-MASQ') for (const r of c.rules) if (r.target?.kind === 'MARK') mark = r.target.value;
    const rules = c.rules;
    for (let k = 0; k < rules.length; k++) {
      const r = rules[k];
      if (r.svc < -1) (r as { svc: number }).svc = refs.number(r.svc); // rules are fresh objects of this import
    }
  }
  for (let ti = 0; ti < tables.length; ti++) inheritServices(tables[ti].chains, jumps[ti]);
  return { services: refs.services, mark };
}

const PER_SERVICE_RE = /^KUBE-(SVC|SVL|EXT|FW|SEP|XLB)-/;

/**
 * Rules without comments (kube-proxy's large-cluster mode drops per-endpoint comments): a
 * service chain's rules belong to the service of its commented rules, and a KUBE-SEP/SVC/…
 * chain to the service of the rule that jumps to it.
 */
function inheritServices(chains: readonly Chain[], jumps: TableJumps): void {
  const { n, from, rules, to } = jumps;
  const C = chains.length;
  const perService = new Uint8Array(C);
  for (let k = 0; k < C; k++) if (PER_SERVICE_RE.test(chains[k].name)) perService[k] = 1;
  const chainSvc = new Int32Array(C).fill(-1);
  // Three passes (a pass that changes nothing leaves the next one nothing to change either).
  for (let pass = 0, changed = true; pass < 3 && changed; pass++) {
    changed = false;
    let j = 0;
    for (let k = 0; k < C; k++) {
      const isPer = perService[k] === 1;
      let own = chainSvc[k];
      if (own < 0 && isPer) {
        for (const r of chains[k].rules) if (r.svc >= 0) { own = r.svc; break; }
        if (own >= 0) { chainSvc[k] = own; changed = true; }
      }
      for (; j < n && from[j] === k; j++) {
        const svc = rules[j].svc;
        const s = svc >= 0 ? svc : isPer ? own : -1;
        const tk = to[j];
        if (s >= 0 && perService[tk] === 1 && chainSvc[tk] < 0) { chainSvc[tk] = s; changed = true; }
      }
    }
  }
  for (let k = 0; k < C; k++) {
    const s = chainSvc[k];
    if (s < 0) continue;
    for (const r of chains[k].rules) if (r.svc < 0) (r as { svc: number }).svc = s;
  }
}