/**
 * Pub/sub messages are lost while a connection is down, so every (re)subscribe re-checks
 * (issue 14; wakeups.ts `checkAll`, run by driver.ts on every resubscription). Here a
 * release grants a waiter while the waiter's connections are blackholed by the harness's
 * TCP proxy: the grant's message is published into the cut and dropped with it when the
 * proxy heals (it destroys the blackholed connections). The waiter must learn of its grant
 * from the check after it resubscribed, not from the rare safety re-check: with the holder's
 * TTL at two minutes, that one comes only once the holder's session could have expired
 * (one TTL after the waiter queued), far past the waiter's 30 s deadline.
 *
 * Its own file: `wakeStats` counts for the whole process.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { wakeStats } from "../../src/backends/redis/wakeups.js";
import type { Coordinator, LockHandle } from "../../src/index.js";
import { ExclusionChecker, waitForWaiters } from "../conformance/helpers.js";
import { startProxy } from "../harness/proxy.js";
import { startRedis } from "../harness/redis.js";
import { ownServer } from "./fixtures/backend-suite.js";

/** The safety re-check of a waiter queued behind a live holder fires one holder TTL later. */
const TTL_MS = 120_000;
/** The waiter's deadline: a quarter of the TTL, so a grant within it was no safety re-check. */
const DEADLINE_MS = 30_000;

describe("redis: a grant whose wake-up message was lost while the waiter's pub/sub was down", () => {
  const { server, client } = ownServer(() => startRedis());

  it("is found by the check after the resubscription, long before the safety re-check", async (t) => {
    const proxy = await startProxy({ host: "127.0.0.1", port: server().port });
    let waiter: Coordinator | undefined;
    t.after(async () => {
      // The waiter first: closed behind a closed proxy, it would wait for a reconnection.
      await waiter?.close();
      await proxy.close();
    });
    const options = { namespace: "resubscribe", ttlMs: TTL_MS };
    const holder = await client({ ...options, memberId: "holder" });
    const third = await client({ ...options, memberId: "third" });
    // Only the waiter goes through the proxy: its command connection and its subscriber.
    waiter = await client({ ...options, memberId: "waiter" }, `redis://${proxy.address}`);
    assert.equal(proxy.connectionCount, 2, "the waiter's command and pub/sub connections go through the proxy");

    const checker = new ExclusionChecker();
    const held = await holder.lock("lost-wake").acquire();
    checker.enter(held);
    let settled = false;
    const waiting = waiter
      .lock("lost-wake")
      .acquire({ timeoutMs: DEADLINE_MS })
      .then(
        (handle) => {
          settled = true;
          checker.enter(handle);
          return handle;
        },
        (error: unknown) => {
          settled = true;
          return error;
        },
      );
    // Seen by the waiter itself: its one command connection answers in order, so the
    // ACQUIRE's "waiting" reply is in before the cut (lost in it, the retried ACQUIRE would
    // be granted without any wake-up).
    await waitForWaiters(waiter, "lost-wake", 1);

    const before = { ...wakeStats };
    proxy.cut();
    // The release grants the waiter in Redis and publishes the wake-up into the cut.
    checker.exit();
    assert.equal((await held.release()).status, "released");
    checker.released(held);
    const during = await holder.inspect();
    const lock = during.locks.find((l) => l.name === "lost-wake");
    assert.deepEqual(
      lock?.holders.map((h) => h.memberId),
      ["waiter"],
      "the release granted the waiter in Redis while it was cut off",
    );
    assert.deepEqual(lock?.waiters, []);
    const grantedToken = lock!.holders[0]!.token;
    assert.ok(grantedToken > held.token);
    // Held for the waiter though it does not know yet: nobody else gets in.
    assert.equal(await third.lock("lost-wake").tryAcquire(), null, "the unknowing waiter's grant still excludes");
    const thirdWaiting = third
      .lock("lost-wake")
      .acquire({ timeoutMs: DEADLINE_MS })
      .then((handle) => {
        checker.enter(handle);
        return handle;
      });
    thirdWaiting.catch(() => {}); // awaited below, unless an assertion fails first
    await waitForWaiters(holder, "lost-wake", 1);
    assert.equal(wakeStats.messages, before.messages, "no wake-up message reached the cut-off waiter");
    assert.equal(settled, false, "the waiter cannot know of its grant yet");

    // Heal: the blackholed connections are destroyed with the message they held; node-redis
    // reconnects and resubscribes, and the driver re-checks every waiter.
    const healedAt = performance.now();
    proxy.heal();
    const outcome = await waiting;
    const afterHealMs = performance.now() - healedAt;
    assert.ok(
      !(outcome instanceof Error),
      `granted after the resubscription, not by the safety re-check ${TTL_MS} ms on: ${String(outcome)}`,
    );
    const granted = outcome as LockHandle;
    t.diagnostic(
      `granted ${Math.round(afterHealMs)} ms after the heal (safety re-check: ~${TTL_MS} ms after queueing)`,
    );
    assert.ok(proxy.acceptedCount > 2, "the waiter reconnected through the proxy");
    assert.equal(granted.token, grantedToken, "the grant made during the outage, found by the check");
    assert.ok(granted.token > held.token, "a token above the previous holder's");
    assert.equal(wakeStats.messages - before.messages, 0, "the lost message was not delivered late");
    assert.equal(wakeStats.grantsByCheck - before.grantsByCheck, 1, "granted by the resubscription's check");
    assert.equal(wakeStats.grantsByMessage - before.grantsByMessage, 0);

    checker.exit();
    assert.equal((await granted.release()).status, "released");
    checker.released(granted);
    const next = await thirdWaiting;
    assert.ok(next.token > granted.token);
    checker.exit();
    await next.release();
    checker.released(next);
    assert.deepEqual(checker.violations, []);
    assert.equal(checker.maxInside, 1, "never two holders at once");
  });
});
