/**
 * One process of the image-cache demo. A *spawner* boots instances from a cached base
 * image: it makes sure the image is in the cache (downloading it if not), prepares the
 * instance for a while, then creates the instance's disk on top of the image (here: reads
 * it). An *ager* deletes cached images it thinks are unused. Without coordination the ager
 * deletes an image between a spawner's check and its use: the instance is broken — the
 * race Nova's image cache had. With Baton, spawners hold a shared lock on the image while
 * they use it, and the ager takes it exclusively to delete.
 *
 *   worker.ts spawner <cache-dir> <locks:on|off> <instances>
 *   worker.ts ager    <cache-dir> <locks:on|off>   (until <cache-dir>/stop exists)
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, type Coordinator } from "../../src/index.js";

const [role, cacheDir = "", locks = "on", count = "20"] = process.argv.slice(2);
const image = join(cacheDir, "cirros.img");
const IMAGE = Buffer.alloc(64 * 1024, "cirros");
const useLocks = locks === "on";
const coord: Coordinator | null = useLocks ? await connect(process.env.BATON_URL) : null;

/** Runs `fn` under the image's lock in `mode` (or bare, without locks). */
async function withImage<T>(mode: "shared" | "exclusive", fn: () => Promise<T>): Promise<T> {
  if (!coord) return fn();
  await using _lock = await coord.lock(`image-cache/${image}`).acquire({ mode, timeoutMs: 60_000 });
  // `return await`, not `return`: the lock is released when this scope exits.
  return await fn();
}

/** Waits until `path` exists: the processes start together, whatever their start-up time. */
async function until(path: string): Promise<void> {
  while (!existsSync(path)) await sleep(5);
}

if (role === "spawner") {
  await until(join(cacheDir, "ager.ready"));
  let broken = 0;
  for (let i = 0; i < Number(count); i++) {
    const ok = await withImage("shared", async () => {
      if (!existsSync(image)) {
        // Download into the cache; the rename is atomic, so readers see all or nothing.
        writeFileSync(`${image}.${process.pid}`, IMAGE);
        renameSync(`${image}.${process.pid}`, image);
      }
      await sleep(3); // prepare networking, block devices, ...
      try {
        return readFileSync(image).equals(IMAGE); // create the instance disk from the image
      } catch {
        return false;
      }
    });
    if (!ok) broken++;
  }
  process.stdout.write(`${JSON.stringify({ role, broken, instances: Number(count) })}\n`);
} else if (role === "ager") {
  let deleted = 0;
  writeFileSync(join(cacheDir, "ager.ready"), "");
  // Ages the cache until the spawners are done (the parent creates "stop").
  while (!existsSync(join(cacheDir, "stop"))) {
    await withImage("exclusive", async () => {
      if (existsSync(image)) {
        rmSync(image);
        deleted++;
      }
    });
    await sleep(2);
  }
  process.stdout.write(`${JSON.stringify({ role, deleted })}\n`);
} else {
  process.stderr.write("usage: worker.ts spawner|ager <cache-dir> <on|off> <count>\n");
  process.exitCode = 64;
}
await coord?.close();
