/**
 * The published types as a strict consumer sees them: test/types/consumer.ts is compiled
 * with strict + exactOptionalPropertyTypes + nodenext against dist/'s .d.ts (built by
 * `npm run build`, which `npm test` runs first). Its `@ts-expect-error` lines check that
 * internals stay out of the public types.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

describe("published types", () => {
  it("type-check a strict consumer: generics, optional undefined, no internals", () => {
    const dts = `${root}dist/src/index.d.ts`;
    assert.ok(existsSync(dts), "dist/ is not built: run `npm run build` first");
    assert.ok(
      statSync(dts).mtimeMs >= statSync(`${root}src/index.ts`).mtimeMs,
      "dist/ is older than src/: run `npm run build` first",
    );
    try {
      execFileSync(process.execPath, [tsc, "-p", "test/types/tsconfig.json"], { cwd: root, encoding: "utf8" });
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string };
      assert.fail(`the consumer does not type-check against dist/:\n${stdout ?? ""}${stderr ?? ""}`);
    }
  });
});
