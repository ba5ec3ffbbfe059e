// The benchmark's result model: what goes into bench/results/<date>-<host>.json.
import { summarize, Summary } from './stats';

/** Who did the service NAT for a sample. */
export type VariantId = 'kube-tun' | 'kernel-legacy' | 'kernel-nft' | 'direct' | 'kube-tun-direct';

export const VARIANT_LABELS: Record<VariantId, string> = {
  'kube-tun': 'kube-tun',
  'kernel-legacy': 'kernel, iptables-legacy',
  'kernel-nft': 'kernel, iptables-nft',
  direct: 'pod direct (kernel routing, no NAT)',
  'kube-tun-direct': 'pod direct through kube-tun (TUN, no DNAT)',
};
export const VARIANT_SHORT: Record<VariantId, string> = {
  'kube-tun': 'kube-tun',
  'kernel-legacy': 'kernel (legacy)',
  'kernel-nft': 'kernel (nft)',
  direct: 'direct',
  'kube-tun-direct': 'kube-tun, no DNAT',
};
export const VARIANT_COLORS: Record<VariantId, string> = {
  'kube-tun': '#d9534f',
  'kernel-legacy': '#337ab7',
  'kernel-nft': '#5bc0de',
  direct: '#7f7f7f',
  'kube-tun-direct': '#f0ad4e',
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
