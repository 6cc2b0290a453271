/**
 * A Prometheus `/metrics` endpoint for Baton's OpenTelemetry instruments, made with
 * OpenTelemetry's own SDK and Prometheus exporter (optional dependencies, loaded only
 * here): no exposition text is written by hand.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { MeterProvider } from "@opentelemetry/api";
import type { MeterProviderLike } from "../core/telemetry.js";
import type { Coordinator, Inspection } from "../core/coordinator.js";
import { UnsupportedError } from "../core/errors.js";

/** The packages {@link prometheusMetrics} needs, for the install hint. */
export const PROMETHEUS_PACKAGES = [
  "@opentelemetry/api",
  "@opentelemetry/sdk-metrics",
  "@opentelemetry/exporter-prometheus",
];

/** What {@link prometheusMetrics} returns. */
export interface PrometheusMetrics {
  /** Pass to `connect(url, { metrics: { meterProvider } })` so a coordinator's instruments are served. */
  readonly meterProvider: MeterProviderLike;
  /** Serves the Prometheus text format (any path: mount it at `/metrics`). */
  readonly handler: (request: IncomingMessage, response: ServerResponse) => void;
  /**
   * Also serves what `coordinator.inspect()` sees at each scrape, for the whole namespace
   * (every process, not just this one): `baton.status.holders`, `baton.status.waiters` and
   * `baton.status.oldest_wait` by kind. One `inspect()` per scrape; a failed one shows as
   * `baton.status.up` 0. Returns a function that stops it.
   */
  observe(coordinator: Coordinator): () => void;
  /** Stops collecting. Never throws. */
  shutdown(): Promise<void>;
}

/**
 * Makes a meter provider whose only reader is a Prometheus exporter (not listening on a
 * port of its own), and its request handler. Rejects with `UnsupportedError` naming the
 * packages to install when `@opentelemetry/sdk-metrics` or
 * `@opentelemetry/exporter-prometheus` is missing.
 */
export async function prometheusMetrics(): Promise<PrometheusMetrics> {
  let sdk: typeof import("@opentelemetry/sdk-metrics");
  let exporterModule: typeof import("@opentelemetry/exporter-prometheus");
  try {
    [sdk, exporterModule] = await Promise.all([
      import("@opentelemetry/sdk-metrics"),
      import("@opentelemetry/exporter-prometheus"),
    ]);
  } catch (cause) {
    throw new UnsupportedError(
      `Prometheus metrics need ${PROMETHEUS_PACKAGES.join(", ")}: npm install ${PROMETHEUS_PACKAGES.join(" ")}`,
      {
        cause,
      },
    );
  }
  const exporter = new exporterModule.PrometheusExporter({ preventServerStart: true });
  const provider = new sdk.MeterProvider({ readers: [exporter] });
  return {
    meterProvider: provider,
    handler: (request, response) => exporter.getMetricsRequestHandler(request, response),
    observe: (coordinator) => observeStatus(provider, coordinator),
    shutdown: () => provider.shutdown().catch(() => {}),
  };
}

/** Observable gauges over `inspect()`; see {@link PrometheusMetrics.observe}. */
function observeStatus(provider: MeterProvider, coordinator: Coordinator): () => void {
  const meter = provider.getMeter("baton-coord/status");
  const holders = meter.createObservableGauge("baton.status.holders", {
    description: "Holders in the namespace at the scrape, by kind (all processes)",
  });
  const waiters = meter.createObservableGauge("baton.status.waiters", {
    description: "Waiters in the namespace at the scrape, by kind (all processes)",
  });
  const oldest = meter.createObservableGauge("baton.status.oldest_wait", {
    description: "Longest current wait in the namespace, by kind",
    unit: "s",
  });
  const up = meter.createObservableGauge("baton.status.up", { description: "1 if the last inspect() succeeded" });
  const base = { "baton.backend": coordinator.backend, "baton.namespace": coordinator.namespace };
  const callback = async (result: import("@opentelemetry/api").BatchObservableResult) => {
    let info: Inspection;
    try {
      info = await coordinator.inspect();
    } catch {
      result.observe(up, 0, base);
      return;
    }
    result.observe(up, 1, base);
    const kinds = {
      lock: info.locks,
      semaphore: info.semaphores,
      election: info.elections.map((e) => ({ holders: e.leader ? [e.leader] : [], waiters: e.candidates })),
    };
    for (const [kind, list] of Object.entries(kinds)) {
      const attributes = { ...base, "baton.kind": kind };
      const waiting = list.flatMap((l) => l.waiters.map((w) => w.waitingMs));
      result.observe(
        holders,
        list.reduce((n, l) => n + l.holders.length, 0),
        attributes,
      );
      result.observe(waiters, waiting.length, attributes);
      result.observe(oldest, Math.max(0, ...waiting) / 1000, attributes);
    }
  };
  const observables = [holders, waiters, oldest, up];
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
