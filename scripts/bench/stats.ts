// Summaries of repeated samples: median, min, max, spread.

export interface Summary { n: number; median: number; min: number; max: number; spreadPct: number; mean: number }

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function summarize(xs: number[]): Summary {
  const s = xs.filter((x) => Number.isFinite(x));
  if (s.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, spreadPct: NaN, mean: NaN };
  const med = median(s), min = Math.min(...s), max = Math.max(...s);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { n: s.length, median: med, min, max, mean, spreadPct: med !== 0 ? ((max - min) / Math.abs(med)) * 100 : 0 };
}

/** Round to a sensible number of significant digits for tables. */
export function fmt(x: number, unit = ''): string {
  if (!Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  let s: string;
  if (a >= 10_000) s = Math.round(x).toLocaleString('en-US');
  else if (a >= 100) s = x.toFixed(0);
  else if (a >= 10) s = x.toFixed(1);
  else if (a >= 1) s = x.toFixed(2);
  else if (a === 0) s = '0';
  else s = x.toPrecision(2);
  return unit ? `${s} ${unit}` : s;
}
