/**
 * Shared locks: readers together, writers apart, upgrade and downgrade. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DeadlockError, InvalidStateError, TimeoutError } from "../../src/index.js";
import { OrderLog, interleave, settlesWithin, waitForWaiters } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function sharedLocksSuite(context: RecipeContext): void {
  const { guarantees, clients, ns } = context;
  const shared = () => (guarantees.sharedLocks ? false : "backend has no shared locks");
  const fifo = () => (guarantees.fifo ? false : "backend does not declare fifo");
  describe("shared locks", () => {
    it("lets shared holders in together and keeps exclusive ones out", { skip: shared() }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const ra = await a!.lock("rw").acquire({ mode: "shared" });
      const rb = await b!.lock("rw").acquire({ mode: "shared" });
      assert.equal(ra.mode, "shared");
      assert.ok(rb.token > ra.token, "every grant gets its own token");
      assert.equal(await c!.lock("rw").tryAcquire(), null);
      const writer = c!.lock("rw").acquire();
      await waitForWaiters(a!, "rw", 1);
      await ra.release();
      assert.equal(await settlesWithin(writer, 50), false, "writer must wait for the last reader");
      await rb.release();
      const w = await writer;
      assert.ok(w.token > rb.token);
      assert.equal(await a!.lock("rw").tryAcquire({ mode: "shared" }), null);
      await w.release();
    });

    it("makes a new reader wait behind an earlier writer (no writer starvation)", {
      skip: shared() || fifo(),
    }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const r1 = await a!.lock("ws").acquire({ mode: "shared" });
      const log = new OrderLog();
      const writer = b!
        .lock("ws")
        .acquire()
        .then((h) => {
          log.add("writer");
          return h;
        });
      await waitForWaiters(a!, "ws", 1);
      assert.equal(await c!.lock("ws").tryAcquire({ mode: "shared" }), null);
      const reader = c!
        .lock("ws")
        .acquire({ mode: "shared" })
        .then((h) => {
          log.add("reader");
          return h;
        });
      await waitForWaiters(a!, "ws", 2);
      await r1.release();
      const w = await writer;
      await w.release();
      const r2 = await reader;
      assert.deepEqual(log.events, ["writer", "reader"]);
      await r2.release();
    });

    it("mixes readers and writers under contention without a writer overlapping anyone", {
      skip: shared(),
    }, async () => {
      const coords = await clients(ns(), 8);
      let readers = 0;
      let writers = 0;
      const violations: string[] = [];
      await Promise.all(
        coords.map(async (coord, i) => {
          for (let round = 0; round < 25; round++) {
            const mode = (i + round) % 4 === 0 ? "exclusive" : "shared";
            const h = await coord.lock("mix").acquire({ mode, timeoutMs: 60_000 });
            if (mode === "exclusive") writers++;
            else readers++;
            if (writers > 1 || (writers === 1 && readers > 0)) violations.push(`writers=${writers} readers=${readers}`);
            await interleave(round % 2);
            if (mode === "exclusive") writers--;
            else readers--;
            await h.release();
          }
        }),
      );
      assert.deepEqual(violations, []);
    });

    it("upgrades a shared lock once the other readers leave, with a new token", { skip: shared() }, async () => {
      const [a, b] = await clients(ns(), 2);
      const ra = await a!.lock("up").acquire({ mode: "shared" });
      const rb = await b!.lock("up").acquire({ mode: "shared" });
      const upgrading = ra.upgrade();
      assert.equal(await settlesWithin(upgrading, 50), false, "upgrade waits for the other reader");
      await rb.release();
      await upgrading;
      assert.equal(ra.mode, "exclusive");
      assert.ok(ra.token > rb.token);
      assert.equal(await b!.lock("up").tryAcquire({ mode: "shared" }), null);
      await ra.release();
    });

    it("puts a pending upgrade ahead of queued writers", { skip: shared() }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const ra = await a!.lock("ahead").acquire({ mode: "shared" });
      const rb = await b!.lock("ahead").acquire({ mode: "shared" });
      const log = new OrderLog();
      const writer = c!
        .lock("ahead")
        .acquire()
        .then((h) => {
          log.add("writer");
          return h;
        });
      await waitForWaiters(a!, "ahead", 1);
      const upgrading = ra.upgrade().then(() => log.add("upgrade"));
      await rb.release();
      await upgrading;
      await ra.release();
      const w = await writer;
      assert.deepEqual(log.events, ["upgrade", "writer"]);
      assert.ok(w.token > ra.token);
      await w.release();
    });

    it("answers two concurrent upgrades with one DeadlockError instead of hanging", { skip: shared() }, async () => {
      const [a, b] = await clients(ns(), 2);
      const ra = await a!.lock("dl").acquire({ mode: "shared" });
      const rb = await b!.lock("dl").acquire({ mode: "shared" });
      const outcomes = [ra, rb].map((h) =>
        h.upgrade({ timeoutMs: 30_000 }).then(
          () => ({ h, ok: true as const }),
          (error: unknown) => ({ h, ok: false as const, error }),
        ),
      );
      // Whichever is refused is refused at once; the other waits for the loser to leave.
      const first = await Promise.race(outcomes);
      assert.equal(first.ok, false, "the first to settle must be the refused upgrade");
      assert.ok(!first.ok && first.error instanceof DeadlockError, String(!first.ok && first.error));
      assert.equal(first.h.mode, "shared");
      await first.h.release();
      const [x, y] = await Promise.all(outcomes);
      const winner = x!.ok ? x! : y!;
      assert.ok(winner.ok, "the other upgrade completes once the loser released");
      assert.equal(winner.h.mode, "exclusive");
      await winner.h.release();
    });

    it("lets the deadlock loser keep its shared lock and the winner finish after it leaves", {
      skip: shared(),
    }, async () => {
      const [a, b] = await clients(ns(), 2);
      const ra = await a!.lock("dl2").acquire({ mode: "shared" });
      const rb = await b!.lock("dl2").acquire({ mode: "shared" });
      // Sent at once from two clients, the upgrades may reach a server in either order:
      // whichever comes second is the loser.
      const upgrades = [ra.upgrade(), rb.upgrade()];
      const outcomes = upgrades.map((p, index) =>
        p.then(
          () => ({ index, kind: "upgraded" }),
          (error: unknown) => (error instanceof DeadlockError ? { index, kind: "deadlock" } : Promise.reject(error)),
        ),
      );
      const first = await Promise.race(outcomes);
      assert.equal(first.kind, "deadlock", "the second upgrader is refused at once; the first waits for it to leave");
      const [loser, winner] = first.index === 0 ? [ra, rb] : [rb, ra];
      const winning = upgrades[1 - first.index]!;
      assert.equal(loser.held, true);
      assert.equal(loser.mode, "shared");
      assert.equal(await settlesWithin(winning, 50), false);
      await loser.release();
      await winning;
      assert.equal(winner.mode, "exclusive");
      await winner.release();
    });

    it("downgrades at once and lets waiting readers in, not writers", { skip: shared() }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const w = await a!.lock("down").acquire();
      const reader = b!.lock("down").acquire({ mode: "shared" });
      await waitForWaiters(a!, "down", 1);
      const token = w.token;
      await w.downgrade();
      assert.equal(w.mode, "shared");
      assert.equal(w.token, token, "downgrade keeps the token");
      const r = await reader;
      assert.equal(await c!.lock("down").tryAcquire(), null, "no writer while readers hold");
      await r.release();
      await w.release();
    });

    it("refuses to upgrade an exclusive lock or downgrade a shared one", { skip: shared() }, async () => {
      const [a] = await clients(ns(), 1);
      const w = await a!.lock("bad").acquire();
      await assert.rejects(w.upgrade(), InvalidStateError);
      await w.release();
      const r = await a!.lock("bad").acquire({ mode: "shared" });
      await assert.rejects(r.downgrade(), InvalidStateError);
      await r.release();
      await assert.rejects(r.upgrade(), InvalidStateError, "no upgrade after release");
    });

    it("ends a pending upgrade with InvalidStateError when its lock is released", { skip: shared() }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const ra = await a!.lock("ru").acquire({ mode: "shared" });
      const rb = await b!.lock("ru").acquire({ mode: "shared" });
      // The timeout only turns a hang into a clear failure (TimeoutError instead).
      const upgrading = ra.upgrade({ timeoutMs: 10_000 });
      assert.equal(await settlesWithin(upgrading, 50), false, "the upgrade waits for the other reader");
      await ra.release();
      await assert.rejects(upgrading, InvalidStateError);
      await rb.release();
      const w = await c!.lock("ru").tryAcquire();
      assert.ok(w, "nothing is left behind by the ended upgrade");
      await w.release();
    });

    it("cancels a pending upgrade and keeps the shared lock", { skip: shared() }, async () => {
      const [a, b, c] = await clients(ns(), 3);
      const ra = await a!.lock("cu").acquire({ mode: "shared" });
      const rb = await b!.lock("cu").acquire({ mode: "shared" });
      await assert.rejects(ra.upgrade({ timeoutMs: 100 }), TimeoutError);
      assert.equal(ra.mode, "shared");
      const rc = await c!.lock("cu").tryAcquire({ mode: "shared" });
      assert.ok(rc, "readers may enter again once the upgrade is withdrawn");
      await Promise.all([ra.release(), rb.release(), rc.release()]);
    });
  });
}
