/** What a member id tells about its process (src/status/member.ts), as a table. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { memberDetails } from "../src/index.js";
import { MEMBER_COMMAND_CHARS, memberIdWithCommand } from "../src/status/member.js";

describe("member ids", () => {
  it("reads host, pid and command from the default and the CLI forms only", () => {
    const table: [string, ReturnType<typeof memberDetails>][] = [
      ["vm:4242:9f3a1c", { host: "vm", pid: 4242 }],
      [
        "vm:4242:9f3a1c/sh%20-c%20echo%20in;%20exec%20sleep%2030",
        { host: "vm", pid: 4242, command: "sh -c echo in; exec sleep 30" },
      ],
      ["vm:4242:9f3a1c/100%25%20done", { host: "vm", pid: 4242, command: "100% done" }],
      ["vm:4242:9f3a1c/bad%E0%20x", { host: "vm", pid: 4242, command: "bad%E0 x" }],
      ["test-parent", null],
      ["vm:4242:9F3A1C", null],
      ["vm:4242:9f3a1c with space", null],
      ["a/b:1:abcdef", null],
    ];
    for (const [id, expected] of table) assert.deepEqual(memberDetails(id), expected, id);
  });

  it("writes the command as one word that reads back the same, cut to the limit", () => {
    const table: [string[], string][] = [
      [["sh", "-c", "echo in; exec sleep 30"], "sh -c echo in; exec sleep 30"],
      [["printf", "100%\tdone\n"], "printf 100% done"],
      [["x".repeat(200)], `${"x".repeat(MEMBER_COMMAND_CHARS - 1)}…`],
    ];
    for (const [argv, command] of table) {
      const id = memberIdWithCommand("vm:1:abcdef", argv);
      assert.doesNotMatch(id, /\s/, id);
      assert.equal(memberDetails(id)?.command, command, id);
    }
    assert.equal(memberIdWithCommand("vm:1:abcdef", []), "vm:1:abcdef");
  });
});
