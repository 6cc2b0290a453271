/**
 * The strict JSON rule shared by fence info and cell values (src/core/json-value.ts): a
 * hole of a sparse array, a value that repeats a shared part into an enormous text, and
 * takeover options given with `takeover: false` are refused with InvalidArgumentError
 * before any I/O, through both public entry points. Memory backend: the rule is core code.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { InvalidArgumentError, connect } from "../src/index.js";

/** `[v, v]` nested `depth` times: tiny in memory, 2^depth leaves as text. */
function doubling(depth: number): unknown {
  let v: unknown = "xxxxxxxx";
  for (let i = 0; i < depth; i++) v = [v, v];
  return v;
}

// biome-ignore lint/suspicious/noSparseArray: the hole is what is tested
const sparse = [, 1];
// biome-ignore lint/suspicious/noSparseArray: the hole is what is tested
const deeper = { a: [1, , 3] };

describe("strict JSON values (fence info, cells)", () => {
  const bad: [string, unknown, RegExp][] = [
    ["a hole of a sparse array", sparse, /\[0\] is a hole of a sparse array/],
    ["a hole deeper down", deeper, /\.a\[1\] is a hole/],
    ["an array with length but no elements", new Array(3), /\[0\] is a hole/],
    ["a shared part repeated 2^40 times", doubling(40), /at least \d+ bytes as JSON; the limit is/],
  ];

  it("refuses them as fence info and as cell values, before any I/O", async () => {
    await using coord = await connect(`memory://json-${randomUUID()}`);
    for (const [what, value, message] of bad) {
      await assert.rejects(coord.lock("j").acquire({ fenceInfo: value }), InvalidArgumentError, what);
      await assert.rejects(coord.lock("j").acquire({ fenceInfo: value }), message, what);
      await assert.rejects(coord.cell("j").set(value), InvalidArgumentError, what);
      await assert.rejects(coord.cell("j").transition(null, value), InvalidArgumentError, what);
    }
    const info = await coord.inspect();
    assert.deepEqual(info.locks, [], "nothing was acquired");
    assert.equal(await coord.cell("j").get(), null, "nothing was written");
  });

  it("refuses takeover: false with any takeover option, instead of dropping it", async () => {
    await using coord = await connect(`memory://json-${randomUUID()}`);
    const given: [string, Record<string, unknown>][] = [
      ["onTakeover", { onTakeover: () => {} }],
      ["fenceInfo", { fenceInfo: { pid: 1 } }],
      ["lockDelayMs", { lockDelayMs: 100 }],
    ];
    for (const [what, options] of given) {
      const lock = coord.lock("f");
      await assert.rejects(lock.acquire({ takeover: false, ...options }), /takeover: false cannot be combined/, what);
      await assert.rejects(lock.tryAcquire({ takeover: false, ...options }), InvalidArgumentError, what);
    }
    assert.deepEqual((await coord.inspect()).locks, [], "nothing was acquired");
    const plain = await coord.lock("f").acquire({ takeover: false });
    assert.equal(plain.takeover, null);
    await plain.release();
  });

  it("still accepts what is JSON: dense arrays, a shared part within the limit", async () => {
    await using coord = await connect(`memory://json-${randomUUID()}`);
    const held = await coord.lock("ok").acquire({ fenceInfo: { pids: [1, 2], shared: doubling(3) } });
    const record = (await coord.inspect()).takeovers?.find((r) => r.name === "ok");
    assert.deepEqual(record?.fenceInfo, { pids: [1, 2], shared: doubling(3) });
    await held.release();
  });
});
