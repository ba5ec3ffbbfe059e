// The benchmark's human outputs: a Markdown table and a hand-written SVG bar chart with error bars.
import { BenchResult, CaseResult, VariantId, VARIANT_COLORS, VARIANT_LABELS, VARIANT_SHORT, VARIANT_TICK, summaryOf } from './results';
import { fmt, Summary } from './stats';

const KERNELS: VariantId[] = ['kernel-legacy', 'kernel-nft'];

function cell(s: Summary | undefined): string {
  if (!s || s.n === 0) return '';
  if (s.n === 1) return fmt(s.median);
  return `${fmt(s.median)} <sub>${fmt(s.min)}–${fmt(s.max)}</sub>`;
}

function ratio(c: CaseResult, g: string, m: string, k: VariantId): string {
  const a = summaryOf(c, g, m, 'kube-tun'), b = summaryOf(c, g, m, k);
  if (!a || !b || !Number.isFinite(a.median) || !Number.isFinite(b.median) || b.median === 0) return '';
  const r = a.median / b.median;
  return r >= 10 ? `${r.toFixed(0)}×` : r >= 1 ? `${r.toFixed(2)}×` : `${r.toFixed(3)}×`;
}

export function markdown(r: BenchResult): string {
  const L: string[] = [];
  const h = r.host as Record<string, any>;
  L.push(`### kube-tun vs kernel netfilter — ${r.mode} run, ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`);
  L.push('');
  L.push(`\`${r.command}\` on ${h.hostname}: ${h.cpus} × ${h.cpuModel}, ${h.memGiB} GiB, kernel ${h.kernel}, Node ${r.versions.node}, ` +
    `kube-tun ${r.versions['kube-tun']}. ${r.params.reps} repetitions per variant, alternating A/B/A/B; ` +
    `cells are **median** <sub>min–max</sub>. Run time ${Math.round(r.seconds)} s. ` +
    `Load generator, routers and servers share the ${h.cpus} CPUs (load average at start ${h.loadavgAtStart}).`);
  L.push('');
  const used = new Set<VariantId>();
  for (const c of r.cases) for (const v of c.variants) used.add(v);
  const cols = (['kube-tun', 'kernel-legacy', 'kernel-nft', 'kube-tun-offload-off', 'direct', 'kube-tun-direct'] as VariantId[]).filter((v) => used.has(v));
  const kcols = KERNELS.filter((k) => used.has(k));
  L.push(`| case | | metric | ${cols.map((v) => VARIANT_SHORT[v]).join(' | ')} | ${kcols.map((k) => `kube-tun ÷ ${VARIANT_SHORT[k]}`).join(' | ')} |`);
  L.push(`|---|---|---|${cols.map(() => '---:').join('|')}|${kcols.map(() => '---:').join('|')}|`);
  for (const c of r.cases) {
    if (c.error && c.samples.length === 0) {
      L.push(`| **${c.title}** | | **FAILED**: ${c.error.replace(/\|/g, '\\|').split('\n')[0]} |${cols.map(() => '').join('|')}|${kcols.map(() => '').join('|')}|`);
      continue;
    }
    let first = true;
    for (const g of c.groups) {
      let firstOfGroup = true;
      for (const m of c.metrics) {
        if (!cols.some((v) => summaryOf(c, g, m.key, v))) continue;
        const arrow = m.better === 'higher' ? ' ↑' : m.better === 'lower' ? ' ↓' : '';
        const name = first ? `**${c.title}**` : '';
        const gname = firstOfGroup ? g : '';
        first = false;
        firstOfGroup = false;
        L.push(`| ${name} | ${gname} | ${m.label}${m.unit ? ` (${m.unit})` : ''}${arrow} | ${cols.map((v) => cell(summaryOf(c, g, m.key, v))).join(' | ')} | ` +
          `${kcols.map((k) => (m.better === 'none' ? '' : ratio(c, g, m.key, k))).join(' | ')} |`);
      }
    }
    if (c.error) L.push(`| | | **FAILED**: ${c.error.replace(/\|/g, '\\|').split('\n')[0]} |${cols.map(() => '').join('|')}|${kcols.map(() => '').join('|')}|`);
  }
  L.push('');
  L.push('↑ higher is better, ↓ lower is better. Variants: ' + cols.map((v) => `**${VARIANT_SHORT[v]}** = ${VARIANT_LABELS[v]}`).join('; ') + '.');
  L.push('');
  for (const c of r.cases) {
    L.push(`- **${c.title}** — ${c.what}${c.command.length ? ` Load: ${c.command.map((x) => `\`${x}\``).join(', ')}.` : ''}`);
    for (const n of c.notes) L.push(`  - ${n}`);
    if (c.error) L.push(`  - **FAILED**: ${c.error.split('\n')[0]}`);
  }
  if (r.failures.length) {
    L.push('');
    L.push(`**${r.failures.length} failure(s)** — the run is not trustworthy as a whole:`);
    for (const f of r.failures) L.push(`- ${f.split('\n')[0]}`);
  }
  L.push('');
  return L.join('\n');
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let cur = '';
  for (const w of text.split(' ')) {
    if (cur && cur.length + 1 + w.length > width) { out.push(cur); cur = w; } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) out.push(cur);
  return out;
}

/**
 * A y axis with round ticks: the step is 1, 2, 2.5 or 5 times a power of ten, chosen so that about
 * four steps cover the data with some room above the tallest bar (its label sits there).
 */
export function niceAxis(max: number): { top: number; step: number } {
  if (!(max > 0) || !Number.isFinite(max)) return { top: 1, step: 0.25 };
  const raw = (max * 1.12) / 4, pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= raw)!;
  return { top: Math.ceil((max * 1.12) / step) * step, step };
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** One panel per (case, group, charted metric): bars per variant, error bars min–max. */
export function svg(r: BenchResult): string {
  interface Panel { title: string; sub: string; unit: string; bars: { v: VariantId; s: Summary }[] }
  const panels: Panel[] = [];
  for (const c of r.cases) {
    for (const g of c.groups) {
      for (const m of c.metrics.filter((x) => x.chart)) {
        const bars = c.variants.map((v) => ({ v, s: summaryOf(c, g, m.key, v) })).filter((b): b is { v: VariantId; s: Summary } => !!b.s && Number.isFinite(b.s.median));
        if (bars.length) panels.push({ title: c.title, sub: `${g} — ${m.label}${m.better === 'higher' ? ' (higher is better)' : m.better === 'lower' ? ' (lower is better)' : ''}`, unit: m.unit, bars });
      }
    }
  }
  const used: VariantId[] = [];
  for (const p of panels) for (const b of p.bars) if (!used.includes(b.v)) used.push(b.v);
  const order: VariantId[] = ['kube-tun', 'kernel-legacy', 'kernel-nft', 'kube-tun-offload-off', 'direct', 'kube-tun-direct'];
  used.sort((a, b) => order.indexOf(a) - order.indexOf(b));
  const PW = 330, PH = 230, COLS = 3, W = PW * COLS + 20;
  // Legend entries, wrapped to the width.
  const legend: { v: VariantId; x: number; y: number; text: string }[] = [];
  let lx = 10, ly = 48;
  for (const v of used) {
    const text = `${VARIANT_LABELS[v]}${VARIANT_TICK[v] !== v ? ` (${VARIANT_TICK[v]})` : ''}`;
    const w = 28 + text.length * 5.9;
    if (lx + w > W - 10 && lx > 10) { lx = 10; ly += 18; }
    legend.push({ v, x: lx, y: ly, text });
    lx += w;
  }
  const TOP = ly + 30;
  const rows = Math.max(1, Math.ceil(panels.length / COLS));
  const H = TOP + rows * PH + 10;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="11">`);
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  const h = r.host as Record<string, any>;
  o.push(`<text x="10" y="20" font-size="15" font-weight="bold">kube-tun vs kernel netfilter (${esc(r.mode)} run, ${esc(r.startedAt.slice(0, 10))})</text>`);
  o.push(`<text x="10" y="37" fill="#555">${esc(`${h.hostname}: ${h.cpus} CPUs, kernel ${h.kernel}, Node ${r.versions.node}; median of ${r.params.reps} alternating runs, error bars min–max`)}</text>`);
  for (const e of legend) {
    o.push(`<rect x="${e.x.toFixed(1)}" y="${e.y}" width="12" height="12" fill="${VARIANT_COLORS[e.v]}"/>`);
    o.push(`<text x="${(e.x + 16).toFixed(1)}" y="${e.y + 10}">${esc(e.text)}</text>`);
  }
  panels.forEach((p, i) => {
    const x0 = 10 + (i % COLS) * PW, y0 = TOP + Math.floor(i / COLS) * PH;
    // The plot starts below the title and its two subtitle lines, so the top tick label never touches them.
    const plotX = x0 + 46, plotY = y0 + 58, plotW = PW - 66, plotH = PH - 98;
    o.push(`<text x="${x0 + 4}" y="${y0 + 14}" font-weight="bold">${esc(p.title)}</text>`);
    const lines = wrap(p.sub, 56).slice(0, 2);
    lines.forEach((l, k) => o.push(`<text x="${x0 + 4}" y="${y0 + 28 + k * 13}" fill="#444">${esc(l)}</text>`));
    const { top, step } = niceAxis(Math.max(...p.bars.map((b) => Math.max(b.s.max, b.s.median))));
    const y = (val: number) => plotY + plotH - (val / top) * plotH;
    o.push(`<line x1="${plotX}" y1="${plotY + plotH}" x2="${plotX + plotW}" y2="${plotY + plotH}" stroke="#333"/>`);
    o.push(`<line x1="${plotX}" y1="${plotY}" x2="${plotX}" y2="${plotY + plotH}" stroke="#333"/>`);
    for (let t = 0; t * step <= top * (1 + 1e-9); t++) {
      const val = +(t * step).toPrecision(12), yy = y(val);
      o.push(`<line x1="${plotX - 3}" y1="${yy.toFixed(1)}" x2="${plotX + plotW}" y2="${yy.toFixed(1)}" stroke="#e5e5e5"/>`);
      o.push(`<text x="${plotX - 5}" y="${(yy + 3).toFixed(1)}" text-anchor="end" fill="#555">${esc(fmt(val))}</text>`);
    }
    o.push(`<text x="${x0 + 10}" y="${plotY + plotH / 2}" transform="rotate(-90 ${x0 + 10} ${plotY + plotH / 2})" text-anchor="middle" fill="#555">${esc(p.unit)}</text>`);
    const slot = plotW / p.bars.length, bw = Math.min(46, slot * 0.6);
    p.bars.forEach((b, j) => {
      const cx = plotX + slot * (j + 0.5);
      const yt = y(b.s.median);
      o.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${yt.toFixed(1)}" width="${bw.toFixed(1)}" height="${(plotY + plotH - yt).toFixed(1)}" fill="${VARIANT_COLORS[b.v]}"><title>${esc(`${VARIANT_LABELS[b.v]}: median ${fmt(b.s.median)} ${p.unit}, min ${fmt(b.s.min)}, max ${fmt(b.s.max)}, n=${b.s.n}`)}</title></rect>`);
      if (b.s.n > 1 && b.s.max > b.s.min) {
        const y1 = y(b.s.min), y2 = y(b.s.max);
        o.push(`<line x1="${cx.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${cx.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
        o.push(`<line x1="${cx - 5}" y1="${y1.toFixed(1)}" x2="${cx + 5}" y2="${y1.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
        o.push(`<line x1="${cx - 5}" y1="${y2.toFixed(1)}" x2="${cx + 5}" y2="${y2.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
      }
      o.push(`<text x="${cx.toFixed(1)}" y="${(Math.min(yt, y(b.s.max)) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${esc(fmt(b.s.median))}</text>`);
      o.push(`<text x="${cx.toFixed(1)}" y="${plotY + plotH + 13}" text-anchor="middle" font-size="9.5" fill="#333">${esc(VARIANT_TICK[b.v])}</text>`);
    });
  });
  if (panels.length === 0) o.push(`<text x="10" y="${TOP + 20}">no data</text>`);
  o.push('</svg>');
  return o.join('\n') + '\n';
}
