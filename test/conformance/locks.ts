/**
 * Exclusive locks: mutual exclusion, tokens, try, timeouts, cancellation, FIFO, release and close. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AbortError, ClosedError, LockLostError, TimeoutError } from "../../src/index.js";
import { ExclusionChecker, interleave, settlesWithin, waitForWaiters } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function locksSuite(context: RecipeContext): void {
  const { guarantees, client, clients, ns, target } = context;
  const fifo = () => (guarantees.fifo ? false : "backend does not declare fifo");
  describe("exclusive locks", () => {
    it("never has two exclusive holders, and tokens strictly increase, under contention", async () => {
      const { clients: n, rounds } = target.contention;
      const namespace = ns();
      const coords = await clients(namespace, n);
      const checker = new ExclusionChecker(1);
      await Promise.all(
        coords.map(async (coord) => {
          const lock = coord.lock("hot");
          for (let i = 0; i < rounds; i++) {
            const handle = await lock.acquire({ timeoutMs: 60_000 });
            checker.enter(handle);
            await interleave(i % 3);
            checker.exit();
            const result = await handle.release();
            assert.equal(result.status, "released");
          }
        }),
      );
      assert.deepEqual(checker.violations, []);
      assert.equal(checker.entries, n * rounds);
    });

    it("tryAcquire returns null while held and a handle once free", async () => {
      const [a, b] = await clients(ns(), 2);
      const held = await a!.lock("x").acquire();
      assert.equal(await b!.lock("x").tryAcquire(), null);
      await held.release();
      const mine = await b!.lock("x").tryAcquire();
      assert.ok(mine);
      assert.ok(mine.token > held.token, "token must grow from one holder to the next");
      await mine.release();
    });

    it("keeps tokens increasing per name across release, re-acquire and other names", async () => {
      const [a, b] = await clients(ns(), 2);
      const tokens: bigint[] = [];
      for (let i = 0; i < 5; i++) {
        const h = await (i % 2 ? a! : b!).lock("seq").acquire();
        tokens.push(h.token);
        const other = await a!.lock(`other-${i}`).acquire();
        await other.release();
        await h.release();
      }
      for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(",")}`);
    });

    it("acquire with timeoutMs 0 fails at once with TimeoutError when busy", async () => {
      const [a, b] = await clients(ns(), 2);
      const held = await a!.lock("z").acquire();
      await assert.rejects(b!.lock("z").acquire({ timeoutMs: 0 }), TimeoutError);
      await held.release();
      const h = await b!.lock("z").acquire({ timeoutMs: 0 });
      await h.release();
    });

    it("times out a waiter with TimeoutError and leaves no trace of it", async () => {
      const [a, b] = await clients(ns(), 2);
      const held = await a!.lock("t").acquire();
      const error = await b!
        .lock("t")
        .acquire({ timeoutMs: 150 })
        .then(
          () => assert.fail("should time out"),
          (e: unknown) => e,
        );
      assert.ok(error instanceof TimeoutError, String(error));
      assert.equal(error.code, "TIMEOUT");
      const info = await a!.inspect();
      assert.deepEqual(info.locks.find((l) => l.name === "t")?.waiters ?? [], []);
      await held.release();
      // The timed-out waiter must not have been granted the lock behind our back.
      const again = await a!.lock("t").tryAcquire();
      assert.ok(again, "lock should be free after the holder released");
      await again.release();
    });

    it("cancels a waiter with its AbortSignal and leaves no trace of it", async () => {
      const [a, b, c] = await clients(ns(), 3);
      const held = await a!.lock("s").acquire();
      const controller = new AbortController();
      const waiting = b!.lock("s").acquire({ signal: controller.signal });
      const behind = c!.lock("s").acquire();
      await waitForWaiters(a!, "s", 2);
      controller.abort(new Error("user gave up"));
      const error = await waiting.then(
        () => assert.fail("should be aborted"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof AbortError, String(error));
      assert.equal(error.name, "AbortError");
      assert.equal((error.cause as Error).message, "user gave up");
      await waitForWaiters(a!, "s", 1);
      await held.release();
      const next = await behind;
      assert.ok(next.token > held.token);
      await next.release();
    });

    it("rejects at once for an already-aborted signal", async () => {
      const [a] = await clients(ns(), 1);
      await assert.rejects(a!.lock("p").acquire({ signal: AbortSignal.abort() }), AbortError);
      const h = await a!.lock("p").tryAcquire();
      assert.ok(h, "nothing should be held after an aborted acquire");
      await h.release();
    });

    it("grants waiters in arrival order", { skip: fifo() }, async () => {
      const coords = await clients(ns(), 6);
      const [holder, ...waiters] = coords;
      const held = await holder!.lock("q").acquire();
      const order: number[] = [];
      const pending: Promise<void>[] = [];
      for (const [i, coord] of waiters.entries()) {
        pending.push(
          coord
            .lock("q")
            .acquire()
            .then(async (h) => {
              order.push(i);
              await h.release();
            }),
        );
        await waitForWaiters(holder!, "q", i + 1);
      }
      await held.release();
      await Promise.all(pending);
      assert.deepEqual(order, [0, 1, 2, 3, 4]);
    });

    it("release is idempotent, reports what happened and never throws", async () => {
      const [a] = await clients(ns(), 1);
      const h = await a!.lock("r").acquire();
      assert.equal(h.held, true);
      assert.deepEqual(await h.release(), { status: "released" });
      assert.deepEqual(await h.release(), { status: "already-released" });
      assert.equal(h.held, false);
      assert.equal(h.signal.aborted, false, "a plain release does not abort the signal");
    });

    it("releases on scope exit with await using", async () => {
      const [a, b] = await clients(ns(), 2);
      {
        await using h = await a!.lock("u").acquire();
        assert.equal(await b!.lock("u").tryAcquire(), null);
        assert.equal(h.held, true);
      }
      const h2 = await b!.lock("u").tryAcquire();
      assert.ok(h2, "await using should have released the lock");
      await h2.release();
    });

    it("withLock passes the signal and releases even when fn throws", async () => {
      const [a] = await clients(ns(), 1);
      const result = await a!.withLock("w", async (signal, handle) => {
        assert.ok(signal instanceof AbortSignal);
        assert.equal(signal, handle.signal);
        return 42;
      });
      assert.equal(result, 42);
      await assert.rejects(
        a!.withLock("w", () => {
          throw new Error("boom");
        }),
        /boom/,
      );
      const h = await a!.lock("w").tryAcquire();
      assert.ok(h, "withLock must release after a throw");
      await h.release();
    });

    it("close() releases everything promptly, without waiting for the TTL", async () => {
      const namespace = ns();
      const a = await client(namespace, { ttlMs: 60_000 });
      const b = await client(namespace);
      const h = await a.lock("c").acquire();
      const waiting = b.lock("c").acquire();
      await waitForWaiters(b, "c", 1);
      await a.close();
      assert.ok(h.signal.aborted, "closing aborts the handles' signals");
      assert.ok(h.signal.reason instanceof LockLostError);
      assert.ok(await settlesWithin(waiting, 10_000), "the waiter should get the lock well before the 60 s TTL");
      await (await waiting).release();
    });

    it("close() ends pending waits with ClosedError", async () => {
      const namespace = ns();
      const a = await client(namespace);
      const b = await client(namespace);
      const h = await a.lock("cw").acquire();
      const waiting = b.lock("cw").acquire();
      await waitForWaiters(a, "cw", 1);
      // Observe the rejection before closing: it may come before close() resolves.
      const rejected = assert.rejects(waiting, ClosedError);
      await b.close();
      await rejected;
      await waitForWaiters(a, "cw", 0);
      await h.release();
    });
  });
}
