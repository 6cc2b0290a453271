/**
 * A grant that reaches a waiter after its session's local deadline passed, before the
 * deadline's timer ran (the event loop was blocked): the backend may already have expired
 * that session, so the grant is not handed out on it; the wait goes on on a fresh session.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Coordinator, connect } from "../src/index.js";
import { waitForWaiters } from "./conformance/helpers.js";

const TTL_MS = 1000;

/** Blocks the event loop (no timer runs) for `ms`. */
function blockFor(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe("a grant past the session's deadline", () => {
  const coords: Coordinator[] = [];
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
  });

  it("is not handed out on that session: the wait goes on on a fresh one", async () => {
    const url = `memory://deadline-grant-${process.pid}`;
    const holder = await connect(url, { memberId: "holder" });
    const waiter = await connect(url, { memberId: "waiter", ttlMs: TTL_MS });
    coords.push(holder, waiter);
    const held = await holder.lock("x").acquire();
    const waiting = waiter.lock("x").acquire({ timeoutMs: 30_000 });
    await waitForWaiters(holder, "x", 1);
    const first = waiter.session!.id;
    const released = held.release();
    // Past the waiter's deadline (TTL minus its margin) with no timer run since: the grant
    // arrives through promise callbacks alone, before the deadline's timer can fire.
    blockFor(TTL_MS + 200);
    const granted = await waiting;
    assert.notEqual(waiter.session!.id, first, "the grant came on the session past its deadline");
    assert.equal(granted.held, true);
    assert.deepEqual(await released, { status: "released" });
    await granted.release();
  });
});
