/** `JSON.stringify(await coord.inspect())` works as it is and gives the stable JSON form. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { inspectionToJson } from "../../src/index.js";
import type { SuiteContext } from "./context.js";

/** Registers the inspection-JSON test. */
export function inspectJsonSuite(ctx: SuiteContext): void {
  describe("inspection as JSON", () => {
    it("stringifies with tokens as decimal strings, the same as inspectionToJson and status --json", async () => {
      const namespace = ctx.ns();
      const a = await ctx.client(namespace);
      const lock = await a.lock("j").acquire();
      const permit = await a.semaphore("js", { limit: 2 }).acquire();
      await a.group("jg").join({ zone: "z" });
      const leadership = await a.election("je").campaign({ url: "http://a" });
      const info = await a.inspect();
      const parsed = JSON.parse(JSON.stringify(info));
      assert.deepEqual(parsed, JSON.parse(JSON.stringify(inspectionToJson(info))));
      assert.equal(parsed.version, 1);
      assert.equal(parsed.locks[0].holders[0].token, String(lock.token));
      assert.equal(BigInt(parsed.locks[0].holders[0].token), lock.token);
      assert.equal(parsed.semaphores[0].holders[0].token, String(permit.token));
      assert.equal(parsed.elections[0].leader.token, String(leadership.token));
      assert.deepEqual(parsed.groups[0].members[0].capabilities, { zone: "z" });
      // The bigint form stays on the snapshot itself, and toJSON is not an own enumerable key.
      assert.equal(info.locks[0]?.holders[0]?.token, lock.token);
      assert.equal(Object.keys(info).includes("toJSON"), false);
    });
  });
}
