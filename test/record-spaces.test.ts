import assert from "node:assert/strict";
import { it } from "node:test";
import { electionSpace, groupSpace, spaceOwner } from "../src/core/record-spaces.js";

it("record spaces: named and read back by one module (core/record-spaces.ts)", () => {
  const cases: [space: string, owner: ReturnType<typeof spaceOwner>][] = [
    [groupSpace("workers"), { kind: "group", id: "workers" }],
    [electionSpace("primary"), { kind: "election", id: "primary" }],
    [groupSpace("a/b"), { kind: "group", id: "a/b" }],
    [groupSpace(""), { kind: "group", id: "" }],
    ["takeover/x", null],
    ["groups/x", null],
  ];
  for (const [space, owner] of cases) assert.deepEqual(spaceOwner(space), owner, space);
});
