/**
 * Groups: join, update, leave, watch, and members whose session is lost. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type GroupEvent, InvalidStateError } from "../../src/index.js";
import { take } from "./helpers.js";
import type { RecipeContext } from "./context.js";

export function groupsSuite(context: RecipeContext): void {
  const { client, clients, ns, loseSession, target } = context;

  describe("groups", () => {
    it("pushes join, update and leave events and lists members", async () => {
      const namespace = ns();
      const [a, b, c] = await clients(namespace, 3);
      await a!.group("g").join({ role: "api" });
      const events = b!.group("g").watch();
      const [existing] = await take(events, 1);
      assert.deepEqual(existing, {
        type: "join",
        existing: true,
        member: {
          memberId: a!.memberId,
          capabilities: { role: "api" },
          joinedAt: (existing as { member: { joinedAt: number } }).member.joinedAt,
        },
      });
      const membership = await c!.group("g").join({ role: "worker" });
      await c!.group("g").update({ role: "worker", load: 3 });
      await membership.leave();
      const seen = await take(events, 3);
      assert.deepEqual(
        seen.map((e: GroupEvent) => [e.type, e.type === "leave" ? e.memberId : e.member.memberId]),
        [
          ["join", c!.memberId],
          ["update", c!.memberId],
          ["leave", c!.memberId],
        ],
      );
      assert.deepEqual((seen[1] as { member: { capabilities: unknown } }).member.capabilities, {
        role: "worker",
        load: 3,
      });
      const members = await b!.group("g").members();
      assert.deepEqual(
        members.map((m) => [m.memberId, m.capabilities]),
        [[a!.memberId, { role: "api" }]],
      );
      await events.return?.();
    });

    it("removes a member whose session is lost, and tells watchers", async () => {
      const namespace = ns();
      const a = await client(namespace, { ttlMs: target.shortTtlMs });
      const b = await client(namespace);
      const membership = await a.group("gl").join();
      const events = b.group("gl").watch();
      await take(events, 1);
      await loseSession(a);
      const [left] = await take(events, 1, 30_000);
      assert.deepEqual(left, { type: "leave", memberId: a.memberId });
      assert.ok(membership.signal.aborted);
      assert.deepEqual(await b.group("gl").members(), []);
      await events.return?.();
    });

    it("refuses joining twice and leaving when not a member", async () => {
      const [a] = await clients(ns(), 1);
      const group = a!.group("twice");
      await assert.rejects(group.leave(), InvalidStateError);
      await assert.rejects(group.update({}), InvalidStateError);
      await group.join();
      await assert.rejects(group.join(), InvalidStateError);
      await group.leave();
      await group.join();
      await group.leave();
    });

    it("ends a watch when its signal aborts or the loop breaks", async () => {
      const [a] = await clients(ns(), 1);
      const controller = new AbortController();
      const events = a!.group("w").watch({ signal: controller.signal });
      controller.abort();
      assert.deepEqual(await events.next(), { value: undefined, done: true });
      let count = 0;
      await a!.group("w").join();
      for await (const event of a!.group("w").watch()) {
        count++;
        assert.equal(event.type, "join");
        break;
      }
      assert.equal(count, 1);
    });
  });
}
