/** `coord.namespaces()`: where else something is live, for operators (`baton status`). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UnsupportedError } from "../../src/index.js";
import type { SuiteContext } from "./context.js";
import { waitFor } from "./helpers.js";

/** Registers the namespace-listing tests (skipped where the backend cannot list them). */
export function namespacesSuite(ctx: SuiteContext): void {
  describe("namespaces", () => {
    it("lists the namespaces that hold locks, waiters or records, and forgets them when emptied", async (t) => {
      const [first, second, empty] = [ctx.ns(), ctx.ns(), ctx.ns()];
      const a = await ctx.client(first);
      const b = await ctx.client(second);
      const observer = await ctx.client(empty);
      let listed: string[];
      try {
        listed = await observer.namespaces();
      } catch (error) {
        if (error instanceof UnsupportedError) return t.skip("backend cannot list namespaces");
        throw error;
      }
      assert.ok(!listed.includes(first) && !listed.includes(second));
      const lock = await a.lock("n").acquire();
      const membership = await b.group("ng").join({});
      listed = await observer.namespaces();
      assert.ok(listed.includes(first), `${first} (a lock) is listed in ${JSON.stringify(listed)}`);
      assert.ok(listed.includes(second), `${second} (a group member) is listed`);
      assert.ok(!listed.includes(empty), "a namespace with nothing in it is not listed");
      assert.deepEqual(listed, [...listed].sort(), "sorted");
      await lock.release();
      await membership.leave();
      await waitFor(async () => {
        const now = await observer.namespaces();
        return !now.includes(first) && !now.includes(second);
      }, "emptied namespaces to disappear");
    });
  });
}
