/**
 * The Redis backend under real faults: holder processes killed or paused past their TTL;
 * a client cut off by a TCP proxy and healed; redis-server restarted with and without
 * persistence; a Sentinel failover (one primary, one replica, three sentinels) under
 * contention. Every server and process is started here and stopped afterwards.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { type Coordinator, connect, type LockHandle, LockLostError } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { startRedis, startSentinelSetup } from "../harness/redis.js";
import { FencedResource } from "../harness/holder.js";
import { clientFaultSuite } from "./fixtures/client-faults.js";

const TTL_MS = 2000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

clientFaultSuite({
  backend: "redis",
  scheme: "redis",
  ttlMs: TTL_MS,
  ttlWord: "TTL",
  start: () => startRedis(),
  target: (server) => ({ host: "127.0.0.1", port: server.port }),
  cutOptions: { requestTimeoutMs: 500 },
});

describe("redis-server restarts", () => {
  it("without persistence: the holder's session is lost, a waiter is granted, and tokens still grow", async (t) => {
    const server = await startRedis({ persistence: false });
    const coords: Coordinator[] = [];
    t.after(async () => {
      await Promise.all(coords.map((c) => c.close()));
      await server.stop();
    });
    const options = { namespace: "restart", ttlMs: 3000, requestTimeoutMs: 1000 };
    const a = await connect(server.url, { ...options, memberId: "a" });
    const b = await connect(server.url, { ...options, memberId: "b" });
    coords.push(a, b);
    const held = await a.lock("r").acquire();
    // Settled into a value at once: it may reject while the test waits for the holder.
    const waiting = b
      .lock("r")
      .acquire({ timeoutMs: 30_000 })
      .then(
        (h) => h,
        (e: unknown) => e,
      );
    await waitForWaiters(b, "r", 1);

    await server.restart();
    // Everything was in memory: the holder's next keep-alive finds its key gone.
    await waitFor(() => held.signal.aborted, "the holder's signal", 15_000);
    assert.ok(held.signal.reason instanceof LockLostError, String(held.signal.reason));
    assert.match(String(held.signal.reason), /key is gone/);
    // The waiter's entry is gone too; its wait survives the lost session: it is queued
    // again on a new session and granted, since the holder's session is gone.
    const outcome = await waiting;
    assert.ok(!(outcome instanceof Error), `the wait survives the lost session: ${String(outcome)}`);
    assert.ok((outcome as LockHandle).token > held.token, "the TIME floor keeps tokens growing after data loss");
    await (outcome as LockHandle).release();
    const after = await a.lock("r").acquire({ timeoutMs: 10_000 });
    assert.ok(after.token > held.token, "tokens grow after the restart without persistence");
    await after.release();
  });

  it("with persistence (AOF, fsync always): the lock, its waiter and the token counter survive", async (t) => {
    const server = await startRedis({ persistence: true });
    const coords: Coordinator[] = [];
    t.after(async () => {
      await Promise.all(coords.map((c) => c.close()));
      await server.stop();
    });
    const options = { namespace: "restart", ttlMs: 5000, requestTimeoutMs: 1000 };
    const a = await connect(server.url, { ...options, memberId: "a" });
    const b = await connect(server.url, { ...options, memberId: "b" });
    coords.push(a, b);
    const held = await a.lock("p").acquire();
    const waiting = observed(b.lock("p").acquire({ timeoutMs: 30_000 }));
    await waitForWaiters(b, "p", 1);

    await server.restart(); // SIGKILL: only what the AOF has survives
    // Both sessions reconnect and renew within the TTL: nothing is lost.
    await waitFor(async () => {
      try {
        return (await b.inspect()).locks.some((l) => l.name === "p" && l.waiters.length === 1);
      } catch {
        return false;
      }
    }, "the queue back after restart");
    await sleep(options.ttlMs); // past one TTL: the sessions must have been renewed
    assert.equal(held.signal.aborted, false, "the holder keeps its lock across the restart");
    await held.release();
    const next = await waiting;
    assert.ok(next.token > held.token);
    await next.release();
  });
});

describe("redis sentinel failover", () => {
  it("recovers from a SIGKILLed primary under contention; records which guarantees held", async (t) => {
    const setup = await startSentinelSetup();
    const coords: Coordinator[] = [];
    t.after(async () => {
      await Promise.all(coords.map((c) => c.close().catch(() => {})));
      await setup.stop();
    });
    const namespace = `failover-${randomUUID().slice(0, 8)}`;
    // replicas=1: every grant WAITs for the replica. It must work against a real replica;
    // its cost is reported, not asserted (speed belongs to the bench).
    const waited = await connect(setup.url, { namespace, memberId: "waited", replicas: 1, requestTimeoutMs: 2000 });
    const plain = await connect(setup.url, { namespace, memberId: "plain", requestTimeoutMs: 2000 });
    coords.push(waited, plain);
    const median = async (coord: Coordinator) => {
      const times: number[] = [];
      for (let i = 0; i < 100; i++) {
        const started = performance.now();
        const handle = await coord.lock("wait-cost").acquire();
        times.push(performance.now() - started);
        await handle.release();
      }
      return times.sort((a, b) => a - b)[50]!;
    };
    const [plainMs, waitedMs] = [await median(plain), await median(waited)];
    t.diagnostic(
      `acquire p50 through Sentinel: ${plainMs.toFixed(2)} ms; with replicas=1 (WAIT): ${waitedMs.toFixed(2)} ms`,
    );
    for (let i = 0; i < 6; i++) {
      coords.push(await connect(setup.url, { namespace, ttlMs: 6000, memberId: `c${i}`, requestTimeoutMs: 1000 }));
    }
    const resource = new FencedResource();
    const overlaps: string[] = [];
    const tokenRegressions: string[] = [];
    const inside = new Set<LockHandle>();
    let granted = 0;
    let lastToken = -1n;
    let killedAt = 0;
    let firstGrantAfterKill = 0;
    let running = true;
    const loops = coords.map(async (coord) => {
      const lock = coord.lock("hot");
      while (running) {
        let handle: LockHandle;
        try {
          handle = await lock.acquire({ timeoutMs: 5000 });
        } catch {
          await sleep(50);
          continue;
        }
        granted++;
        if (killedAt > 0 && firstGrantAfterKill === 0) firstGrantAfterKill = performance.now();
        if (handle.token <= lastToken) tokenRegressions.push(`${handle.token} after ${lastToken}`);
        lastToken = handle.token > lastToken ? handle.token : lastToken;
        for (const other of inside) if (!other.signal.aborted) overlaps.push(`${handle.token} while ${other.token}`);
        inside.add(handle);
        resource.write(handle.token, coord.memberId);
        await sleep(Math.random() * 4);
        inside.delete(handle);
        await handle.release().catch(() => {});
      }
    });
    const grants = async (more: number, what: string) => {
      const target = granted + more;
      await waitFor(() => granted >= target, `${more} more grants ${what}`, 60_000);
    };
    await grants(50, "before the failover");
    const oldPrimary = setup.primary.port;
    const killStarted = performance.now();
    await setup.primary.kill();
    // From here on (the old primary is dead), every grant comes from the new one.
    killedAt = performance.now();
    const grantedAtKill = granted;
    await waitFor(
      async () => (await setup.currentPrimaryPort()) !== oldPrimary,
      "sentinels to promote the replica",
      30_000,
    );
    const promotedAfterMs = performance.now() - killStarted;
    await waitFor(() => granted > grantedAtKill + 20, "grants on the new primary", 60_000);
    const recoveredAfterMs = firstGrantAfterKill - killStarted;
    running = false;
    await Promise.all(loops);
    t.diagnostic(
      `failover: promoted after ${Math.round(promotedAfterMs)} ms; ${granted} grants; first grant ${Math.round(recoveredAfterMs)} ms after the SIGKILL; overlaps ${overlaps.length}; token regressions ${tokenRegressions.length}; stale writes rejected ${resource.rejected.length}`,
    );
    // The TIME floor keeps tokens growing across the promotion even if increments were lost.
    assert.deepEqual(tokenRegressions, []);
    assert.ok(recoveredAfterMs < 30_000);
  });
});
