/**
 * `file:` URLs name the directory the user meant: a relative one is resolved against the
 * working directory, never turned into a directory at the file system's root.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { directoryFromUrl } from "../../src/backends/file/directory.js";
import { connect, InvalidArgumentError } from "../../src/index.js";

describe("file URLs", () => {
  const cwd = realpathSync(mkdtempSync(join(tmpdir(), "baton-file-url-")));
  const saved = process.cwd();
  const unique = `baton-rel-${randomUUID().slice(0, 8)}`;
  before(() => process.chdir(cwd));
  after(() => {
    process.chdir(saved);
    rmSync(cwd, { recursive: true, force: true });
    // Only if the bug came back: do not leave its litter at the root.
    rmSync(`/${unique}`, { recursive: true, force: true });
  });

  it("resolves file:relative/dir against the working directory, creating nothing at the root", async () => {
    const coord = await connect(`file:${unique}/dir?namespace=n`);
    try {
      const h = await coord.lock("x").acquire();
      await h.release();
    } finally {
      await coord.close();
    }
    assert.equal(existsSync(`/${unique}`), false, `connect created /${unique} at the root`);
    assert.ok(existsSync(join(cwd, unique, "dir", "tokens")), "the directory is under the working directory");
  });

  it("maps each written form to the directory it names", () => {
    const table: [string, string][] = [
      [`file:${unique}`, join(cwd, unique)],
      [`file:./${unique}/a`, join(cwd, unique, "a")],
      [`file:../${unique}`, join(cwd, "..", unique)],
      [`file:with%20space`, join(cwd, "with space")],
      [`file:${unique}?namespace=x#frag`, join(cwd, unique)],
      ["file:/abs/dir", "/abs/dir"],
      ["file:///abs/dir", "/abs/dir"],
      ["file://localhost/abs/dir", "/abs/dir"],
    ];
    for (const [written, expected] of table) {
      assert.equal(directoryFromUrl(new URL(written), written), expected, written);
    }
  });

  it("refuses ~, which URLs do not expand, and other hosts", () => {
    for (const written of ["file:~/locks", "file:~"]) {
      assert.throws(() => directoryFromUrl(new URL(written), written), InvalidArgumentError, written);
    }
    assert.throws(() => directoryFromUrl(new URL("file://otherhost/x"), "file://otherhost/x"), InvalidArgumentError);
  });
});
