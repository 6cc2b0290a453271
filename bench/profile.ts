/**
 * Where the time of one uncontended acquire + release goes, from a V8 CPU profile of the
 * compiled code.
 *
 *   npx tsc -p bench/tsconfig.json && node .bench/dist/bench/profile.js [file|memory|URL] [ops]
 *
 * Runs the loop in a child with --cpu-prof, then prints self time per function (and per
 * source file) as a share of the loop, plus the loop's own per-operation time without the
 * profiler. With `--write DIR` it also writes DIR/profile-<backend>.md (the bench does).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ROOT } from "./lib/root.js";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}

async function child(backend: string, ops: number): Promise<void> {
  const { connect } = await import("../src/index.js");
  const dir = backend === "file" ? mkdtempSync(join(os.tmpdir(), "baton-prof-")) : null;
  // A URL (a server the caller started, e.g. redis://127.0.0.1:PORT) is used as it is.
  const coord = await connect(backend.includes("://") ? backend : dir ? `file://${dir}` : "memory://prof");
  const lock = coord.lock("profiled");
  for (let i = 0; i < 5000; i++) await (await lock.acquire()).release();
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < ops; i++) await (await coord.lock("profiled").acquire()).release();
  const ns = Number(process.hrtime.bigint() - t0) / ops;
  const cpu = process.cpuUsage(cpu0);
  const cpuNs = ((cpu.user + cpu.system) * 1000) / ops;
  await coord.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ nsPerOp: ns, cpuNsPerOp: cpuNs })}\n`);
}

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === "--child") {
    void child(args[1]!, Number(args[2]));
    return;
  }
  // --write DIR: also write DIR/profile-<backend>.md.
  const w = args.indexOf("--write");
  const writeDir = w >= 0 ? resolve(args[w + 1] ?? join(ROOT, "docs/benchmarks")) : null;
  const rest = args.filter((_, i) => w < 0 || (i !== w && i !== w + 1));
  const target = rest[0] ?? "file";
  const backend = target.includes("://") ? target.slice(0, target.indexOf(":")) : target;
  const ops = Number(rest[1] ?? 200_000);
  const self = fileURLToPath(import.meta.url);
  const plain = JSON.parse(
    execFileSync(process.execPath, [self, "--child", target, String(ops)], { encoding: "utf8" }),
  );
  const profDir = mkdtempSync(join(os.tmpdir(), "baton-cpuprof-"));
  execFileSync(
    process.execPath,
    ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=50", self, "--child", target, String(ops)],
    {
      encoding: "utf8",
    },
  );
  const file = readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))!;
  const profile = JSON.parse(readFileSync(join(profDir, file), "utf8")) as { nodes: Node[] };
  rmSync(profDir, { recursive: true, force: true });

  const where = (n: Node) => {
    const url = n.callFrame.url.replace(/^file:\/\//, "");
    const short = url.startsWith(ROOT) ? relative(ROOT, url) : url || "(native)";
    return short;
  };
  let total = 0;
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const n of profile.nodes) {
    const name = n.callFrame.functionName || "(anonymous)";
    if (name === "(idle)" || name === "(program)" || name === "(garbage collector)") {
      if (name === "(garbage collector)") {
        total += n.hitCount;
        byFunction.set("(garbage collector)", (byFunction.get("(garbage collector)") ?? 0) + n.hitCount);
        byFile.set("(garbage collector)", (byFile.get("(garbage collector)") ?? 0) + n.hitCount);
      }
      continue;
    }
    total += n.hitCount;
    const key = `${name} ${where(n)}:${n.callFrame.lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + n.hitCount);
    byFile.set(where(n), (byFile.get(where(n)) ?? 0) + n.hitCount);
  }
  const top = (m: Map<string, number>, k: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(
        ([name, hits]) =>
          `| ${name.replace(/\|/g, "\\|")} | ${((hits / total) * 100).toFixed(1)}% | ${(((hits / total) * plain.cpuNsPerOp) / 1000).toFixed(2)} us |`,
      );
  // Who the CPU goes to: Baton's own code, each dependency, Node.js itself.
  const byOwner = new Map<string, number>();
  for (const [file, hits] of byFile) {
    const owner = file.includes("node_modules/")
      ? (/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file)?.[1] ?? "node_modules")
      : file.includes("/src/")
        ? "Baton (src/)"
        : file.startsWith("node:")
          ? "Node.js (node:*)"
          : file;
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + hits);
  }
  const lines = [
    `# CPU profile: uncontended acquire + release on ${backend}://`,
    "",
    `Generated by \`npm run bench\` (\`node .bench/dist/bench/profile.js ${backend} ${ops}\`) on ${new Date().toISOString().slice(0, 10)}, Node ${process.version}. ${ops.toLocaleString("en-US")} sequential \`(await coord.lock(name).acquire()).release()\` on compiled Baton: **${(plain.nsPerOp / 1000).toFixed(2)} us per operation** without the profiler, of which ${(plain.cpuNsPerOp / 1000).toFixed(2)} us of this process's CPU (user + system; the rest is waiting, on a server or the kernel). Shares are of the sampled CPU time (50 us sampling, idle excluded); "per op" spreads that CPU time per operation by those shares.`,
    "",
    "## Self time by owner",
    "",
    "| Owner | share | per op |",
    "| --- | --- | --- |",
    ...top(byOwner, 12),
    "",
    "## Self time by source file",
    "",
    "| File | share | per op |",
    "| --- | --- | --- |",
    ...top(byFile, 15),
    "",
    "## Self time by function (top 30)",
    "",
    "| Function | share | per op |",
    "| --- | --- | --- |",
    ...top(byFunction, 30),
    "",
  ];
  const text = lines.join("\n");
  process.stdout.write(`${text}\n`);
  if (writeDir) {
    mkdirSync(writeDir, { recursive: true });
    writeFileSync(join(writeDir, `profile-${backend}.md`), `${text}\n`);
  }
}

main();
