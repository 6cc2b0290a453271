import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { race } from "../examples/image-cache/run.js";

describe("examples/image-cache", () => {
  it("breaks instances without locks and none with Baton", async () => {
    const unlocked = await race(false, 3, 30);
    const locked = await race(true, 3, 30);
    assert.equal(locked.broken, 0, "with Baton no instance may be broken");
    assert.equal(locked.instances, 90);
    // The race is wide open without locks (3 ms between check and use, an ager every 2 ms).
    assert.ok(unlocked.broken > 0, `expected the unlocked run to break instances, got ${JSON.stringify(unlocked)}`);
  });
});
