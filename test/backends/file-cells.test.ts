import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, describe, it } from "node:test";
import { BackendUnavailableError, connect } from "../../src/index.js";
import { BUCKETS, WATCH_POLL_MS, bucketFileName } from "../../src/backends/file/cells.js";
import { Puppet } from "../fixtures/puppets.js";

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

describe("file cell watches are pushed across processes", () => {
  it("a watch sees another process's write before its first re-read could have", async () => {
    await using coord = await connect(url, { namespace: "pushed" });
    const puppet = new Puppet(url);
    try {
      await puppet.do("cellSet", { namespace: "pushed", name: "warm-up", value: 0 });
      // Without the push the first sight would be the re-read, WATCH_POLL_MS after this.
      const started = performance.now();
      const watch = coord.cell<number>("p").watch();
      const reply = await puppet.do("cellSet", { namespace: "pushed", name: "p", value: 7 });
      const first = await watch.next();
      const elapsed = performance.now() - started;
      await watch.return?.();
      assert.deepEqual(first.value, { type: "set", value: 7, version: BigInt(String(reply.version)) });
      assert.ok(elapsed < WATCH_POLL_MS, `seen after ${elapsed.toFixed(0)} ms; the re-read is at ${WATCH_POLL_MS} ms`);
    } finally {
      puppet.kill();
      await puppet.exited();
    }
  });
});
