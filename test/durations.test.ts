/**
 * Every duration of the API is refused above Node's timer limit (which would otherwise fire
 * after 1 ms), naming the maximum: one table over every place a duration enters.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect, type Coordinator, InvalidArgumentError, MAX_TIMER_MS, parseDuration } from "../src/index.js";

const TOO_LONG = [MAX_TIMER_MS + 1, 1e15, 2 ** 53];

describe("durations above the timer limit", () => {
  const open: Coordinator[] = [];
  const client = async () => {
    const coord = await connect("memory://durations");
    open.push(coord);
    return coord;
  };
  after(async () => Promise.all(open.map((c) => c.close())));

  const refused = (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`);
    assert.match(error.message, new RegExp(String(MAX_TIMER_MS)), "the message names the maximum");
    return true;
  };

  /** Each entry takes one over-long duration where the API takes one. */
  const table: [string, (coord: Coordinator, other: Coordinator, ms: number) => Promise<unknown>][] = [
    ["lock acquire timeoutMs", (c, _, ms) => c.lock("busy").acquire({ timeoutMs: ms })],
    ["shared acquire timeoutMs", (c, _, ms) => c.lock("busy").acquire({ mode: "shared", timeoutMs: ms })],
    ["semaphore acquire timeoutMs", (c, _, ms) => c.semaphore("s", { limit: 1 }).acquire({ timeoutMs: ms })],
    ["campaign timeoutMs", (c, _, ms) => c.election("e").campaign("v", { timeoutMs: ms })],
    ["withLock timeoutMs", (c, _, ms) => c.withLock("busy", () => 1, { timeoutMs: ms })],
    [
      "upgrade timeoutMs",
      async (c, other, ms) => {
        const mine = await c.lock("up").acquire({ mode: "shared" });
        const theirs = await other.lock("up").acquire({ mode: "shared" });
        try {
          return await mine.upgrade({ timeoutMs: ms });
        } finally {
          await mine.release();
          await theirs.release();
        }
      },
    ],
    ["connect ttlMs", (_c, _o, ms) => connect("memory://durations", { ttlMs: ms })],
    [
      "connect require.crashReleaseMs",
      (_c, _o, ms) => connect("memory://durations", { require: { crashReleaseMs: ms } }),
    ],
  ];

  for (const [what, use] of table) {
    it(`refuses ${what} above ${MAX_TIMER_MS} ms at once, naming the maximum`, async () => {
      const [a, b] = [await client(), await client()];
      // Busy, so a wrongly accepted timeout would fire (after 1 ms) as a TimeoutError instead.
      const holder = await b.lock("busy").acquire();
      try {
        for (const ms of TOO_LONG)
          await assert.rejects(use(a, b, ms), what === "connect ttlMs" ? InvalidArgumentError : refused);
      } finally {
        await holder.release();
      }
    });
  }

  it("accepts the maximum itself", async () => {
    const [a] = [await client()];
    const controller = new AbortController();
    const holder = await (await client()).lock("max").acquire();
    const waiting = a.lock("max").acquire({ timeoutMs: MAX_TIMER_MS, signal: controller.signal });
    // Still waiting after a turn of the timers: the timeout did not fire at once.
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    await assert.rejects(waiting, { name: "AbortError" });
    await holder.release();
  });

  it("refuses parsed durations above the maximum and accepts it", () => {
    assert.equal(parseDuration(`${MAX_TIMER_MS}ms`), MAX_TIMER_MS);
    for (const text of ["100000000h", `${MAX_TIMER_MS + 1}ms`, "596524h", "99999999999999999999999s"]) {
      assert.throws(() => parseDuration(text, "--timeout"), refused, text);
    }
  });
});
