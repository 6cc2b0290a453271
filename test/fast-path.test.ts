/**
 * The synchronous grant/release path of drivers that decide locally (memory, file): what
 * it must not cost (a timer per call) and what it must still do (FIFO behind a waiter,
 * cancellation before the grant, tokens, a free slot for the next process's try).
 */
import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { after, describe, it } from "node:test";
import { AbortError, connect } from "../src/index.js";
import { makeTempDir, removeTempDir } from "./harness/proc.js";

const dir = makeTempDir("baton-fast-");
after(() => removeTempDir(dir));

/** Timers created while `run` runs (setTimeout and setInterval handles). */
async function timersDuring(run: () => Promise<void>): Promise<number> {
  let timers = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === "Timeout") timers++;
    },
  });
  hook.enable();
  try {
    await run();
  } finally {
    hook.disable();
  }
  return timers;
}

for (const [backend, url] of [
  ["memory", "memory://fast-path"],
  ["file", `file://${dir}`],
] as const) {
  describe(`fast path (${backend})`, () => {
    it("an uncontended acquire + release, try or blocking, arms no timer", async () => {
      await using coord = await connect(url);
      const lock = coord.lock("free");
      // The first call opens the session (its renewal timers are not the hot path).
      await (await lock.acquire()).release();
      const timers = await timersDuring(async () => {
        for (let i = 0; i < 50; i++) {
          const handle = await lock.acquire();
          assert.deepEqual(await handle.release(), { status: "released" });
          const tried = await lock.tryAcquire();
          assert.ok(tried);
          await tried.release();
        }
      });
      assert.equal(timers, 0);
    });

    it("keeps the slow path's rules: cancellation first, FIFO behind a waiter, rising tokens", async () => {
      await using a = await connect(url);
      await using b = await connect(url);
      const controller = new AbortController();
      controller.abort(new Error("stop"));
      await assert.rejects(a.lock("x").acquire({ signal: controller.signal }), AbortError);
      assert.equal((await a.inspect()).locks.length, 0);

      const first = await a.lock("x").acquire();
      const waiting = b.lock("x").acquire({ timeoutMs: 10_000 });
      await waitUntil(async () => (await a.inspect()).locks.some((l) => l.waiters.length > 0));
      const tokenBefore = first.token;
      await first.release();
      const second = await waiting;
      assert.ok(second.token > tokenBefore);
      // Held by b: a's try on the fast path answers null and leaves no trace.
      assert.equal(await a.lock("x").tryAcquire(), null);
      assert.equal(await a.lock("x").tryAcquire(), null);
      await second.release();
      const third = await a.lock("x").tryAcquire();
      assert.ok(third && third.token > second.token);
      await third.release();
      assert.equal((await a.inspect()).locks.length, 0);
    });
  });
}

async function waitUntil(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (await check()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail("condition not reached");
}
