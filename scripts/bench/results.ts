// The benchmark's result model: what goes into bench/results/<date>-<host>.json.
import { summarize, Summary } from './stats';

/** Who did the service NAT for a sample. */
export type VariantId = 'kube-tun' | 'kernel-legacy' | 'kernel-nft' | 'direct' | 'kube-tun-direct' | 'kube-tun-offload-off';

/** kube-tun itself, whichever way it runs: its counters verify the path. */
export const isKubeTun = (v: VariantId): boolean => v === 'kube-tun' || v === 'kube-tun-direct' || v === 'kube-tun-offload-off';

export const VARIANT_LABELS: Record<VariantId, string> = {
  'kube-tun': 'kube-tun',
  'kernel-legacy': 'kernel, iptables-legacy',
  'kernel-nft': 'kernel, iptables-nft',
  direct: 'pod direct (kernel routing, no NAT)',
  'kube-tun-direct': 'pod direct through kube-tun (TUN only, no DNAT)',
  'kube-tun-offload-off': 'kube-tun --offload off (one packet per TUN read/write)',
};
export const VARIANT_SHORT: Record<VariantId, string> = {
  'kube-tun': 'kube-tun',
  'kernel-legacy': 'kernel (legacy)',
  'kernel-nft': 'kernel (nft)',
  direct: 'direct',
  'kube-tun-direct': 'TUN only, no DNAT',
  'kube-tun-offload-off': 'kube-tun, offload off',
};
/** Under the bars of the chart (narrow). */
export const VARIANT_TICK: Record<VariantId, string> = {
  'kube-tun': 'kube-tun',
  'kernel-legacy': 'legacy',
  'kernel-nft': 'nft',
  direct: 'direct',
  'kube-tun-direct': 'TUN only',
  'kube-tun-offload-off': 'offload off',
};
export const VARIANT_COLORS: Record<VariantId, string> = {
  'kube-tun': '#d9534f',
  'kernel-legacy': '#337ab7',
  'kernel-nft': '#5bc0de',
  direct: '#7f7f7f',
  'kube-tun-direct': '#f0ad4e',
  'kube-tun-offload-off': '#8e44ad',
};

export interface MetricDef {
  key: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower' | 'none';
  /** Drawn in the chart (one panel per case, group and charted metric). */
  chart?: boolean;
}

export interface Sample {
  variant: VariantId;
  group: string;
  rep: number;
  values: Record<string, number>;
  /** How the path was verified (counter deltas), and anything else worth keeping. */
  check: string;
  info?: Record<string, unknown>;
  at: string;
  load1: number;
}

export interface SummaryRow { group: string; metric: string; variant: VariantId; summary: Summary }

export interface CaseResult {
  id: string;
  title: string;
  what: string;            // one line: the load and the path
  command: string[];       // the load commands, for the report
  groups: string[];
  metrics: MetricDef[];
  variants: VariantId[];
  samples: Sample[];
  summary: SummaryRow[];
  notes: string[];
  error?: string;
  seconds: number;
}

export interface BenchResult {
  tool: 'kube-tun bench';
  schema: 1;
  mode: 'full' | 'quick' | 'tiny';
  command: string;
  startedAt: string;
  finishedAt: string;
  seconds: number;
  host: Record<string, unknown>;
  versions: Record<string, string>;
  params: Record<string, unknown>;
  labs: Record<string, string>;
  cases: CaseResult[];
  ok: boolean;
  failures: string[];
}

export function newCase(id: string, title: string, what: string, metrics: MetricDef[], variants: VariantId[]): CaseResult {
  return { id, title, what, command: [], groups: [], metrics, variants, samples: [], summary: [], notes: [], seconds: 0 };
}

export function summarizeCase(c: CaseResult): void {
  c.summary = [];
  for (const g of c.groups) {
    for (const m of c.metrics) {
      for (const v of c.variants) {
        const xs = c.samples.filter((s) => s.group === g && s.variant === v && Number.isFinite(s.values[m.key])).map((s) => s.values[m.key]);
        if (xs.length) c.summary.push({ group: g, metric: m.key, variant: v, summary: summarize(xs) });
      }
    }
  }
}

export function summaryOf(c: CaseResult, group: string, metric: string, variant: VariantId): Summary | undefined {
  return c.summary.find((r) => r.group === group && r.metric === metric && r.variant === variant)?.summary;
}

/** How each variant compares with the pod-direct baseline of the same run (and flag the implausible). */
export function directNotes(c: CaseResult): void {
  if (!c.variants.includes('direct')) return;
  for (const g of c.groups) {
    for (const m of c.metrics.filter((x) => x.chart && x.better === 'higher')) {
      const d = summaryOf(c, g, m.key, 'direct');
      if (!d || !(d.median > 0)) continue;
      const parts: string[] = [], odd: string[] = [];
      for (const v of c.variants.filter((x) => x !== 'direct')) {
        const s = summaryOf(c, g, m.key, v);
        if (!s) continue;
        const pct = (s.median / d.median) * 100;
        parts.push(`${VARIANT_SHORT[v]} ${pct.toFixed(0)} %`);
        if (pct > 130) odd.push(VARIANT_SHORT[v]);
      }
      if (!parts.length) continue;
      c.notes.push(`${g}, ${m.label}, as a share of pod direct (${summaryOf(c, g, m.key, 'direct')!.median.toFixed(m.unit === 'Gbit/s' ? 2 : 0)} ${m.unit}): ${parts.join(', ')}` +
        (odd.length ? `. **Implausible**: ${odd.join(', ')} beat the un-NATed baseline by more than 30 %: the box was busy (see each sample's load1 in the JSON); rerun.` : '.'));
    }
  }
}
