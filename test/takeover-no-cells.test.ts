/**
 * A backend without durable records (`Driver.cells`), as a third-party backend may be: the
 * memory backend registered a second time with its cells left out. Takeover options are
 * then an `UnsupportedError` before anything is acquired; revoke needs no cells.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UnsupportedError, connect } from "../src/index.js";
import { registerMemoryVariant } from "./harness/memory-variant.js";

registerMemoryVariant("memory-without-cells", (driver) => {
  const { cells: _, ...rest } = driver;
  return rest;
});

describe("takeover on a backend without cells", () => {
  it("refuses takeover options with UnsupportedError and acquires nothing; revoke still works", async () => {
    await using coord = await connect("memory-without-cells://no-cells");
    await using other = await connect("memory-without-cells://no-cells");
    assert.equal(coord.cellsSupported, false);
    const options = [{ fenceInfo: 1 }, { lockDelayMs: 5 }, { takeover: true }, { onTakeover: () => {} }];
    for (const option of options) {
      await assert.rejects(coord.lock("u").acquire(option), UnsupportedError, JSON.stringify(option));
      await assert.rejects(coord.lock("u").tryAcquire(option), UnsupportedError, JSON.stringify(option));
    }
    assert.deepEqual((await coord.inspect()).locks, [], "nothing was acquired");
    assert.equal((await coord.inspect()).takeovers, undefined, "no takeover records to show");
    const held = await other.lock("u").acquire();
    assert.deepEqual(
      (await coord.revoke("u")).map((r) => r.token),
      [held.token],
    );
    assert.equal(held.signal.aborted, true, "the revoked holder's signal fired");
  });
});
