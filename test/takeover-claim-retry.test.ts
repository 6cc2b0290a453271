/**
 * A blocking acquisition whose takeover claim fails for a reason that says nothing about the
 * lock: the record's write is not answered (the backend blipped). The memory backend is
 * registered a second time with a fault injected at the cells seam (its record writes fail
 * with `BackendUnavailableError` while `failing` says so), as a server restart does on a real
 * backend (test/backends/mysql-faults.test.ts has that case). The grant goes back and the
 * wait goes on: acquire() resolves held once the writes work again, or rejects with
 * `TimeoutError` at its deadline, never with the blip's error and never holding anything.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { BackendUnavailableError, type Takeover, TimeoutError, connect } from "../src/index.js";
import { expireSession } from "../src/testing.js";
import { waitFor } from "./conformance/helpers.js";
import { registerMemoryVariant } from "./harness/memory-variant.js";

/**
 * How many record writes are still to fail, and how many did; `landing`: how many are still
 * to be made first and then fail (the write landed, its answer was lost).
 */
const fault = { failing: 0, failed: 0, landing: 0 };

registerMemoryVariant("memory-flaky-records", (driver) => {
  const cells = driver.cells;
  if (!cells) throw new Error("the memory backend has cells");
  const flaky: typeof cells = Object.create(cells);
  flaky.put = async (space, key, value, condition) => {
    if (space === "takeover" && fault.landing > 0) {
      fault.landing--;
      fault.failed++;
      await cells.put(space, key, value, condition);
      throw new BackendUnavailableError("injected: the record write landed, its answer was lost", {
        backend: "memory-flaky-records",
      });
    }
    if (space === "takeover" && fault.failing > 0) {
      fault.failing--;
      fault.failed++;
      throw new BackendUnavailableError("injected: the record write was not answered", {
        backend: "memory-flaky-records",
      });
    }
    return cells.put(space, key, value, condition);
  };
  return Object.assign(Object.create(driver), { cells: flaky });
});

/** Two coordinators on a fresh namespace; `a` held `name` with fence info and was lost. */
async function lostHolder(name: string) {
  const url = `memory-flaky-records://claim-retry-${randomUUID()}`;
  const a = await connect(url, { memberId: "a" });
  const b = await connect(url, { memberId: "b" });
  const held = await a.lock(name).acquire({ fenceInfo: { pid: 7 } });
  await expireSession(a);
  return { a, b, token: held.token };
}

describe("takeover claim retried after a backend blip", () => {
  it("a record write that fails twice: the wait goes on and ends held, told of the lost holder", async () => {
    const { a, b, token } = await lostHolder("r1");
    fault.failing = 2;
    fault.failed = 0;
    const seen: Takeover[] = [];
    const handle = await b
      .lock("r1")
      .acquire({ timeoutMs: 10_000, onTakeover: (previous) => void seen.push(previous) });
    assert.equal(fault.failed, 2, "both injected failures were hit");
    assert.equal(handle.held, true);
    assert.equal(handle.takeover?.token, token, "the lost holder's record was kept through the failed claims");
    assert.deepEqual(
      seen.map((p) => p.token),
      [token, token, token],
      "fenced on each grant",
    );
    const holders = (await b.inspect()).locks.find((l) => l.name === "r1")?.holders ?? [];
    assert.deepEqual(
      holders.map((h) => h.token),
      [handle.token],
      "one holder: the failed claims' grants went back",
    );
    assert.ok(handle.token > token);
    await handle.release();
    await Promise.all([a.close(), b.close()]);
  });

  it("a record write that keeps failing ends the wait with TimeoutError at its deadline, nothing held", async () => {
    const { a, b, token } = await lostHolder("r2");
    fault.failing = Number.MAX_SAFE_INTEGER;
    fault.failed = 0;
    try {
      await assert.rejects(b.lock("r2").acquire({ timeoutMs: 400 }), TimeoutError);
      assert.ok(fault.failed >= 2, `asked again after a failed claim (${fault.failed} writes)`);
      assert.ok(fault.failed < 20, `with pauses between the tries (${fault.failed} writes in 400 ms)`);
      assert.deepEqual((await b.inspect()).locks.find((l) => l.name === "r2")?.holders ?? [], []);
      const record = (await b.inspect()).takeovers?.find((r) => r.name === "r2");
      assert.equal(record?.token, token, "the lost holder's record is kept");
    } finally {
      fault.failing = 0;
    }
    await Promise.all([a.close(), b.close()]);
  });

  it("claims failing for longer than the TTL end a wait with no timeout with the last error, nothing held", async () => {
    const url = `memory-flaky-records://claim-retry-${randomUUID()}`;
    const a = await connect(url, { memberId: "a" });
    const b = await connect(url, { memberId: "b", ttlMs: 1000 });
    const held = await a.lock("r4").acquire({ fenceInfo: { pid: 7 } });
    await expireSession(a);
    fault.failing = Number.MAX_SAFE_INTEGER;
    fault.failed = 0;
    try {
      await assert.rejects(b.lock("r4").acquire(), BackendUnavailableError);
      assert.ok(fault.failed >= 2, `asked again before giving up (${fault.failed} writes)`);
      assert.deepEqual((await b.inspect()).locks.find((l) => l.name === "r4")?.holders ?? [], []);
      assert.equal((await b.inspect()).takeovers?.find((r) => r.name === "r4")?.token, held.token);
    } finally {
      fault.failing = 0;
    }
    await Promise.all([a.close(), b.close()]);
  });

  it("an abort between two claims ends the wait with AbortError, nothing held", async () => {
    const { a, b } = await lostHolder("r5");
    fault.failing = Number.MAX_SAFE_INTEGER;
    fault.failed = 0;
    const controller = new AbortController();
    try {
      const attempt = b.lock("r5").acquire({ signal: controller.signal });
      attempt.catch(() => {});
      await waitFor(() => fault.failed >= 3, "three failed claims");
      controller.abort();
      await assert.rejects(attempt, { name: "AbortError" });
      assert.deepEqual((await b.inspect()).locks.find((l) => l.name === "r5")?.holders ?? [], []);
    } finally {
      fault.failing = 0;
    }
    await Promise.all([a.close(), b.close()]);
  });

  it("a write that landed but whose answer was lost: the next grant reports the lost holder, not its own", async () => {
    const { a, b, token } = await lostHolder("r6");
    fault.landing = 1;
    fault.failed = 0;
    const seen: Takeover[] = [];
    const handle = await b.lock("r6").acquire({
      timeoutMs: 10_000,
      fenceInfo: { pid: 8 },
      onTakeover: (previous) => void seen.push(previous),
    });
    assert.equal(fault.failed, 1, "the injected failure was hit");
    assert.deepEqual(
      seen.map((p) => [p.memberId, p.token, p.fenceInfo]),
      [
        ["a", token, { pid: 7 }],
        ["a", token, { pid: 7 }],
      ],
      "both grants fenced the lost holder, never the wait's own abandoned grant",
    );
    assert.equal(handle.takeover?.memberId, "a");
    assert.equal(handle.takeover?.token, token);
    await handle.release();
    await Promise.all([a.close(), b.close()]);
  });

  it("a try-lock does not retry: the blip's error is its answer, nothing held", async () => {
    const { a, b } = await lostHolder("r3");
    fault.failing = 1;
    fault.failed = 0;
    await assert.rejects(b.lock("r3").tryAcquire(), BackendUnavailableError);
    assert.equal(fault.failed, 1);
    assert.deepEqual((await b.inspect()).locks.find((l) => l.name === "r3")?.holders ?? [], []);
    await Promise.all([a.close(), b.close()]);
  });
});
