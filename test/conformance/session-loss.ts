/**
 * Session loss: the holder is told before anyone else is granted, and the client recovers. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LockLostError } from "../../src/index.js";
import { OrderLog, observed, waitFor, waitForWaiters } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function sessionLossSuite(context: RecipeContext): void {
  const { client, ns, loseSession, target } = context;

  describe("session loss", () => {
    it("aborts the holder's signal before anyone else is granted the lock", async () => {
      const namespace = ns();
      const a = await client(namespace, { ttlMs: target.shortTtlMs, memberId: "a" });
      const b = await client(namespace, { memberId: "b" });
      const log = new OrderLog();
      const held = await a.lock("l").acquire();
      held.signal.addEventListener("abort", () => log.add("a-lost"));
      a.session?.signal.addEventListener("abort", () => log.add("a-session-lost"));
      const waiting = observed(
        b
          .lock("l")
          .acquire()
          .then((h) => {
            log.add("b-granted");
            return h;
          }),
      );
      await waitForWaiters(b, "l", 1);
      await loseSession(a);
      const next = await waiting;
      assert.ok(log.indexOf("a-lost") < log.indexOf("b-granted"), `order: ${log.events.join(", ")}`);
      assert.ok(log.indexOf("a-session-lost") < log.indexOf("b-granted"));
      assert.ok(held.signal.reason instanceof LockLostError);
      assert.ok(next.token > held.token, "the next holder's token must be higher");
      assert.equal((await held.release()).status, "lost");
      await next.release();
    });

    it("recovers with a new session by itself after a loss", async () => {
      const namespace = ns();
      const a = await client(namespace, { ttlMs: target.shortTtlMs });
      const first = await a.lock("rec").acquire();
      const firstSession = a.session;
      await loseSession(a);
      await waitFor(() => first.signal.aborted, "the lost signal");
      assert.ok(firstSession?.signal.aborted);
      const second = await a.lock("rec").acquire({ timeoutMs: 30_000 });
      assert.notEqual(a.session?.id, firstSession?.id);
      assert.ok(second.token > first.token);
      await second.release();
    });
  });
}
