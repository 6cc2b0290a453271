/**
 * Inspection: holders, waiters in order, semaphores, groups and leaders. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { replacer, waitForWaiters } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function inspectionSuite(context: RecipeContext): void {
  const { guarantees, client, clients, ns } = context;

  describe("introspection", () => {
    it("lists holders, waiters in order, semaphores, groups and leaders", async () => {
      const namespace = ns();
      const [a, b, c] = await clients(namespace, 3);
      const h = await a!.lock("i").acquire();
      const w1 = b!.lock("i").acquire();
      await waitForWaiters(a!, "i", 1);
      const w2 = c!.lock("i").acquire({ mode: guarantees.sharedLocks ? "shared" : "exclusive" });
      await waitForWaiters(a!, "i", 2);
      const p = await a!.semaphore("sem", { limit: 4 }).acquire();
      await b!.group("grp").join({ zone: "z1" });
      const lead = await c!.election("el").campaign({ url: "http://c" });
      const info = await a!.inspect();
      assert.equal(info.backend, a!.backend);
      assert.equal(info.namespace, namespace);
      const lock = info.locks.find((l) => l.name === "i");
      assert.ok(lock, JSON.stringify(info, replacer));
      assert.equal(lock.holders.length, 1);
      assert.equal(lock.holders[0]!.memberId, a!.memberId);
      assert.equal(lock.holders[0]!.mode, "exclusive");
      assert.equal(lock.holders[0]!.token, h.token);
      assert.ok(Math.abs(lock.holders[0]!.since - h.acquiredAt) < 5000);
      assert.deepEqual(
        lock.waiters.map((x) => x.memberId),
        [b!.memberId, c!.memberId],
      );
      assert.ok(lock.waiters.every((x) => x.waitingMs >= 0 && x.since <= info.at));
      const sem = info.semaphores.find((s) => s.name === "sem");
      assert.equal(sem?.limit, 4);
      assert.equal(sem?.holders[0]?.token, p.token);
      assert.deepEqual(
        info.groups.find((g) => g.id === "grp")?.members.map((m) => [m.memberId, m.capabilities]),
        [[b!.memberId, { zone: "z1" }]],
      );
      const el = info.elections.find((e) => e.id === "el");
      assert.equal(el?.leader?.memberId, c!.memberId);
      assert.deepEqual(el?.leader?.value, { url: "http://c" });
      assert.equal(el?.leader?.token, lead.token);
      // Another namespace sees none of it.
      const other = await client(ns());
      const empty = await other.inspect();
      assert.deepEqual([empty.locks, empty.semaphores, empty.groups, empty.elections], [[], [], [], []]);
      await h.release();
      await (await w1).release();
      await (await w2).release();
      await p.release();
      await lead.resign();
    });
  });
}
