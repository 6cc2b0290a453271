/**
 * Takeover on every backend with durable records (cells): fence info handed to the next
 * holder of a lost lock, the onTakeover hook, lock delay, revoke, bad input. Where the
 * backend works across processes the lost holder is a real process (test/harness/holder.ts)
 * that is SIGKILLed or revoked; on the memory backend (one process) it is a coordinator
 * whose session is lost. Skipped, by capability, on a backend without cells.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CannotRevokeError,
  type Coordinator,
  FenceFailedError,
  InvalidArgumentError,
  MAX_FENCE_INFO_BYTES,
  type Takeover,
  TimeoutError,
  UnsupportedError,
} from "../../src/index.js";
import type { SuiteContext } from "./context.js";
import { takeoverFixture } from "./doomed.js";
import { waitFor, waitForWaiters } from "./helpers.js";

/** Registers the takeover conformance tests. */
export function takeoverSuite(suite: SuiteContext, url: () => string): void {
  const { client, doomed, needCells } = takeoverFixture(suite, url);

  describe("takeover", () => {
    it("a killed holder's fence info and token are handed to the next holder, whose token is higher", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const fenceInfo = { host: "nova-3", vsphereSession: "52a1-f00d", pids: [41, 42] };
      const a = await doomed(ns, "image-7", { fenceInfo });
      const b = await client(ns);
      const inspection = await b.inspect();
      const record = inspection.takeovers?.find((r) => r.name === "image-7");
      assert.deepEqual(
        { state: record?.state, token: record?.token, fenceInfo: record?.fenceInfo },
        { state: "held", token: a.token, fenceInfo },
      );
      const next = b.lock("image-7").acquire({ takeover: true, timeoutMs: 60_000 });
      await waitForWaiters(b, "image-7", 1);
      await a.kill();
      const handle = await next;
      assert.deepEqual(pick(handle.takeover), { memberId: a.memberId, token: a.token, fenceInfo, lockDelayMs: 0 });
      assert.ok(handle.token > a.token, `new token ${handle.token} must exceed ${a.token}`);
      await handle.release();
    });

    it("after a clean release or close, the next holder's takeover is null", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const [a, b] = [await client(ns), await client(ns)];
      const first = await a.lock("r").acquire({ fenceInfo: { n: 1 }, lockDelayMs: 60_000 });
      assert.equal(first.takeover, null, "the lock was free");
      assert.equal((await first.release()).status, "released");
      // Released: not delayed, although the holder asked for a minute of lock delay.
      const second = await b.lock("r").acquire({ fenceInfo: { n: 2 }, lockDelayMs: 60_000, timeoutMs: 10_000 });
      assert.equal(second.takeover, null);
      await b.close();
      const third = await a.lock("r").acquire({ takeover: true, timeoutMs: 10_000 });
      assert.equal(third.takeover, null, "close() is a clean release");
      await third.release();
      assert.deepEqual((await a.inspect()).takeovers, [], "a released holding leaves no record");
    });

    it("runs the hook once, before acquire() resolves, with the previous holding", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const a = await doomed(ns, "h", { fenceInfo: { pid: 4242 } });
      await a.end();
      const b = await client(ns);
      const calls: Takeover[] = [];
      let resolved = false;
      const handle = await b.lock("h").acquire({
        timeoutMs: 60_000,
        onTakeover: async (previous, signal) => {
          assert.equal(signal.aborted, false);
          await new Promise((resolve) => setImmediate(resolve));
          assert.equal(resolved, false, "the hook finishes before acquire() resolves");
          calls.push(previous);
        },
      });
      resolved = true;
      assert.equal(calls.length, 1);
      assert.deepEqual(calls[0], handle.takeover);
      assert.deepEqual(pick(calls[0]), {
        memberId: a.memberId,
        token: a.token,
        fenceInfo: { pid: 4242 },
        lockDelayMs: 0,
      });
      await handle.release();
      const again = await b.lock("h").acquire({ onTakeover: () => assert.fail("no takeover after a release") });
      assert.equal(again.takeover, null);
      await again.release();
    });

    it("a failing hook rejects with FenceFailedError, holds nothing, and the next acquirer fences again", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const a = await doomed(ns, "f", { fenceInfo: "stonith:rack4" });
      await a.end();
      const b = await client(ns);
      const cause = new Error("the PDU did not answer");
      const failed = await b
        .lock("f")
        .acquire({ timeoutMs: 60_000, onTakeover: () => Promise.reject(cause) })
        .then(
          () => assert.fail("acquire() must reject"),
          (error: unknown) => error,
        );
      assert.ok(failed instanceof FenceFailedError, String(failed));
      assert.equal(failed.cause, cause);
      assert.equal(failed.previousToken, a.token);
      const after = await b.inspect();
      assert.deepEqual(after.locks.find((l) => l.name === "f")?.holders ?? [], [], "nothing is held");
      assert.equal(after.takeovers?.find((r) => r.name === "f")?.state, "lost", "the record waits to be fenced");
      const c = await client(ns);
      const fenced: unknown[] = [];
      const handle = await c.lock("f").acquire({ timeoutMs: 10_000, onTakeover: (p) => void fenced.push(p.fenceInfo) });
      assert.deepEqual(fenced, ["stonith:rack4"]);
      assert.equal(handle.takeover?.token, a.token);
      await handle.release();
    });

    it("a lost holding is not handed on before its lock delay; tryAcquire sees it busy meanwhile", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const delayMs = 1500;
      const a = await doomed(ns, "d", { fenceInfo: { a: 1 }, lockDelayMs: delayMs });
      const b = await client(ns);
      const next = b.lock("d").acquire({ takeover: true, timeoutMs: 60_000 });
      await waitForWaiters(b, "d", 1);
      const killedAt = Date.now();
      await a.kill();
      let delayedUntil: number | null | undefined;
      await waitFor(async () => {
        delayedUntil = (await b.inspect()).takeovers?.find((r) => r.name === "d")?.delayedUntil;
        return typeof delayedUntil === "number";
      }, "inspect() to show the lock delay");
      assert.ok(Number(delayedUntil) >= killedAt + delayMs, "the delay starts no earlier than the loss");
      const c = await client(ns);
      assert.equal(await c.lock("d").tryAcquire({ takeover: true }), null, "nobody gets it during the delay");
      const handle = await next;
      const grantedAt = Date.now();
      assert.ok(grantedAt - killedAt >= delayMs, `handed on ${grantedAt - killedAt} ms after the kill`);
      assert.equal(handle.takeover?.lockDelayMs, delayMs);
      await handle.release();
    });

    it("a lock delay counts against timeoutMs: a timeout during it holds nothing", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const a = await doomed(ns, "dt", { lockDelayMs: 60_000 });
      await a.end();
      const b = await client(ns);
      await waitFor(async () => {
        // A try answers null while the lost holding is still held at the backend, and also
        // once it is free, when it starts the delay instead of taking the lock.
        assert.equal(await b.lock("dt").tryAcquire({ takeover: true }), null);
        return typeof (await b.inspect()).takeovers?.find((r) => r.name === "dt")?.delayedUntil === "number";
      }, "the lock delay to begin");
      await assert.rejects(b.lock("dt").acquire({ takeover: true, timeoutMs: 300 }), TimeoutError);
      const info = await b.inspect();
      assert.deepEqual(info.locks.find((l) => l.name === "dt")?.holders ?? [], []);
    });

    it("revoke ends a stuck holder: its signal fires and the next holder is handed a takeover", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      // A holder slow to hear anything (its event loop busy in bursts): a revoke that frees
      // its lock before it has learnt the loss lets the waiter in first.
      const a = await doomed(ns, "rv", { fenceInfo: { vm: "i-0042" } }, 200);
      const operator = await client(ns);
      if (suite.guarantees.acrossProcesses && a.pid !== undefined && operator.backend === "file") {
        const refused = await operator.revoke("rv").then(
          () => assert.fail("the file backend cannot revoke"),
          (error: unknown) => error,
        );
        assert.ok(refused instanceof CannotRevokeError, String(refused));
        assert.equal(refused.holders[0]?.pid, a.pid);
        assert.equal(refused.holders[0]?.memberId, a.memberId);
        return;
      }
      assert.deepEqual(await operator.revoke("rv", { memberId: "someone-else" }), [], "only that member's");
      // A waiter queues first: the revoke must not let it in before the holder knows.
      const waiter = await client(ns);
      let grantedAt = 0;
      const next = waiter
        .lock("rv")
        .acquire({ takeover: true, timeoutMs: 30_000 })
        .then((h) => {
          grantedAt = Date.now();
          return h;
        });
      await waitForWaiters(operator, "rv", 1);
      const revoked = await operator.revoke("rv");
      assert.deepEqual(
        revoked.map((r) => [r.memberId, r.token]),
        [[a.memberId, a.token]],
      );
      const handle = await next;
      const lostAt = await a.lost();
      assert.ok(
        lostAt > 0 && lostAt <= grantedAt,
        `the holder lost it at ${lostAt}, the waiter was granted at ${grantedAt}`,
      );
      assert.deepEqual(pick(handle.takeover), {
        memberId: a.memberId,
        token: a.token,
        fenceInfo: { vm: "i-0042" },
        lockDelayMs: 0,
      });
      await handle.release();
      assert.deepEqual(await operator.revoke("rv"), [], "nobody holds it");
    });

    it("a grant lost while its hook runs is never handed out (revoked with immediate: true meanwhile)", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const a = await doomed(ns, "lm", { fenceInfo: "lm" });
      const operator = await client(ns);
      if (operator.backend === "file") return t.skip("the file backend cannot revoke");
      await a.end();
      const b = await client(ns);
      let calls = 0;
      const outcome = await b
        .lock("lm")
        .acquire({
          timeoutMs: 30_000,
          onTakeover: async (_previous, signal) => {
            calls++;
            if (calls > 1) return;
            // The grant is taken from under the claim (ZooKeeper keeps the session then).
            await operator.revoke("lm", { memberId: b.memberId, immediate: true });
            if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve));
          },
        })
        .then(
          (handle) => handle,
          (error: unknown) => error,
        );
      if (outcome instanceof Error) {
        assert.equal(outcome.name, "LockLostError", String(outcome));
      } else {
        const handle = outcome as Awaited<ReturnType<ReturnType<Coordinator["lock"]>["acquire"]>>;
        assert.equal(handle.held, true, "acquire() resolved with a handle that is already lost");
        assert.equal(calls, 2, "a fresh grant is fenced again");
        await handle.release();
      }
    });

    it("revoke works without takeover tracking too (on any backend): the holder's signal fires, the lock is free", async () => {
      const ns = suite.ns();
      const a = await doomed(ns, "rv0", {});
      const operator = await client(ns);
      if (operator.backend === "file") {
        await assert.rejects(operator.revoke("rv0"), CannotRevokeError);
        return;
      }
      assert.deepEqual(
        (await operator.revoke("rv0")).map((r) => r.token),
        [a.token],
      );
      await a.lost();
      const handle = await operator.lock("rv0").acquire({ timeoutMs: 30_000 });
      assert.ok(handle.token > a.token);
      await handle.release();
    });

    it("without cells, takeover options are UnsupportedError (and nothing is acquired)", async (t) => {
      const coord = await client(suite.ns());
      if (coord.cellsSupported) return t.skip("backend has cells");
      await assert.rejects(coord.lock("u").acquire({ fenceInfo: 1 }), UnsupportedError);
      await assert.rejects(coord.lock("u").tryAcquire({ lockDelayMs: 5 }), UnsupportedError);
      assert.deepEqual((await coord.inspect()).locks, []);
    });

    it("refuses bad takeover input with InvalidArgumentError, before any I/O (on any backend)", async () => {
      const coord = await client(suite.ns());
      const lock = coord.lock("bad");
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const table: [string, Record<string, unknown>][] = [
        ["oversized fence info", { fenceInfo: "x".repeat(MAX_FENCE_INFO_BYTES) }],
        ["NaN in fence info", { fenceInfo: { n: Number.NaN } }],
        ["a function as fence info", { fenceInfo: () => 1 }],
        ["a bigint in fence info", { fenceInfo: { t: 1n } }],
        ["a Date as fence info", { fenceInfo: new Date(0) }],
        ["a cycle in fence info", { fenceInfo: cyclic }],
        ["a negative lock delay", { lockDelayMs: -1 }],
        ["a huge lock delay", { lockDelayMs: 10 ** 12 }],
        ["a fractional lock delay", { lockDelayMs: 1.5 }],
        ["a lock delay as text", { lockDelayMs: "5s" }],
        ["takeover as text", { takeover: "yes" }],
        ["a hook that is no function", { onTakeover: 5 }],
      ];
      if (suite.guarantees.sharedLocks) table.push(["fence info on a shared lock", { fenceInfo: 1, mode: "shared" }]);
      for (const [what, options] of table) {
        for (const call of [() => lock.acquire(options), () => lock.tryAcquire(options)]) {
          await assert.rejects(call(), InvalidArgumentError, what);
        }
      }
      assert.deepEqual((await coord.inspect()).locks, [], "nothing was acquired");
    });
  });
}

/** The parts of a takeover a test can predict. */
function pick(takeover: Takeover | null | undefined) {
  if (!takeover) return takeover;
  const { memberId, token, fenceInfo, lockDelayMs } = takeover;
  return { memberId, token, fenceInfo, lockDelayMs };
}
