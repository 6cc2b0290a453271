/**
 * A wait whose session is lost (a lease that expired while the process was paused, a
 * dropped connection) holds nothing, so it goes on waiting on a fresh session until its own
 * deadline: for locks, semaphore permits and campaigns alike.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Coordinator, TimeoutError } from "../../src/index.js";
import type { SuiteContext } from "./context.js";
import { waitFor } from "./helpers.js";

interface Waitable {
  readonly name: string;
  readonly section: "locks" | "semaphores" | "elections";
  /** Takes it, so that the other client must wait. */
  take(coord: Coordinator, timeoutMs?: number): Promise<{ token: bigint; held: boolean; free(): Promise<void> }>;
}

const waitables: readonly Waitable[] = [
  {
    name: "lock acquire",
    section: "locks",
    take: async (c, timeoutMs) => {
      const h = await c.lock("sw").acquire({ timeoutMs });
      return { token: h.token, held: h.held, free: async () => void (await h.release()) };
    },
  },
  {
    name: "semaphore acquire",
    section: "semaphores",
    take: async (c, timeoutMs) => {
      const h = await c.semaphore("sw", { limit: 1 }).acquire({ timeoutMs });
      return { token: h.token, held: h.held, free: async () => void (await h.release()) };
    },
  },
  {
    name: "campaign",
    section: "elections",
    take: async (c, timeoutMs) => {
      const l = await c.election("sw").campaign(c.memberId, { timeoutMs });
      return { token: l.token, held: l.held, free: () => l.resign() };
    },
  },
];

/** The session ids of the waiters (candidates) on "sw", as `observer` sees them. */
async function waiterSessions(observer: Coordinator, section: Waitable["section"]): Promise<string[]> {
  const info = await observer.inspect();
  if (section === "elections")
    return info.elections.find((e) => e.id === "sw")?.candidates.map((c) => c.sessionId) ?? [];
  return info[section].find((l) => l.name === "sw")?.waiters.map((w) => w.sessionId) ?? [];
}

/** Registers the session-loss-while-waiting tests. */
export function sessionWaitSuite(ctx: SuiteContext): void {
  describe("a wait whose session is lost", () => {
    for (const w of waitables) {
      it(`${w.name}: goes on waiting on a fresh session and is granted before its timeout`, async () => {
        const namespace = ctx.ns();
        const holder = await ctx.client(namespace);
        const waiter = await ctx.client(namespace, { ttlMs: ctx.shortTtlMs });
        const held = await w.take(holder);
        const first = await waiter.openSession();
        const waiting = w.take(waiter, 120_000);
        let settled = false;
        waiting.then(
          () => (settled = true),
          () => (settled = true),
        );
        await waitFor(async () => (await waiterSessions(holder, w.section)).includes(first.id), "the waiter to queue");
        await ctx.loseSession(waiter);
        await waitFor(() => first.signal.aborted, "the waiter's session to be lost", 60_000);
        // Queued again on a new session: the old one's place is gone, the wait is not.
        await waitFor(
          async () => {
            const sessions = await waiterSessions(holder, w.section);
            return sessions.length === 1 && sessions[0] !== first.id;
          },
          "the waiter to queue again on a fresh session",
          60_000,
        );
        assert.equal(settled, false, "the wait must not end with its session");
        assert.notEqual(waiter.session?.id, first.id);
        await held.free();
        const got = await waiting;
        assert.ok(got.held, "granted on the fresh session");
        assert.ok(got.token > held.token, "with a higher token than the previous holder's");
        await got.free();
      });
    }

    it("still times out at its own deadline, counted from the first attempt", async () => {
      const namespace = ctx.ns();
      const holder = await ctx.client(namespace);
      const waiter = await ctx.client(namespace, { ttlMs: ctx.shortTtlMs });
      const held = await holder.lock("sw").acquire();
      const first = await waiter.openSession();
      // Long enough for the loss (one TTL after the keep-alives stop) and the new queueing to
      // happen first, on a slow machine too; the test checks that they did.
      const timeoutMs = ctx.shortTtlMs * 3;
      const started = performance.now();
      const waiting = waiter.lock("sw").acquire({ timeoutMs });
      const outcome = waiting.then(
        () => "granted",
        (error: unknown) => error,
      );
      await waitFor(async () => (await waiterSessions(holder, "locks")).includes(first.id), "the waiter to queue");
      await ctx.loseSession(waiter);
      await waitFor(() => first.signal.aborted, "the waiter's session to be lost", 60_000);
      const lostAfter = performance.now() - started;
      assert.ok(lostAfter < timeoutMs, `the session was lost after ${lostAfter} ms, past the ${timeoutMs} ms timeout`);
      const error = await outcome;
      const elapsed = performance.now() - started;
      assert.ok(error instanceof TimeoutError, `expected a TimeoutError, got ${String(error)}`);
      assert.equal(error.timeoutMs, timeoutMs, "the error names the caller's timeout");
      assert.ok(elapsed >= timeoutMs - 50, `timed out after ${elapsed} ms, before its ${timeoutMs} ms`);
      await waitFor(async () => (await waiterSessions(holder, "locks")).length === 0, "no waiter left");
      await held.release();
    });
  });
}
