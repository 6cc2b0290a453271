/**
 * What a coordinator reports about itself: OpenTelemetry metrics (through the optional
 * `@opentelemetry/api`) and the `NODE_DEBUG=baton` log. Core calls it at the few places
 * every backend passes through (the acquisition path, the handle, the session), so no
 * backend reports anything itself. docs/observability.md lists every instrument.
 *
 * @module
 */
import type { Attributes, Counter, Histogram, Meter, UpDownCounter } from "@opentelemetry/api";
import { DEBUG, debug } from "./debug.js";
import type { LockMode, QueueKind } from "./driver.js";
import { BatonError } from "./errors.js";
import { describe } from "./validate.js";

/**
 * An OpenTelemetry `MeterProvider` (of `@opentelemetry/api`), written out so that Baton's
 * published types do not need that optional package installed.
 */
export interface MeterProviderLike {
  getMeter(name: string, version?: string, options?: object): unknown;
}

/**
 * Options of the `metrics` connect option. Metrics go to `meterProvider`, else to the
 * provider registered globally with `@opentelemetry/api` (a no-op until an SDK is set up).
 * Without `@opentelemetry/api` installed nothing is recorded and nothing is loaded.
 */
export interface MetricsOptions {
  /** Where the instruments are created. Default: `metrics.getMeterProvider()` of `@opentelemetry/api`. */
  meterProvider?: MeterProviderLike | undefined;
  /**
   * Adds the `baton.name` attribute (the lock, semaphore or election name). Off by
   * default: names are unbounded and would make one time series each. In the URL:
   * `?metrics=names`.
   */
  lockNames?: boolean | undefined;
  /** `false` records nothing (in the URL: `?metrics=off`). Default `true`. */
  enabled?: boolean | undefined;
}

/** How an acquisition ended, the `baton.outcome` attribute. */
export type AcquireOutcome = "granted" | "busy" | "timed_out" | "aborted" | "error";

/** The instrument names, for documentation and tests. */
export const METRIC = {
  acquisitions: "baton.acquisitions",
  waitDuration: "baton.wait.duration",
  holdDuration: "baton.hold.duration",
  held: "baton.held",
  waiting: "baton.waiting",
  renewals: "baton.session.renewals",
  losses: "baton.session.losses",
  takeovers: "baton.takeovers",
  backendErrors: "baton.backend.errors",
} as const;

/** Seconds, from a millisecond to half an hour: lock waits and holds span that range. */
const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

interface Instruments {
  acquisitions: Counter;
  waitDuration: Histogram;
  holdDuration: Histogram;
  held: UpDownCounter;
  waiting: UpDownCounter;
  renewals: Counter;
  losses: Counter;
  takeovers: Counter;
  backendErrors: Counter;
}

function instruments(meter: Meter): Instruments {
  const seconds = (name: string, description: string) =>
    meter.createHistogram(name, { description, unit: "s", advice: { explicitBucketBoundaries: BUCKETS } });
  return {
    acquisitions: meter.createCounter(METRIC.acquisitions, {
      description: "Acquisitions of locks, semaphore permits and leadership, by outcome",
    }),
    waitDuration: seconds(METRIC.waitDuration, "Time from the acquire call to its outcome"),
    holdDuration: seconds(METRIC.holdDuration, "Time from a grant to its release or loss"),
    held: meter.createUpDownCounter(METRIC.held, { description: "Grants held by this process now" }),
    waiting: meter.createUpDownCounter(METRIC.waiting, { description: "Acquisitions waiting in this process now" }),
    renewals: meter.createCounter(METRIC.renewals, { description: "Session keep-alives sent, by outcome" }),
    losses: meter.createCounter(METRIC.losses, { description: "Sessions lost (expired, cut off, presumed lost)" }),
    takeovers: meter.createCounter(METRIC.takeovers, { description: "Grants taken over from another holder" }),
    backendErrors: meter.createCounter(METRIC.backendErrors, { description: "Errors from the backend, by kind" }),
  };
}

/** A short, bounded name for an error: its Baton code, a system code (`ECONNREFUSED`), or its class. */
export function errorKind(error: unknown): string {
  if (error instanceof BatonError) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && /^[A-Z][A-Z0-9_]{0,39}$/.test(code)) return code;
  return error instanceof Error ? error.name.slice(0, 40) : typeof error;
}

/**
 * One coordinator's reporter. Every method is cheap when metrics are off (no instruments)
 * and the debug log is off.
 * @internal
 */
export class Telemetry {
  readonly #base: Attributes;
  readonly #names: boolean;
  readonly #instruments: Instruments | null;
  readonly #cache = new Map<string, Attributes>();

  private constructor(base: Attributes, names: boolean, found: Instruments | null) {
    this.#base = base;
    this.#names = names;
    this.#instruments = found;
  }

  /** A reporter that records no metrics (the debug log still works). */
  static off(backend: string, namespace: string): Telemetry {
    return new Telemetry({ "baton.backend": backend, "baton.namespace": namespace }, false, null);
  }

  /**
   * Loads `@opentelemetry/api` if it is installed and makes the instruments; without it
   * (or with `enabled: false`) returns {@link off}.
   */
  static async create(backend: string, namespace: string, options: MetricsOptions | undefined): Promise<Telemetry> {
    const base = { "baton.backend": backend, "baton.namespace": namespace };
    if (options?.enabled === false) return Telemetry.off(backend, namespace);
    const provider: MeterProviderLike | undefined = options?.meterProvider;
    if (!provider) {
      try {
        const api = await import("@opentelemetry/api");
        const meter = api.metrics.getMeterProvider().getMeter("baton-coord");
        // No SDK registered: the API's no-op meter, which never records (the metrics API has
        // no proxy, so an SDK registered later does not reach it). Reporting into it would
        // only cost the hot path its attribute lookups.
        if (meter instanceof (api.createNoopMeter().constructor as new () => unknown)) {
          return Telemetry.off(backend, namespace);
        }
        return new Telemetry(base, options?.lockNames === true, instruments(meter));
      } catch {
        return Telemetry.off(backend, namespace);
      }
    }
    return new Telemetry(base, options?.lockNames === true, instruments(provider.getMeter("baton-coord") as Meter));
  }

  /**
   * The attributes of one data point. Without names they are few and made once each:
   * building them for every call cost a third of an uncontended acquire-and-release on
   * the memory backend, even into the no-op provider (bench/metrics-overhead.ts).
   */
  #attributes(kind: QueueKind, name: string, mode?: LockMode, outcome?: string): Attributes {
    if (this.#names) return this.#build(kind, name, mode, outcome);
    const key = `${kind}/${mode ?? ""}/${outcome ?? ""}`;
    let found = this.#cache.get(key);
    if (!found) {
      found = Object.freeze(this.#build(kind, undefined, mode, outcome));
      this.#cache.set(key, found);
    }
    return found;
  }

  #build(kind: QueueKind, name: string | undefined, mode?: LockMode, outcome?: string): Attributes {
    const attributes: Attributes = { ...this.#base, "baton.kind": kind };
    if (name !== undefined) attributes["baton.name"] = name;
    if (mode !== undefined) attributes["baton.mode"] = mode;
    if (outcome !== undefined) attributes["baton.outcome"] = outcome;
    return attributes;
  }

  /** Whether anything is recorded (metrics or the debug log): hot paths skip building reports when not. */
  get recording(): boolean {
    return DEBUG || this.#instruments !== null;
  }

  /** A blocking acquisition starts waiting; the returned function ends the wait (once). */
  waitStarted(kind: QueueKind, name: string): () => void {
    if (DEBUG) debug("waiting for %s %s", kind, JSON.stringify(name));
    const waiting = this.#instruments?.waiting;
    if (!waiting) return () => {};
    const attributes = this.#attributes(kind, name);
    waiting.add(1, attributes);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      waiting.add(-1, attributes);
    };
  }

  /** An acquisition ended (not a retry): `waitedMs` since the caller's call. */
  acquired(
    kind: QueueKind,
    name: string,
    mode: LockMode,
    outcome: AcquireOutcome,
    waitedMs: number,
    detail = "",
  ): void {
    if (DEBUG)
      debug("%s %s %s %s after %d ms%s", outcome, kind, JSON.stringify(name), mode, Math.round(waitedMs), detail);
    if (!this.#instruments) return;
    const attributes = this.#attributes(kind, name, mode, outcome);
    this.#instruments.acquisitions.add(1, attributes);
    this.#instruments.waitDuration.record(waitedMs / 1000, attributes);
  }

  /** A wait's session was lost (it queues again on a fresh one), or its takeover claim failed (it queues again). */
  retried(kind: QueueKind, name: string, error: unknown, why = "its session was lost while it waited"): void {
    if (DEBUG) debug("retry %s %s: %s (%s); queueing again", kind, JSON.stringify(name), why, errorText(error));
  }

  /** A grant is held from now on. */
  holdStarted(kind: QueueKind, name: string, token: bigint): void {
    if (DEBUG) debug("holding %s %s with token %s", kind, JSON.stringify(name), String(token));
    this.#instruments?.held.add(1, this.#attributes(kind, name));
  }

  /** A grant ends: released, or lost with `error`. */
  holdEnded(kind: QueueKind, name: string, heldMs: number, error?: Error): void {
    if (DEBUG)
      debug(
        "%s %s %s after %d ms%s",
        error ? "lost" : "released",
        kind,
        JSON.stringify(name),
        heldMs,
        error ? `: ${error.message}` : "",
      );
    if (!this.#instruments) return;
    this.#instruments.held.add(-1, this.#attributes(kind, name));
    this.#instruments.holdDuration.record(
      heldMs / 1000,
      this.#attributes(kind, name, undefined, error ? "lost" : "released"),
    );
  }

  /** A session keep-alive was acknowledged, or failed with `error`. */
  renewal(sessionId: string, error?: unknown): void {
    if (DEBUG && error === undefined) debug("renewed session %s", sessionId);
    else if (DEBUG) debug("renewal of session %s failed (%s); retrying", sessionId, errorText(error));
    this.#instruments?.renewals.add(1, { ...this.#base, "baton.outcome": error === undefined ? "ok" : "failed" });
    if (error !== undefined) this.backendError(error);
  }

  /** A session was lost (not closed). */
  sessionLost(sessionId: string, error: Error): void {
    if (DEBUG) debug("session %s lost: %s", sessionId, error.message);
    this.#instruments?.losses.add(1, { ...this.#base, "error.type": errorKind(error) });
  }

  /** A grant was taken over from another holder. */
  takeover(kind: QueueKind, name: string): void {
    if (DEBUG) debug("took over %s %s", kind, JSON.stringify(name));
    this.#instruments?.takeovers.add(1, this.#attributes(kind, name));
  }

  /** The backend failed a call. */
  backendError(error: unknown): void {
    this.#instruments?.backendErrors.add(1, { ...this.#base, "error.type": errorKind(error) });
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : describe(error);
}
