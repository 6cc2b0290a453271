/**
 * Semaphores: never more holders than the limit; a mismatched limit is refused. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError, InvalidStateError } from "../../src/index.js";
import { ExclusionChecker, interleave } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function semaphoresSuite(context: RecipeContext): void {
  const { clients, ns } = context;

  describe("semaphores", () => {
    it("never exceeds its limit under contention; tokens are unique and above every earlier release", async () => {
      const coords = await clients(ns(), 10);
      const checker = new ExclusionChecker(3);
      await Promise.all(
        coords.map(async (coord) => {
          const sem = coord.semaphore("pool", { limit: 3 });
          for (let i = 0; i < 20; i++) {
            const floor = checker.floor;
            const permit = await sem.acquire({ timeoutMs: 60_000 });
            checker.enter(permit, floor);
            await interleave(1 + (i % 3));
            checker.exit();
            await permit.release();
            checker.released(permit);
          }
        }),
      );
      assert.deepEqual(checker.violations, []);
      assert.equal(checker.maxInside, 3, "the limit should actually be reached under this load");
    });

    it("tryAcquire returns null when full; a mismatched limit is refused", async () => {
      const [a, b] = await clients(ns(), 2);
      const sem = a!.semaphore("s2", { limit: 2 });
      const p1 = await sem.acquire();
      const p2 = await sem.acquire();
      assert.equal(await b!.semaphore("s2", { limit: 2 }).tryAcquire(), null);
      await assert.rejects(b!.semaphore("s2", { limit: 5 }).acquire({ timeoutMs: 1000 }), InvalidArgumentError);
      await p1.release();
      const p3 = await b!.semaphore("s2", { limit: 2 }).tryAcquire();
      assert.ok(p3);
      await assert.rejects(p3.upgrade(), InvalidStateError, "permits have no modes");
      await Promise.all([p2.release(), p3.release()]);
    });
  });
}
