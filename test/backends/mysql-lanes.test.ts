import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startMariadb } from "../harness/mariadb.js";
import { ownServer } from "./fixtures/backend-suite.js";

// A coordinator's lanes (lock-holding connections) are bounded by `maxConnections`; a
// connection holds any number of locks. Before, a blocking acquire() ran only on a lane that
// held nothing, so a coordinator holding one lock per lane could not take another one, not
// even a free one: it waited until cancelled (the bench's scale scenario hung at 7 locks).
describe("mysql lanes: more held locks than connections", () => {
  const { server, client } = ownServer(() => startMariadb());
  const url = () => `${server().url}${server().url.includes("?") ? "&" : "?"}maxConnections=2`;

  it("holds 40 locks taken with acquire() on one lane, and releases them", async () => {
    const coord = await client({}, url());
    const handles = [];
    for (let i = 0; i < 40; i++) {
      handles.push(await coord.lock(`lanes-${i}`).acquire({ signal: AbortSignal.timeout(10_000) }));
    }
    const seen = await coord.inspect();
    const held = seen.locks.filter((l) => l.name.startsWith("lanes-") && l.holders.length === 1);
    assert.equal(held.length, 40, "every lock shows its holder");
    await Promise.all(handles.map((h) => h.release()));
    const after = await coord.inspect();
    assert.equal(after.locks.filter((l) => l.name.startsWith("lanes-") && l.holders.length > 0).length, 0);
  });

  it("with every lane holding, a blocking acquire of a held lock waits, then gets it after the release", async () => {
    const mine = await client({}, url());
    const other = await client({}, url());
    // Both of mine's lanes hold something.
    const pinned = [];
    for (let i = 0; i < 6; i++) pinned.push(await mine.lock(`pinned-${i}`).acquire());
    const held = await other.lock("contended").acquire();
    let granted = false;
    const waiting = mine
      .lock("contended")
      .acquire({ signal: AbortSignal.timeout(15_000) })
      .then((h) => {
        granted = true;
        return h;
      });
    // Another lock taken meanwhile by the same coordinator: the wait blocks no lane.
    const extra = await mine.lock("extra").acquire({ signal: AbortSignal.timeout(10_000) });
    assert.equal(granted, false, "not granted while the other coordinator holds it");
    const before = held.token;
    await held.release();
    const got = await waiting;
    assert.ok(got.token > before, `token ${got.token} after ${before}`);
    await Promise.all([got, extra, ...pinned].map((h) => h.release()));
  });

  it("a blocking acquire that cannot get a lane is still cancelled by its signal", async () => {
    const mine = await client({}, url());
    const other = await client({}, url());
    const pinned = [];
    for (let i = 0; i < 4; i++) pinned.push(await mine.lock(`cancel-pinned-${i}`).acquire());
    const held = await other.lock("cancel-contended").acquire();
    const controller = new AbortController();
    const waiting = mine.lock("cancel-contended").acquire({ signal: controller.signal });
    controller.abort(new Error("given up"));
    await assert.rejects(waiting, (e: Error) => e.name === "AbortError");
    await held.release();
    // Nothing was left queued: the lock is free for a try.
    const tried = await mine.lock("cancel-contended").tryAcquire();
    assert.ok(tried, "free after the cancelled wait");
    await Promise.all([tried, ...pinned].map((h) => h.release()));
  });
});
