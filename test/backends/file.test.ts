import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { expireSession } from "../../src/testing.js";
import { conformance } from "../conformance/suite.js";

const dir = mkdtempSync(join(tmpdir(), "baton-file-conformance-"));

conformance({
  name: "file",
  url: () => pathToFileURL(dir).href,
  shortTtlMs: 1000,
  contention: { clients: 25, rounds: 100 },
  // A file session ends only with its process or its close(): end it the same way.
  loseSession: async (coord) => {
    await expireSession(coord);
  },
  teardown: async () => rmSync(dir, { recursive: true, force: true }),
});
