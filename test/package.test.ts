/**
 * The package as a consumer installs it: its name (not `baton`, which the registry gives to
 * an unrelated package), its exports map and its command, resolved by Node from a project
 * that depends on it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  name: string;
  bin: Record<string, string>;
};

test("a consumer imports the package and its testing entry by the published name; the command is baton", () => {
  assert.equal(manifest.name, "baton-coord");
  assert.deepEqual(Object.keys(manifest.bin), ["baton"]);
  const project = mkdtempSync(join(tmpdir(), "baton-consumer-"));
  try {
    mkdirSync(join(project, "node_modules"));
    symlinkSync(ROOT, join(project, "node_modules", manifest.name), "dir");
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({ type: "module", dependencies: { [manifest.name]: "*" } }),
    );
    const script = `
      const baton = await import("${manifest.name}");
      const testing = await import("${manifest.name}/testing");
      const coord = await baton.connect("memory://consumer");
      const lock = await coord.lock("x").acquire();
      await lock.release();
      await coord.close();
      console.log(JSON.stringify({ connect: typeof baton.connect, testing: Object.keys(testing).length > 0, token: lock.token > 0n }));
    `;
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      cwd: project,
      encoding: "utf8",
    });
    assert.deepEqual(JSON.parse(out), { connect: "function", testing: true, token: true });
  } finally {
    rmSync(project, { recursive: true, force: true });
  }
});
