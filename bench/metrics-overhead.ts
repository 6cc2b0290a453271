/**
 * `node --import tsx bench/metrics-overhead.ts`: what the metrics cost on the fastest path
 * there is (an uncontended acquire and release on the memory backend), with metrics off,
 * on through `@opentelemetry/api` with no SDK (the default when the package is installed:
 * the global no-op provider), and on into OpenTelemetry's SDK with the Prometheus exporter.
 * Each measurement is a fresh child process (in one process the first configuration would
 * run on monomorphic code and the others not), the three interleaved round after round;
 * ratios are against "off" measured in the same run.
 */
import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { connect, type MetricsOptions, prometheusMetrics } from "../src/index.js";

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const OPS = Number(process.env.OPS ?? 5000);

async function rate(metrics: MetricsOptions, label: string): Promise<number> {
  const coord = await connect(`memory://bench-${label}`, { metrics });
  const lock = coord.lock("hot");
  for (let i = 0; i < 200; i++) await (await lock.acquire()).release();
  const start = performance.now();
  for (let i = 0; i < OPS; i++) await (await lock.acquire()).release();
  const ms = performance.now() - start;
  await coord.close();
  return OPS / (ms / 1000);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

const configs = ["off", "api, no SDK", "SDK + Prometheus"] as const;

if (process.env.BENCH_CONFIG) {
  const label = process.env.BENCH_CONFIG;
  const prometheus = label === "SDK + Prometheus" ? await prometheusMetrics() : null;
  const metrics: MetricsOptions =
    label === "off" ? { enabled: false } : prometheus ? { meterProvider: prometheus.meterProvider } : {};
  console.log(await rate(metrics, label.replace(/\W/g, "")));
  await prometheus?.shutdown();
} else {
  const results = new Map<string, number[]>(configs.map((label) => [label, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const label of configs) {
      const out = execFileSync(process.execPath, [...process.execArgv, new URL(import.meta.url).pathname], {
        env: { ...process.env, BENCH_CONFIG: label },
        encoding: "utf8",
      });
      results.get(label)?.push(Number(out.trim()));
    }
  }
  const base = median(results.get("off") ?? []);
  console.log(`acquire+release, memory backend, ${OPS} ops x ${ROUNDS} rounds (median ops/s)`);
  for (const label of configs) {
    const value = median(results.get(label) ?? []);
    console.log(`${label.padEnd(18)} ${value.toFixed(0).padStart(8)} ops/s  ${(value / base).toFixed(2)} x off`);
  }
}
