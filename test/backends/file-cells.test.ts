import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, describe, it } from "node:test";
import { BackendUnavailableError, connect } from "../../src/index.js";
import { BUCKETS, bucketFileName } from "../../src/backends/file/cells.js";

const dir = mkdtempSync(join(tmpdir(), "baton-file-cells-"));
const url = pathToFileURL(dir).href;
after(() => rmSync(dir, { recursive: true, force: true }));

describe("file cells", () => {
  it("keeps the number of files bounded however many cells exist", async () => {
    await using coord = await connect(url, { namespace: "many" });
    const before = readdirSync(dir).length;
    for (let i = 0; i < 400; i++) await coord.cell(`c${i}`).set({ i });
    const files = readdirSync(dir);
    assert.ok(files.length <= before + 2 * BUCKETS, `${files.length} files for 400 cells`);
    assert.deepEqual((await coord.cell("c399").get())?.value, { i: 399 });
  });

  it("a torn temporary file left by a crashed writer never corrupts a cell", async () => {
    await using coord = await connect(url, { namespace: "torn" });
    const written = await coord.cell("x").set("kept");
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      writeFileSync(join(dir, `${bucketFileName(bucket)}.tmp`), '{"next":"9","cells":{"half');
    }
    assert.deepEqual(await coord.cell("x").get(), { value: "kept", version: written.version });
    const next = await coord.cell("x").transition("kept", "next");
    assert.ok(next.version > written.version);
    assert.deepEqual((await coord.cell("x").get())?.value, "next");
  });

  it("a bucket file that is not Baton's is a clear error, not a silent reset", async () => {
    const own = mkdtempSync(join(tmpdir(), "baton-file-cells-bad-"));
    try {
      await using coord = await connect(pathToFileURL(own).href);
      for (let bucket = 0; bucket < BUCKETS; bucket++) writeFileSync(join(own, bucketFileName(bucket)), "garbage");
      await assert.rejects(coord.cell("y").get(), (e: unknown) => {
        assert.ok(e instanceof BackendUnavailableError);
        assert.match(e.message, /cells\.[0-9a-f]{2} is not a Baton cells file/);
        return true;
      });
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});
