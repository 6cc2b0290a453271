/**
 * Redis with a queue longer than a Lua stack: 8,200 waiters on one lock, inspected and
 * withdrawn. Alone (after the other files, one at a time): its thousands of scripts take
 * tens of seconds of CPU between Redis and the client, and a CI run with another file beside
 * it ran past two minutes.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Inspection } from "../../src/index.js";
import { waitFor, waitForWaiters } from "../conformance/helpers.js";
import { startRedis } from "../harness/redis.js";
import { ownServer } from "./fixtures/backend-suite.js";

describe("redis at scale", () => {
  const { client } = ownServer(() => startRedis());

  it("inspects a queue longer than a Lua stack (8200 waiters) and withdraws them all", async () => {
    // The holder's inspections and renewals queue behind the crowd's scripts too: on a
    // loaded machine a default TTL can run out behind them, and the lock go to the crowd.
    const holder = await client({ memberId: "long-holder", requestTimeoutMs: 60_000, ttlMs: 120_000 });
    // Thousands of scripts queue behind each other on one connection: a loaded machine
    // needs more than the default 5 s for the last of them.
    const crowd = await client({ memberId: "crowd", requestTimeoutMs: 60_000 });
    const held = await holder.lock("long").acquire();
    // Each inspection reads thousands of entries in one script, which Redis runs ahead of
    // the crowd's: polled every 5 ms it starved them (a CI run at load 15 timed out at 6,000).
    const POLL_MS = 250;
    const stop = new AbortController();
    // A wait that fails before the abort leaves the queue short of the count waited for:
    // said at once, with its error, instead of a timeout.
    const early: unknown[] = [];
    const waits: Promise<unknown>[] = [];
    const queued = async (count: number) => {
      let last: Inspection | undefined;
      await waitFor(
        async () => {
          if (early.length > 0)
            assert.fail(`${early.length} wait(s) failed before the abort; first: ${String(early[0])}`);
          last = await holder.inspect();
          return (last.locks.find((l) => l.name === "long")?.waiters.length ?? 0) === count;
        },
        `${count} waiter(s) on long`,
        120_000,
        POLL_MS,
      );
      return last as Inspection;
    };
    for (let batch = 1; batch <= 8; batch++) {
      for (let i = 0; i < (batch < 8 ? 1000 : 1200); i++) {
        waits.push(
          crowd
            .lock("long")
            .acquire({ signal: stop.signal })
            .then(
              () => assert.fail("must not be granted"),
              (e: unknown) => {
                if (!stop.signal.aborted) early.push(e);
                return e;
              },
            ),
        );
      }
      await queued(waits.length);
    }
    const seen = await queued(8200);
    assert.equal(seen.locks.find((l) => l.name === "long")?.holders.length, 1);
    stop.abort();
    for (const outcome of await Promise.all(waits)) assert.ok(outcome instanceof Error);
    await waitForWaiters(holder, "long", 0, "locks", 120_000, POLL_MS);
    await held.release();
  });
});
