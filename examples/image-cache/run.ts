/**
 * Runs the image-cache race twice with real processes on the file backend: without locks
 * (counting broken instances) and with Baton (none). `npm run demo`.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const WORKER = fileURLToPath(new URL("./worker.ts", import.meta.url));

function run(args: string[], env: NodeJS.ProcessEnv): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", WORKER, ...args], {
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("exit", (code) =>
      code === 0 ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error(`worker exited ${code}`)),
    );
  });
}

/** One round: `spawners` spawner processes and one ager, all at once. */
export async function race(
  locks: boolean,
  spawners = 4,
  instances = 40,
): Promise<{ broken: number; instances: number; deleted: number }> {
  const cache = mkdtempSync(join(tmpdir(), "baton-image-cache-"));
  const env = { ...process.env, BATON_URL: pathToFileURL(join(cache, ".baton")).href };
  try {
    const mode = locks ? "on" : "off";
    const ager = run(["ager", cache, mode, "0"], env);
    const spawned = await Promise.all(
      Array.from({ length: spawners }, () => run(["spawner", cache, mode, String(instances)], env)),
    );
    writeFileSync(join(cache, "stop"), "");
    const results = [...spawned, await ager];
    const broken = results.reduce((sum, r) => sum + (r.broken ?? 0), 0);
    const deleted = results.reduce((sum, r) => sum + (r.deleted ?? 0), 0);
    return { broken, instances: spawners * instances, deleted };
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const locks of [false, true]) {
    const { broken, instances, deleted } = await race(locks);
    const label = locks ? "with Baton    " : "without locks ";
    console.log(`${label}: ${broken} of ${instances} instances broken (the ager deleted the image ${deleted} times)`);
  }
}
