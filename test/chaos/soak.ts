/**
 * npm run soak -- --backend <memory|file|etcd|postgres|redis|zookeeper|mysql> [--seconds N] [--coordinators N]
 *   [--names N] [--out FILE]
 *
 * Many coordinators in this one process looping acquire -> hold -> release over many names,
 * for a bounded time, sampling heap, RSS, open file descriptors and active handles every
 * interval and counting process warnings (MaxListenersExceededWarning above all). It fails if
 * any warning was emitted, if more than 1 % of the acquisitions failed, or if, from the first third of the curve (after a warm-up sample)
 * to the last, the maximum of open file descriptors grew by more than 10 % (+5), the median
 * of active handles by more than 25 % (+5) or the median heap after a full GC by more than
 * 50 % (+10 MB). Runs with --expose-gc (scripts/chaos.sh) so the heap is sampled after a GC.
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { connect, type Coordinator } from "../../src/index.js";
import { startEtcd } from "../harness/etcd.js";
import { startMariadb } from "../harness/mariadb.js";
import { startPostgres } from "../harness/postgres.js";
import { delay, makeTempDir, removeTempDir } from "../harness/proc.js";
import { startRedis } from "../harness/redis.js";
import { startZooKeeper } from "../harness/zookeeper.js";
import { mulberry32 } from "./rng.js";

const { values } = parseArgs({
  options: {
    backend: { type: "string" },
    seconds: { type: "string" },
    coordinators: { type: "string" },
    names: { type: "string" },
    out: { type: "string" },
  },
});
const backend = values.backend ?? "file";
const seconds = Number(values.seconds ?? 60);
const count = Number(values.coordinators ?? 200);
const names = Number(values.names ?? 1000);
if (![seconds, count, names].every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write("soak: --seconds, --coordinators and --names must be positive integers\n");
  process.exit(64);
}

async function startTarget(): Promise<{ url: string; stop: () => Promise<void> }> {
  switch (backend) {
    case "memory":
      return { url: `memory://soak-${process.pid}`, stop: async () => {} };
    case "file": {
      const dir = makeTempDir("baton-soak-");
      return { url: `file://${path.join(dir, "locks")}`, stop: async () => removeTempDir(dir) };
    }
    case "etcd": {
      const server = await startEtcd();
      return { url: server.url, stop: () => server.stop() };
    }
    case "postgres": {
      // Every coordinator holds a control connection and at least one lane.
      const server = await startPostgres({ maxConnections: 3 * count + 50 });
      return { url: server.url, stop: () => server.stop() };
    }
    case "redis": {
      const server = await startRedis();
      return { url: server.url, stop: () => server.stop() };
    }
    case "zookeeper": {
      const server = await startZooKeeper();
      return { url: server.url, stop: () => server.stop() };
    }
    case "mysql": {
      // A coordinator holds a control connection and at least one lane: 200 of them need
      // more than the harness's 400 connections.
      const server = await startMariadb({ args: ["--max-connections=1000"] });
      return { url: server.url, stop: () => server.stop() };
    }
    default:
      process.stderr.write(
        `soak: unknown backend ${JSON.stringify(backend)}; known: memory, file, etcd, postgres, redis, zookeeper, mysql\n`,
      );
      process.exit(64);
  }
}

const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${w.name}: ${w.message}`));
const fds = () => fs.readdirSync("/proc/self/fd").length;
interface Sample {
  atS: number;
  heapMB: number;
  rssMB: number;
  fds: number;
  handles: number;
  grants: number;
}
const samples: Sample[] = [];
let grants = 0;
let errors = 0;
let firstError: string | undefined;

const target = await startTarget();
const coords: Coordinator[] = [];
for (let i = 0; i < count; i++) coords.push(await connect(target.url, { namespace: "soak", memberId: `soak-${i}` }));
const started = performance.now();
const deadline = started + seconds * 1000;
const loops = coords.map(async (coord, i) => {
  const random = mulberry32(i + 1);
  while (performance.now() < deadline) {
    try {
      const handle = await coord.lock(`n-${Math.floor(random() * names)}`).acquire({ timeoutMs: 2000 });
      grants++;
      await delay(Math.floor(random() * 5));
      await handle.release();
    } catch (error) {
      errors++;
      firstError ??= `${(error as Error).name}: ${(error as Error).message}`;
    }
  }
});
const interval = Math.max(1, Math.floor(seconds / 12)) * 1000;
const sampler = (async () => {
  while (performance.now() < deadline) {
    await delay(interval);
    // After a full GC the heap is the live set, not wherever the GC's sawtooth happens to be.
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    samples.push({
      atS: Math.round((performance.now() - started) / 1000),
      heapMB: Math.round(m.heapUsed / 1e5) / 10,
      rssMB: Math.round(m.rss / 1e5) / 10,
      fds: fds(),
      handles: process.getActiveResourcesInfo().length,
      grants,
    });
    process.stderr.write(`soak: ${JSON.stringify(samples.at(-1))}\n`);
  }
})();
await Promise.all([...loops, sampler]);
await Promise.all(coords.map((c) => c.close()));
await target.stop();

// Thirds of the curve after the first sample (warm-up): the last third must not have grown
// past the first. The final sample, taken as the loops wind down, is left out.
const curve = samples.slice(1, -1);
const third = Math.max(1, Math.floor(curve.length / 3));
const early = curve.slice(0, third);
const late = curve.slice(-third);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const max = (xs: number[]) => Math.max(...xs);
const problems = [...warnings];
// A soak that mostly failed measured nothing.
if (grants === 0 || errors > (grants + errors) / 100) {
  problems.push(`${errors} of ${grants + errors} acquisitions failed; the first: ${firstError}`);
}
if (early.length > 0 && late.length > 0) {
  const [fa, fb] = [max(early.map((x) => x.fds)), max(late.map((x) => x.fds))];
  if (fb > fa * 1.1 + 5) problems.push(`file descriptors grew from ${fa} to ${fb}`);
  // Active handles count requests in flight too: compare medians.
  const [ha, hb] = [median(early.map((x) => x.handles)), median(late.map((x) => x.handles))];
  if (hb > ha * 1.25 + 5) problems.push(`active handles grew from a median of ${ha} to ${hb}`);
  const [a, b] = [median(early.map((x) => x.heapMB)), median(late.map((x) => x.heapMB))];
  if (b > a * 1.5 + 10) problems.push(`heap grew from a median of ${a} MB to ${b} MB`);
}
const ok = problems.length === 0;
const out = values.out ?? `soak-${backend}.json`;
fs.writeFileSync(
  out,
  `${JSON.stringify({ backend, seconds, coordinators: count, names, grants, errors, firstError, warnings, samples, problems, ok }, null, 2)}\n`,
);
process.stdout.write(
  `soak ${backend}: ${ok ? "PASS" : "FAIL"} — ${count} coordinators, ${names} names, ${seconds} s, ${grants} grants, ${errors} errors, ${warnings.length} warnings${ok ? "" : `: ${problems.join("; ")}`} (report: ${out})\n`,
);
process.exit(ok ? 0 : 1);
