/**
 * QueueTable keeps the last idle queue as a spare and reuses it for the next name: nothing
 * of the name it served before may leak into the next one, whatever still refers to it.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../src/core/errors.js";
import { QueueTable } from "../src/core/queue-table.js";

const meta = { who: "t" };
const never = new AbortController().signal;

function table(): QueueTable<typeof meta> {
  let n = 0n;
  return new QueueTable(() => ++n);
}

describe("QueueTable spare queue", () => {
  it("a waiter cancelled after its queue was reused for another name leaves that name alone", async () => {
    const t = table();
    const a = t.grantNow("a", { mode: "exclusive", limit: 1, meta });
    assert.ok(a);
    const gone = new AbortController();
    const late = t.acquire("a", { mode: "exclusive", limit: 1, wait: true, signal: gone.signal, meta });
    t.release(a);
    const granted = await late;
    assert.ok(granted);
    t.release(granted); // "a" idle: its queue is the spare now
    const b = t.grantNow("b", { mode: "exclusive", limit: 3, meta });
    assert.ok(b, "the spare serves b");
    const behind = t.acquire("b", { mode: "exclusive", limit: 3, wait: true, signal: never, meta });
    gone.abort(new Error("too late")); // the old waiter's cancel runs against the reused queue
    const snap = t.snapshot();
    assert.deepEqual(
      snap.map((q) => [q.key, q.limit, q.holders.length, q.waiters.length]),
      [["b", 3, 2, 0]],
      "semaphore limit 3: both granted, and nothing of a",
    );
    const second = await behind;
    assert.ok(second);
    t.release(b);
    t.release(second);
    assert.deepEqual(t.snapshot(), []);
  });

  for (const [what, limit, modes, holders, waiters] of [
    ["exclusive after exclusive", 1, ["exclusive", "exclusive"], 1, 1],
    ["shared after shared", 1, ["shared", "shared"], 2, 0],
    ["permits up to the new limit", 2, ["exclusive", "exclusive", "exclusive"], 2, 1],
  ] as const) {
    it(`a reused queue grants by its new name's requests only: ${what}`, () => {
      const t = table();
      const old = t.grantNow("old", { mode: "shared", limit: 5, meta });
      assert.ok(old);
      t.release(old);
      for (const mode of modes) void t.acquire("new", { mode, limit, wait: true, signal: never, meta });
      const [q] = t.snapshot();
      assert.deepEqual([q?.key, q?.limit, q?.holders.length, q?.waiters.length], ["new", limit, holders, waiters]);
    });
  }

  it("the last idle queue stays under its name, unseen by snapshot(), and takes the next request's limit", () => {
    const t = table();
    const first = t.grantNow("a", { mode: "exclusive", limit: 3, meta });
    assert.ok(first);
    t.release(first);
    assert.deepEqual(t.snapshot(), [], "an idle queue is not shown");
    const wider = t.grantNow("a", { mode: "exclusive", limit: 5, meta });
    assert.ok(wider, "a new limit, as on a new queue");
    assert.throws(
      () => t.grantNow("a", { mode: "exclusive", limit: 3, meta }),
      (e: unknown) => e instanceof InvalidArgumentError,
      "the holder's limit counts",
    );
    t.release(wider);
    for (const name of ["b", "c", "a"]) {
      const held = t.grantNow(name, { mode: "exclusive", limit: 1, meta });
      assert.ok(held);
      assert.deepEqual(
        t.snapshot().map((q) => [q.key, q.limit, q.holders.length]),
        [[name, 1, 1]],
      );
      t.release(held);
    }
    assert.deepEqual(t.snapshot(), []);
  });
});
