/**
 * Partitioner: owners agreed across members; only the leaver's keys move. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HashRing, type Partitioner } from "../../src/index.js";
import { take, waitFor } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function partitionerSuite(context: RecipeContext): void {
  const { clients, ns } = context;

  describe("partitioner", () => {
    it("agrees on owners across members and moves only the leaver's keys", async () => {
      const coords = await clients(ns(), 4);
      const parts: Partitioner[] = [];
      for (const coord of coords) parts.push(await coord.partitioner("ring", { vnodes: 64 }));
      await waitFor(() => parts.every((p) => p.members.length === 4), "every partitioner to see 4 members");
      const keys = Array.from({ length: 2000 }, (_, i) => `obj-${i}`);
      const before = new Map(keys.map((k) => [k, parts[0]!.owners(k)[0]!]));
      for (const k of keys) {
        assert.equal(parts.filter((p) => p.isMine(k)).length, 1, `exactly one owner of ${k}`);
        for (const p of parts) assert.deepEqual(p.owners(k, 2), parts[0]!.owners(k, 2));
      }
      const changes = parts[1]!.changes();
      const leaver = coords[3]!.memberId;
      await parts[3]!.close();
      const [change] = await take(changes, 1);
      assert.deepEqual(change?.left, [leaver]);
      await waitFor(() => parts.slice(0, 3).every((p) => p.members.length === 3), "the others to see the leave");
      for (const k of keys) {
        const now = parts[0]!.owners(k)[0]!;
        if (before.get(k) !== leaver) assert.equal(now, before.get(k), `key ${k} moved although its owner stayed`);
        else assert.notEqual(now, leaver);
      }
      await changes.return?.();
    });

    it("HashRing balances keys and moves about 1/N of them when a member joins", () => {
      const ring = new HashRing();
      for (let i = 0; i < 5; i++) ring.set(`node-${i}`);
      const keys = Array.from({ length: 20_000 }, (_, i) => `key-${i}`);
      const owner = new Map(keys.map((k) => [k, ring.owners(k)[0]!]));
      const counts = new Map<string, number>();
      for (const o of owner.values()) counts.set(o, (counts.get(o) ?? 0) + 1);
      for (const [node, count] of counts) {
        assert.ok(count > 4000 * 0.75 && count < 4000 * 1.25, `${node} owns ${count} of 20000 (ideal 4000)`);
      }
      ring.set("node-5");
      let moved = 0;
      for (const k of keys) {
        const now = ring.owners(k)[0];
        if (now !== owner.get(k)) {
          moved++;
          assert.equal(now, "node-5", "keys may only move to the new member");
        }
      }
      const share = moved / keys.length;
      assert.ok(share > 0.1 && share < 0.25, `moved ${share} of keys (ideal 1/6)`);
      // Weights: a member of weight 3 owns about three times as much.
      const weighted = new HashRing();
      weighted.set("light", 1);
      weighted.set("heavy", 3);
      const heavy = keys.filter((k) => weighted.owners(k)[0] === "heavy").length / keys.length;
      assert.ok(heavy > 0.65 && heavy < 0.85, `heavy owns ${heavy} (ideal 0.75)`);
      assert.deepEqual(weighted.owners("k", 5).sort(), ["heavy", "light"]);
    });
  });
}
