import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decide, decideUpgrade, holderCount, holds } from "../src/core/grant-rule.js";
import { queueOf, ruleCases } from "./grant-rule-cases.js";

/** Entries from a list of modes ("s" shared, "x" exclusive), all with `limit`. */
const entries = (modes: string, limit = 1) =>
  modes.split(" ").map((m) => ({ mode: m === "s" ? ("shared" as const) : ("exclusive" as const), limit }));

describe("the granting rule (core/grant-rule.ts), case by case", () => {
  for (const c of ruleCases) {
    it(c.name, () => {
      const queue = queueOf(c);
      // The set-up itself is a state the rule produces: the holders hold, the waiters wait.
      assert.equal(holderCount(queue), c.held.length, "holders of the set-up");
      queue.entries.forEach((_, i) => {
        assert.equal(holds(queue, i), i < c.held.length, `entry ${i} of the set-up`);
      });
      if ("upgrade" in c.probe) {
        assert.equal(decideUpgrade(queue, c.probe.upgrade).type, c.expect);
      } else {
        const probe = { mode: c.probe.acquire, limit: c.probe.limit ?? c.limit };
        const withProbe = { ...queue, entries: [...queue.entries, probe] };
        assert.equal(decide(withProbe, queue.entries.length).type, c.expect);
      }
    });
  }
});

describe("the granting rule: what a waiter waits for", () => {
  it("a shared request names the older writers and the pending upgrade", () => {
    const queue = { entries: entries("s s x s"), upgrades: [{ holder: 0, before: 2 }] };
    assert.deepEqual(decide(queue, 3), { type: "wait", writers: [2], upgrade: true });
    assert.deepEqual(decide(queue, 1), { type: "grant" }, "a reader older than the upgrade keeps holding");
    assert.deepEqual(decideUpgrade(queue, 0), { type: "wait", holders: [1] });
  });

  it("a downgraded holder lets the readers behind it in, not the writers", () => {
    const queue = { entries: entries("s s x s") };
    assert.equal(holderCount(queue), 2);
    assert.deepEqual(decide(queue, 3), { type: "wait", writers: [2], upgrade: false });
  });

  it("of two upgrades started at once, the older holder's wins", () => {
    const queue = {
      entries: entries("s s"),
      upgrades: [
        { holder: 1, before: 2 },
        { holder: 0, before: 2 },
      ],
    };
    assert.deepEqual(decideUpgrade(queue, 1), { type: "deadlock" });
    assert.deepEqual(decideUpgrade(queue, 0), { type: "wait", holders: [1] });
  });

  it("a semaphore waiter behind a full semaphore waits for every older entry", () => {
    const queue = { entries: entries("x x x", 2) };
    assert.deepEqual(decide(queue, 2), { type: "wait", writers: [0, 1], upgrade: false });
    assert.equal(holderCount(queue), 2);
  });
});
