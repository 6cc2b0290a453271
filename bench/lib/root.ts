/** The repository root, found from wherever the compiled bench lives. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function find(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    // The package is published as baton-coord (the name baton is taken on the registry).
    const name = existsSync(manifest) ? (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name : "";
    if (name === "baton-coord" || name === "baton") {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("bench: cannot find the repository root (package.json of baton-coord)");
    dir = parent;
  }
}

export const ROOT = find();
