/** Order statistics over latency samples (any unit). */
export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly p25: number;
  readonly p50: number;
  readonly p75: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
  /** Interquartile range, p75 - p25. */
  readonly iqr: number;
}

/** Linear-interpolated quantile of sorted values. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (pos - lo);
}

/** The `p`th percentile (0-100) of unsorted values, interpolated as {@link quantile}. */
export function percentile(values: ArrayLike<number>, p: number): number {
  return quantile(Float64Array.from(values).sort(), p / 100);
}

export function summarize(values: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(values as ArrayLike<number>).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const n = sorted.length;
  const p25 = quantile(sorted, 0.25);
  const p75 = quantile(sorted, 0.75);
  return {
    n,
    min: n ? (sorted[0] as number) : Number.NaN,
    p25,
    p50: quantile(sorted, 0.5),
    p75,
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: n ? (sorted[n - 1] as number) : Number.NaN,
    mean: n ? sum / n : Number.NaN,
    iqr: p75 - p25,
  };
}

export function median(values: readonly number[]): number {
  return quantile(
    [...values].sort((a, b) => a - b),
    0.5,
  );
}

/** "12.3 us", "4.56 ms", "1.20 s" from nanoseconds. */
export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return "n/a";
  if (ns < 1e3) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} us`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

/** Nanoseconds from milliseconds. */
export const ms = (value: number): number => value * 1e6;

export function fmtRate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return "n/a";
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M/s`;
  if (perSecond >= 1e4) return `${(perSecond / 1e3).toFixed(1)} k/s`;
  if (perSecond >= 100) return `${perSecond.toFixed(0)}/s`;
  return `${perSecond.toFixed(1)}/s`;
}

export function fmtRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return "n/a";
  if (ratio >= 100) return `${ratio.toFixed(0)}x`;
  if (ratio >= 10) return `${ratio.toFixed(1)}x`;
  return `${ratio.toFixed(2)}x`;
}

export function fmtBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "n/a";
  const mb = bytes / (1024 * 1024);
  if (Math.abs(mb) >= 1024) return `${(mb / 1024).toFixed(2)} GiB`;
  return `${mb.toFixed(1)} MiB`;
}
