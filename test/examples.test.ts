import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { race } from "../examples/image-cache/run.js";
import { demo as takeoverDemo } from "../examples/takeover/run.js";
import { race as volumeRace } from "../examples/volume-states/run.js";

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

describe("examples/volume-states", () => {
  it("makes every transition exactly once with transition(), and some twice with read-then-set", async () => {
    const cas = await volumeRace("cas", 3, 2, 3);
    assert.equal(cas.duplicates, 0, JSON.stringify(cas));
    assert.equal(cas.transitions, cas.expected, "each transition of each cycle happened once");
    const naive = await volumeRace("naive", 3, 2, 3);
    assert.ok(naive.duplicates > 0, `expected read-then-set to repeat transitions, got ${JSON.stringify(naive)}`);
  });
});

describe("examples/takeover", () => {
  it("the next ager fences the lost one's deleter before going on; unfenced, the deleter goes on deleting", async () => {
    const fenced = await takeoverDemo(true, 100);
    assert.equal(fenced.staleSteps, 0, "a fenced deleter takes no step after the takeover");
    assert.equal(fenced.remaining, 0, "the image is deleted");
    assert.match(fenced.handedOver, /^takeover of token \d+ from ager-\d+: deleter \d+ may still run$/);
    const unfenced = await takeoverDemo(false, 100);
    assert.ok(unfenced.staleSteps > 0, `expected the unfenced deleter to go on, got ${JSON.stringify(unfenced)}`);
  });
});
