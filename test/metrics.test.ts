/**
 * Metrics and the debug log, read the way an operator reads them: scraped from the
 * Prometheus endpoint (OpenTelemetry's SDK and exporter, real HTTP on loopback), and the
 * `NODE_DEBUG=baton` lines of a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect, InvalidArgumentError } from "../src/index.js";
import { type PrometheusMetrics, prometheusMetrics } from "../src/metrics/prometheus.js";
import { expireSession } from "../src/testing.js";
import { waitFor } from "./conformance/helpers.js";
import { startRedis } from "./harness/redis.js";

/** One sample line: `name{labels} value`, labels as an object. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[key as string] = value as string;
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels`. */
function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);
}

describe("metrics", () => {
  let metrics: PrometheusMetrics;
  let server: Server;
  let url: string;
  const scrape = async () => parse(await (await fetch(url)).text());

  before(async () => {
    metrics = await prometheusMetrics();
    server = createServer(metrics.handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  });
  after(async () => {
    server.close();
    await metrics.shutdown();
  });

  it("counts acquisitions by kind, mode and outcome, with wait and hold times and the gauges", async () => {
    const ns = "outcomes";
    const a = await connect(`memory://metrics-outcomes`, {
      namespace: ns,
      metrics: { meterProvider: metrics.meterProvider },
    });
    const b = await connect(`memory://metrics-outcomes`, {
      namespace: ns,
      metrics: { meterProvider: metrics.meterProvider },
    });
    const mine = { baton_namespace: ns, baton_backend: "memory" };
    const lock = { ...mine, baton_kind: "lock", baton_mode: "exclusive" };
    try {
      const held = await a.lock("x").acquire();
      assert.equal(await b.lock("x").tryAcquire(), null);
      await assert.rejects(b.lock("x").acquire({ timeoutMs: 0 }));
      await assert.rejects(b.lock("x").acquire({ timeoutMs: 30 }), { code: "TIMEOUT" });
      const abort = new AbortController();
      const aborted = b.lock("x").acquire({ signal: abort.signal });
      const grantedAsked = performance.now();
      const granted = b.lock("x").acquire();
      await waitFor(async () => total(await scrape(), "baton_waiting", mine) === 2, "two waiters in the gauge");
      let samples = await scrape();
      assert.equal(total(samples, "baton_held", mine), 1);
      abort.abort();
      await assert.rejects(aborted, { name: "AbortError" });
      const releasing = performance.now();
      await held.release();
      const second = await granted;
      samples = await scrape();
      assert.equal(total(samples, "baton_acquisitions_total", { ...lock, baton_outcome: "granted" }), 2);
      assert.equal(total(samples, "baton_acquisitions_total", { ...lock, baton_outcome: "busy" }), 2);
      assert.equal(total(samples, "baton_acquisitions_total", { ...lock, baton_outcome: "timed_out" }), 1);
      assert.equal(total(samples, "baton_acquisitions_total", { ...lock, baton_outcome: "aborted" }), 1);
      assert.equal(total(samples, "baton_waiting", mine), 0);
      assert.equal(total(samples, "baton_held", mine), 1);
      assert.equal(total(samples, "baton_wait_duration_count", { ...lock, baton_outcome: "granted" }), 2);
      // The second grant waited at least from its request until the holder began to release.
      const waited = total(samples, "baton_wait_duration_sum", { ...lock, baton_outcome: "granted" });
      assert.ok(waited >= (releasing - grantedAsked) / 1000 - 0.001, `wait sum ${waited} s`);
      assert.equal(total(samples, "baton_hold_duration_count", { ...mine, baton_outcome: "released" }), 1);
      // No lock names unless asked for.
      assert.ok(samples.filter((s) => s.labels.baton_namespace === ns).every((s) => s.labels.baton_name === undefined));
      await second.release();
      const semaphore = await a.semaphore("s", { limit: 2 }).acquire();
      await semaphore.release();
      samples = await scrape();
      assert.equal(total(samples, "baton_held", mine), 0);
      assert.equal(
        total(samples, "baton_acquisitions_total", { ...mine, baton_kind: "semaphore", baton_outcome: "granted" }),
        1,
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("adds lock names only when asked, in the options or the URL", async () => {
    const options = await connect("memory://metrics-names", {
      namespace: "named",
      metrics: { meterProvider: metrics.meterProvider, lockNames: true },
    });
    await (await options.lock("invoice-7").acquire()).release();
    await options.close();
    const samples = await scrape();
    assert.equal(total(samples, "baton_acquisitions_total", { baton_namespace: "named", baton_name: "invoice-7" }), 1);
    await assert.rejects(connect("memory://m?metrics=loud"), InvalidArgumentError);
    await assert.rejects(
      connect("memory://m", { metrics: { lockName: true } as never }),
      /unknown metrics option "lockName"/,
    );
    await assert.rejects(connect("memory://m", { metrics: { meterProvider: {} } as never }), /MeterProvider/);
  });

  it("records nothing when turned off", async () => {
    const coord = await connect("memory://metrics-off", {
      namespace: "off",
      metrics: { meterProvider: metrics.meterProvider, enabled: false },
    });
    await (await coord.lock("x").acquire()).release();
    await coord.close();
    assert.equal(total(await scrape(), "baton_acquisitions_total", { baton_namespace: "off" }), 0);
  });

  it("counts session renewals and losses", async () => {
    const coord = await connect("memory://metrics-session", {
      namespace: "session",
      ttlMs: 1000,
      metrics: { meterProvider: metrics.meterProvider },
    });
    try {
      const handle = await coord.lock("x").acquire();
      const mine = { baton_namespace: "session" };
      await waitFor(
        async () => total(await scrape(), "baton_session_renewals_total", { ...mine, baton_outcome: "ok" }) >= 1,
        "a renewal",
      );
      await expireSession(coord);
      assert.equal(handle.held, false);
      const samples = await scrape();
      assert.equal(total(samples, "baton_session_losses_total", { ...mine, error_type: "SESSION_EXPIRED" }), 1);
      assert.equal(total(samples, "baton_hold_duration_count", { ...mine, baton_outcome: "lost" }), 1);
      assert.equal(total(samples, "baton_held", mine), 0);
    } finally {
      await coord.close();
    }
  });

  it("counts backend errors by kind and failed renewals when the server dies", async () => {
    const server = await startRedis();
    const coord = await connect(server.url, {
      namespace: "errors",
      ttlMs: 2000,
      metrics: { meterProvider: metrics.meterProvider },
    });
    try {
      const handle = await coord.lock("x").acquire();
      await server.kill();
      await assert.rejects(coord.lock("x").tryAcquire());
      assert.equal(handle.held, false);
      const samples = await scrape();
      const mine = { baton_backend: "redis", baton_namespace: "errors" };
      assert.ok(total(samples, "baton_backend_errors_total", { ...mine, error_type: "BACKEND_UNAVAILABLE" }) >= 1);
      assert.ok(total(samples, "baton_session_renewals_total", { ...mine, baton_outcome: "failed" }) >= 1);
      assert.equal(total(samples, "baton_session_losses_total", mine), 1);
      assert.equal(total(samples, "baton_acquisitions_total", { ...mine, baton_outcome: "error" }), 1);
    } finally {
      await coord.close();
      await server.stop();
    }
  });

  it("counts a takeover of a lost holding, and a lock-delayed try as busy", async () => {
    const a = await connect("memory://metrics-takeover", {
      namespace: "takeover",
      metrics: { meterProvider: metrics.meterProvider },
    });
    const b = await connect("memory://metrics-takeover", {
      namespace: "takeover",
      metrics: { meterProvider: metrics.meterProvider },
    });
    try {
      const mine = { baton_namespace: "takeover", baton_kind: "lock" };
      await (await a.lock("clean").acquire({ takeover: true })).release();
      await (await b.lock("clean").acquire({ takeover: true })).release();
      assert.equal(total(await scrape(), "baton_takeovers_total", mine), 0, "a clean release is no takeover");
      await a.lock("img").acquire({ fenceInfo: { pid: 1 }, lockDelayMs: 60_000 });
      await expireSession(a);
      assert.equal(await b.lock("img").tryAcquire({ takeover: true }), null, "under the lock delay");
      assert.equal(total(await scrape(), "baton_acquisitions_total", { ...mine, baton_outcome: "busy" }), 1);
      await (await b.lock("plain").acquire({ fenceInfo: "x" })).release();
      await b.lock("lost").acquire({ fenceInfo: "first" });
      await expireSession(b);
      const next = await a.lock("lost").acquire({ takeover: true });
      assert.deepEqual(next.takeover?.fenceInfo, "first");
      assert.equal(total(await scrape(), "baton_takeovers_total", mine), 1);
      await next.release();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("serves what inspect() sees for the whole namespace", async () => {
    const holder = await connect("memory://metrics-status", { namespace: "status" });
    const waiter = await connect("memory://metrics-status", { namespace: "status" });
    const observer = await connect("memory://metrics-status", { namespace: "status" });
    const stop = metrics.observe(observer);
    try {
      const held = await holder.lock("x").acquire();
      const waiting = waiter.lock("x").acquire();
      const mine = { baton_namespace: "status", baton_kind: "lock" };
      await waitFor(
        async () => total(await scrape(), "baton_status_waiters", mine) === 1,
        "the waiter in the status gauge",
      );
      const samples = await scrape();
      assert.equal(total(samples, "baton_status_holders", mine), 1);
      assert.equal(total(samples, "baton_status_up", { baton_namespace: "status" }), 1);
      await held.release();
      await (await waiting).release();
      assert.equal(total(await scrape(), "baton_status_waiters", mine), 0);
    } finally {
      stop();
      await Promise.all([holder.close(), waiter.close(), observer.close()]);
    }
  });
});

describe("debug log", () => {
  it("NODE_DEBUG=baton tells waits, grants, releases and session losses", async () => {
    const script = `
      import { connect } from "./src/index.js";
      import { expireSession } from "./src/testing.js";
      const a = await connect("memory://debug", { ttlMs: 1000 });
      const b = await connect("memory://debug", { ttlMs: 1000 });
      const held = await a.lock("job").acquire();
      const waiting = b.lock("job").acquire();
      while ((await a.inspect()).locks[0]?.waiters.length !== 1) await new Promise((r) => setTimeout(r, 5));
      await held.release();
      await waiting;
      await expireSession(b);
      await a.close(); await b.close();
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: new URL("..", import.meta.url),
      env: { ...process.env, NODE_DEBUG: "baton" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    assert.equal(code, 0, stderr);
    for (const line of [
      /BATON \d+: waiting for lock "job"/,
      /BATON \d+: granted lock "job" exclusive after \d+ ms \(token \d+\)/,
      /BATON \d+: released lock "job" after \d+ ms/,
      /BATON \d+: session \S+ lost: session \S+ was expired by a test/,
    ]) {
      assert.match(stderr, line);
    }
  });
});

describe("without OpenTelemetry installed", () => {
  it("locks work, nothing is recorded, and the Prometheus endpoint says what to install", async () => {
    const script = `
      import assert from "node:assert/strict";
      import { connect, prometheusMetrics } from "./src/index.js";
      await assert.rejects(import("@opentelemetry/api"), { code: "ERR_MODULE_NOT_FOUND" });
      const coord = await connect("memory://no-otel");
      await (await coord.lock("x").acquire()).release();
      await coord.close();
      await assert.rejects(prometheusMetrics(), {
        code: "UNSUPPORTED",
        message: /npm install @opentelemetry\\/api @opentelemetry\\/sdk-metrics @opentelemetry\\/exporter-prometheus/,
      });
    `;
    const hide = new URL("./fixtures/no-otel.mjs", import.meta.url).href;
    const child = spawn(process.execPath, ["--import", "tsx", "--import", hide, "--input-type=module", "-e", script], {
      cwd: new URL("..", import.meta.url),
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    assert.equal(await new Promise((resolve) => child.once("exit", resolve)), 0, stderr);
  });
});
