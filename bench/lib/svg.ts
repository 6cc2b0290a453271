/** Minimal horizontal bar charts as standalone SVG (no chart library). */

export interface Bar {
  group: string;
  label: string;
  value: number;
  /** Drawn as a thin line from the bar's end to here (e.g. p99). */
  whisker?: number;
  kind: "baton" | "peer" | "floor" | string;
  text?: string;
}

const COLORS: Record<string, string> = { baton: "#2563eb", peer: "#ea580c", floor: "#6b7280" };

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function barChart(options: {
  title: string;
  axis: string;
  bars: Bar[];
  log: boolean;
  format: (value: number) => string;
  /** Vertical reference lines (targets). */
  marks?: { value: number; label: string }[];
}): string {
  const { title, axis, log, format } = options;
  const bars = options.bars.filter((b) => Number.isFinite(b.value) && b.value > 0);
  const labelW = 300;
  const plotW = 520;
  const valueW = 150;
  const rowH = 20;
  const groupGap = 14;
  const top = 44;
  const width = labelW + plotW + valueW;
  const values = bars.flatMap((b) => [b.value, b.whisker ?? b.value]).concat((options.marks ?? []).map((m) => m.value));
  const maxV = Math.max(...values, 1e-9);
  const minV = Math.min(...values, maxV);
  let lo = 0;
  let hi = maxV * 1.05;
  if (log) {
    lo = 10 ** Math.floor(Math.log10(minV));
    hi = 10 ** Math.ceil(Math.log10(maxV));
    if (hi === lo) hi = lo * 10;
  }
  const x = (v: number) =>
    labelW +
    (log
      ? ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotW
      : ((v - lo) / (hi - lo)) * plotW);
  const parts: string[] = [];
  let y = top;
  let group = "";
  const rows: string[] = [];
  for (const bar of bars) {
    if (bar.group !== group) {
      if (group !== "") y += groupGap;
      group = bar.group;
      rows.push(`<text x="8" y="${y + 13}" font-weight="bold">${esc(group)}</text>`);
      y += rowH;
    }
    const color = COLORS[bar.kind] ?? "#0d9488";
    const x0 = log ? labelW : x(0);
    const x1 = Math.max(x(bar.value), x0 + 1);
    rows.push(`<text x="20" y="${y + 13}">${esc(bar.label)}</text>`);
    rows.push(
      `<rect x="${x0.toFixed(1)}" y="${y + 3}" width="${(x1 - x0).toFixed(1)}" height="${rowH - 6}" fill="${color}"/>`,
    );
    if (bar.whisker !== undefined && Number.isFinite(bar.whisker) && bar.whisker > bar.value) {
      const xw = x(bar.whisker);
      rows.push(
        `<line x1="${x1.toFixed(1)}" y1="${y + rowH / 2}" x2="${xw.toFixed(1)}" y2="${y + rowH / 2}" stroke="${color}" stroke-width="1.5"/>`,
        `<line x1="${xw.toFixed(1)}" y1="${y + 5}" x2="${xw.toFixed(1)}" y2="${y + rowH - 5}" stroke="${color}" stroke-width="1.5"/>`,
      );
    }
    rows.push(`<text x="${labelW + plotW + 8}" y="${y + 13}">${esc(bar.text ?? format(bar.value))}</text>`);
    y += rowH;
  }
  const bottom = y + 8;
  // Grid and ticks.
  const ticks: number[] = [];
  if (log) for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(v);
  else for (let i = 0; i <= 5; i++) ticks.push(lo + ((hi - lo) * i) / 5);
  for (const t of ticks) {
    const xt = x(t);
    parts.push(`<line x1="${xt.toFixed(1)}" y1="${top - 4}" x2="${xt.toFixed(1)}" y2="${bottom}" stroke="#e5e7eb"/>`);
    parts.push(
      `<text x="${xt.toFixed(1)}" y="${bottom + 14}" text-anchor="middle" fill="#6b7280">${esc(format(t))}</text>`,
    );
  }
  for (const mark of options.marks ?? []) {
    const xm = x(mark.value);
    parts.push(
      `<line x1="${xm.toFixed(1)}" y1="${top - 4}" x2="${xm.toFixed(1)}" y2="${bottom}" stroke="#dc2626" stroke-dasharray="4 3"/>`,
      `<text x="${xm.toFixed(1)}" y="${top - 8}" text-anchor="middle" fill="#dc2626">${esc(mark.label)}</text>`,
    );
  }
  const height = bottom + 50;
  const legend = [
    ["baton", "Baton"],
    ["peer", "peer library"],
    ["floor", "raw floor"],
  ]
    .map(
      ([kind, text], i) =>
        `<rect x="${labelW + i * 130}" y="${bottom + 26}" width="12" height="12" fill="${COLORS[kind!]}"/><text x="${labelW + i * 130 + 16}" y="${bottom + 36}">${text}</text>`,
    )
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" role="img">
<title>${esc(title)}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="20" font-size="15" font-weight="bold">${esc(title)}</text>
<text x="${labelW + plotW}" y="20" text-anchor="end" fill="#6b7280">${esc(axis)}${log ? " (log scale)" : ""}</text>
${parts.join("\n")}
${rows.join("\n")}
${legend}
</svg>
`;
}
