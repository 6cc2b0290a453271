/**
 * Cancellation of a takeover claim, on the memory backend (the claim is core code, the same
 * on every backend): a timeout or an abort during the lock delay or during the onTakeover
 * hook, a hook that ignores its signal, and a grant lost while it is being claimed. In
 * every case nothing is held afterwards and acquire() never hands out a lost handle.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import { type Coordinator, type Takeover, TimeoutError, connect } from "../src/index.js";
import { expireSession } from "../src/testing.js";

/** A promise that settles as `p` does, or fails the test after `ms` (a hang is a defect). */
function settlesWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, watchdog]).finally(() => clearTimeout(timer));
}

/** Two coordinators on a fresh memory namespace; `a` holds `name` with `options`, then is lost. */
async function lostHolder(name: string, options: Record<string, unknown>) {
  const url = `memory://takeover-cancel-${randomUUID()}`;
  const a = await connect(url, { memberId: "a" });
  const b = await connect(url, { memberId: "b" });
  const held = await a.lock(name).acquire(options);
  await expireSession(a);
  return { a, b, token: held.token };
}

async function holders(coord: Coordinator, name: string) {
  return (await coord.inspect()).locks.find((l) => l.name === name)?.holders ?? [];
}

/** A hook that tells when it started and then never settles, whatever its signal says. */
function stuckHook() {
  let started!: () => void;
  const running = new Promise<void>((resolve) => {
    started = resolve;
  });
  const hook = () => {
    started();
    return new Promise<void>(() => {});
  };
  return { hook, running };
}

describe("takeover claim cancellation", () => {
  it("a timeout during the lock delay rejects with TimeoutError and holds nothing", async () => {
    const { a, b } = await lostHolder("d1", { lockDelayMs: 60_000 });
    const attempt = b.lock("d1").acquire({ takeover: true, timeoutMs: 300 });
    await assert.rejects(settlesWithin(attempt, 10_000, "acquire"), TimeoutError);
    assert.deepEqual(await holders(b, "d1"), []);
    await Promise.all([a.close(), b.close()]);
  });

  it("an abort during the lock delay rejects with AbortError and holds nothing", async () => {
    const { a, b } = await lostHolder("d2", { lockDelayMs: 60_000 });
    const controller = new AbortController();
    const attempt = b.lock("d2").acquire({ takeover: true, signal: controller.signal });
    for (;;) {
      // Aborted once the delay has begun (the record shows its end).
      const record = (await b.inspect()).takeovers?.find((r) => r.name === "d2");
      if (typeof record?.delayedUntil === "number") break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    controller.abort();
    await assert.rejects(settlesWithin(attempt, 10_000, "acquire"), { name: "AbortError" });
    assert.deepEqual(await holders(b, "d2"), []);
    await Promise.all([a.close(), b.close()]);
  });

  it("an abort during a hook that honours its signal rejects with AbortError; the record stays", async () => {
    const { a, b, token } = await lostHolder("h1", { fenceInfo: { pid: 1 } });
    const controller = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const attempt = b.lock("h1").acquire({
      signal: controller.signal,
      onTakeover: (_previous, signal) =>
        new Promise<void>((_, reject) => {
          started();
          signal.addEventListener("abort", () => reject(new Error("stopped")));
        }),
    });
    await running;
    controller.abort();
    await assert.rejects(settlesWithin(attempt, 10_000, "acquire"), { name: "AbortError" });
    assert.deepEqual(await holders(b, "h1"), []);
    const record = (await b.inspect()).takeovers?.find((r) => r.name === "h1");
    assert.equal(record?.token, token, "the lost holder's record is kept for the next acquirer");
    await Promise.all([a.close(), b.close()]);
  });

  it("timeoutMs bounds a hook that ignores its signal: TimeoutError, nothing held", async () => {
    const { a, b } = await lostHolder("h2", { fenceInfo: 2 });
    const { hook, running } = stuckHook();
    const attempt = b.lock("h2").acquire({ timeoutMs: 300, onTakeover: hook });
    await running;
    await assert.rejects(settlesWithin(attempt, 10_000, "acquire"), TimeoutError);
    assert.deepEqual(await holders(b, "h2"), []);
    await Promise.all([a.close(), b.close()]);
  });

  it("an abort ends a hook that ignores its signal: AbortError, nothing held", async () => {
    const { a, b } = await lostHolder("h3", { fenceInfo: 3 });
    const { hook, running } = stuckHook();
    const controller = new AbortController();
    const attempt = b.lock("h3").acquire({ signal: controller.signal, onTakeover: hook });
    await running;
    controller.abort();
    await assert.rejects(settlesWithin(attempt, 10_000, "acquire"), { name: "AbortError" });
    assert.deepEqual(await holders(b, "h3"), []);
    await Promise.all([a.close(), b.close()]);
  });

  it("a release after the local deadline passed (its timer not run yet) is lost and keeps the record", async () => {
    const url = `memory://takeover-cancel-${randomUUID()}`;
    const a = await connect(url, { memberId: "a", ttlMs: 1000 });
    const held = await a.lock("late").acquire({ fenceInfo: "late" });
    // Paused past the TTL: no timer (the deadline's, the store's expiry) runs meanwhile.
    const end = performance.now() + 1200;
    while (performance.now() < end) {
      // Busy on purpose.
    }
    const result = await held.release();
    assert.equal(result.status, "lost");
    assert.equal(held.signal.aborted, true, "the signal fired");
    const b = await connect(url, { memberId: "b" });
    const next = await b.lock("late").acquire({ takeover: true, timeoutMs: 10_000 });
    assert.equal(next.takeover?.token, held.token, "the lost holding's record was kept");
    await next.release();
    await Promise.all([a.close(), b.close()]);
  });

  it("a grant lost during the hook is never handed out: the wait goes on and ends held", async () => {
    const { a, b, token } = await lostHolder("m1", { fenceInfo: "m" });
    const seen: Takeover[] = [];
    const handle = await settlesWithin(
      b.lock("m1").acquire({
        timeoutMs: 10_000,
        onTakeover: async (previous) => {
          seen.push(previous);
          // The first claim loses its grant (its session expires) while fencing.
          if (seen.length === 1) await expireSession(b);
        },
      }),
      15_000,
      "acquire",
    );
    assert.equal(handle.held, true, "acquire() resolved with a handle that is already lost");
    assert.equal(handle.signal.aborted, false);
    assert.deepEqual(
      seen.map((p) => p.token),
      [token, token],
      "fenced again on the fresh grant",
    );
    assert.equal(handle.takeover?.token, token);
    await handle.release();
    await Promise.all([a.close(), b.close()]);
  });
});
