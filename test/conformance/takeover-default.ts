/**
 * Takeover tracking by default: a plain `acquire()` (no takeover options) writes its
 * record with the grant and deletes it with a clean release, so its loss (a SIGKILLed
 * holder process where the backend works across processes) is reported to the next
 * holder; `takeover: false` opts out as documented. Skipped on a backend without cells.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SuiteContext } from "./context.js";
import { takeoverFixture } from "./doomed.js";
import { waitForWaiters } from "./helpers.js";

/**
 * The backends that track a plain exclusive `acquire()` by default: those that write the
 * record in the grant's own step (Driver.nativeRecords). On the others a plain holding is
 * untracked unless asked for (`takeover: true`).
 */
const TRACKED_BY_DEFAULT = new Set(["memory", "file", "redis", "postgres", "zookeeper"]);

/** Registers the default-tracking takeover tests. */
export function takeoverDefaultSuite(suite: SuiteContext, url: () => string): void {
  const { client, doomed, needCells } = takeoverFixture(suite, url);
  const byDefault = (coord: { backend: string }) => TRACKED_BY_DEFAULT.has(coord.backend);

  describe("takeover by default", () => {
    it("a killed plain acquire() holder is handed to the next plain acquire(), whose token is higher", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const a = await doomed(ns, "plain", {});
      const b = await client(ns);
      const record = (await b.inspect()).takeovers?.find((r) => r.name === "plain");
      if (!byDefault(b)) {
        // Untracked unless asked for: no record, so nothing is handed on.
        assert.equal(record, undefined, `${b.backend} tracks a plain acquire() only when asked`);
        const next = b.lock("plain").acquire({ timeoutMs: 60_000 });
        await waitForWaiters(b, "plain", 1);
        await a.kill();
        const handle = await next;
        assert.equal(handle.takeover, null);
        await handle.release();
        return;
      }
      assert.deepEqual({ state: record?.state, token: record?.token }, { state: "held", token: a.token });
      const next = b.lock("plain").acquire({ timeoutMs: 60_000 });
      await waitForWaiters(b, "plain", 1);
      await a.kill();
      const handle = await next;
      const { memberId, token, fenceInfo, lockDelayMs } = handle.takeover ?? assert.fail("no takeover reported");
      assert.deepEqual(
        { memberId, token, fenceInfo, lockDelayMs },
        { memberId: a.memberId, token: a.token, fenceInfo: null, lockDelayMs: 0 },
      );
      assert.ok(handle.token > a.token, `new token ${handle.token} must exceed ${a.token}`);
      await handle.release();
      const after = await b.lock("plain").acquire({ timeoutMs: 10_000 });
      assert.equal(after.takeover, null, "the takeover was handed on once; the release ended it");
      await after.release();
    });

    it("a clean release, tryAcquire() or blocking, leaves takeover: null and no record", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const [a, b] = [await client(ns), await client(ns)];
      const track = byDefault(a) ? {} : { takeover: true };
      const first = await a.lock("clean").acquire(track);
      assert.equal(first.takeover, null, "the lock was free");
      assert.equal((await a.inspect()).takeovers?.find((r) => r.name === "clean")?.state, "held");
      const waiting = b.lock("clean").acquire({ ...track, timeoutMs: 10_000 });
      await waitForWaiters(b, "clean", 1);
      assert.equal((await first.release()).status, "released");
      const second = await waiting;
      assert.equal(second.takeover, null, "a waiter granted after a release");
      await second.release();
      const tried = (await a.lock("clean").tryAcquire(track)) ?? assert.fail("free");
      assert.equal(tried.takeover, null);
      await tried.release();
      assert.deepEqual((await a.inspect()).takeovers, [], "released holdings leave no record");
    });

    it("takeover: false writes nothing and reads nothing; the next tracked acquirer still sees the older loss", async (t) => {
      if (!(await needCells(t))) return;
      const ns = suite.ns();
      const untracked = await doomed(ns, "opt", { takeover: false });
      const b = await client(ns);
      assert.equal(
        (await b.inspect()).takeovers?.find((r) => r.name === "opt"),
        undefined,
        "no record",
      );
      await untracked.kill();
      const next = await b.lock("opt").acquire({ timeoutMs: 60_000 });
      assert.equal(next.takeover, null, "an untracked holding leaves nothing to hand on");
      await next.release();
      const track = byDefault(b) ? {} : { takeover: true };
      const lost = await doomed(ns, "opt", track);
      await lost.kill();
      const blind = await b.lock("opt").acquire({ takeover: false, timeoutMs: 60_000 });
      assert.equal(blind.takeover, null, "an untracked acquirer reads nothing");
      assert.equal((await b.inspect()).takeovers?.find((r) => r.name === "opt")?.token, lost.token, "the record stays");
      await blind.release();
      const tracked = await b.lock("opt").acquire({ ...track, timeoutMs: 10_000 });
      assert.equal(tracked.takeover?.token, lost.token, "handed the older lost holding");
      await tracked.release();
    });
  });
}
