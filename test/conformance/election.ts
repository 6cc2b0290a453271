/**
 * Election: one leader at a time, in campaign order, passed on when the leader is lost. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Leader } from "../../src/index.js";
import { OrderLog, interleave, observed, take, waitFor } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function electionSuite(context: RecipeContext): void {
  const { client, clients, ns, loseSession, target } = context;

  describe("election", () => {
    it("has one leader at a time, in campaign order, with increasing tokens", async () => {
      const coords = await clients(ns(), 5);
      const observer = coords[0]!.election("e").observe();
      assert.deepEqual(await take(observer, 1), [null]);
      let leaders = 0;
      const violations: string[] = [];
      const won: string[] = [];
      const tokens: bigint[] = [];
      await Promise.all(
        coords.map(async (coord) => {
          const leadership = await coord.election("e").campaign({ id: coord.memberId }, { timeoutMs: 60_000 });
          leaders++;
          if (leaders > 1) violations.push(`${leaders} leaders`);
          won.push(coord.memberId);
          tokens.push(leadership.token);
          const current = await coord.election("e").leader();
          assert.equal(current?.memberId, coord.memberId);
          assert.deepEqual(current?.value, { id: coord.memberId });
          await interleave(2);
          leaders--;
          await leadership.resign();
        }),
      );
      assert.deepEqual(violations, []);
      assert.equal(won.length, 5);
      for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!);
      // The observer saw every leader, in order (with nulls in between).
      const seen = (await take(observer, 10)).filter((l): l is Leader => l !== null).map((l) => l.memberId);
      assert.deepEqual(seen, won);
      await observer.return?.();
    });

    it("passes leadership on when the leader's session is lost, signalling it first", async () => {
      const namespace = ns();
      const a = await client(namespace, { ttlMs: target.shortTtlMs });
      const b = await client(namespace);
      const log = new OrderLog();
      const la = await a.election("x").campaign("a");
      la.signal.addEventListener("abort", () => log.add("a-lost"));
      const waiting = observed(
        b
          .election("x")
          .campaign("b")
          .then((l) => {
            log.add("b-leads");
            return l;
          }),
      );
      await waitFor(
        async () => (await b.inspect()).elections.some((e) => e.id === "x" && e.candidates.length === 1),
        "b to be a candidate",
      );
      await loseSession(a);
      const lb = await waiting;
      assert.ok(log.indexOf("a-lost") < log.indexOf("b-leads"));
      assert.ok(lb.token > la.token);
      assert.equal((await b.election("x").leader())?.memberId, b.memberId);
      await lb.proclaim("b2");
      assert.deepEqual((await a.election("x").leader())?.value, "b2");
      await lb.resign();
      assert.equal(await b.election("x").leader(), null);
    });
  });
}
