/**
 * What takeover tracking costs: one client acquires and releases one lock in a loop
 * (uncontended), plain and with `fenceInfo` (a cell read and a fenced write per grant, a
 * conditional delete per release), in alternating blocks so that both see the same machine
 * load. Prints a Markdown table of acquire+release pairs per second and the ratio.
 *
 *   npx tsc -p bench/tsconfig.json && node .bench/dist/bench/takeover.js [backends] [ms per block]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { connect } from "../src/index.js";
import { startEtcd } from "../test/harness/etcd.js";
import { startPostgres } from "../test/harness/postgres.js";
import { startRedis } from "../test/harness/redis.js";
import { startZooKeeper } from "../test/harness/zookeeper.js";

const backends = (process.argv[2] ?? "memory,file,etcd,postgres,redis,zookeeper").split(",");
const blockMs = Number(process.argv[3] ?? 1000);
const BLOCKS = 3;

/** Acquire+release pairs per second over `BLOCKS` blocks of each variant, interleaved. */
async function measure(url: string): Promise<{ plain: number; tracked: number }> {
  const coord = await connect(url, { namespace: "bench-takeover" });
  const lock = coord.lock("uncontended");
  const block = async (tracked: boolean) => {
    const end = performance.now() + blockMs;
    const started = performance.now();
    let n = 0;
    while (performance.now() < end) {
      const handle = await lock.acquire(tracked ? { fenceInfo: { pid: process.pid } } : {});
      await handle.release();
      n++;
    }
    return { n, ms: performance.now() - started };
  };
  const totals = { plain: { n: 0, ms: 0 }, tracked: { n: 0, ms: 0 } };
  try {
    await block(false);
    await block(true); // warm-up of both paths
    for (let i = 0; i < BLOCKS; i++) {
      for (const variant of i % 2 === 0 ? (["plain", "tracked"] as const) : (["tracked", "plain"] as const)) {
        const r = await block(variant === "tracked");
        totals[variant].n += r.n;
        totals[variant].ms += r.ms;
      }
    }
  } finally {
    await coord.close();
  }
  return {
    plain: (totals.plain.n * 1000) / totals.plain.ms,
    tracked: (totals.tracked.n * 1000) / totals.tracked.ms,
  };
}

const rows: string[] = [];
const stops: (() => Promise<void>)[] = [];
try {
  for (const backend of backends) {
    let url: string;
    if (backend === "memory") url = "memory://bench";
    else if (backend === "file") {
      // Where the servers keep their data too (BATON_HARNESS_TMPDIR, /dev/shm in bench/run.sh).
      const dir = mkdtempSync(join(process.env.BATON_HARNESS_TMPDIR ?? tmpdir(), "baton-bench-takeover-"));
      stops.push(async () => rmSync(dir, { recursive: true, force: true }));
      url = pathToFileURL(dir).href;
    } else if (backend === "etcd") {
      const server = await startEtcd();
      stops.push(() => server.stop());
      url = server.url;
    } else if (backend === "postgres") {
      const server = await startPostgres();
      stops.push(() => server.stop());
      url = server.url;
    } else if (backend === "redis") {
      const server = await startRedis({ name: "baton-bench-takeover" });
      stops.push(() => server.stop());
      url = server.url;
    } else if (backend === "zookeeper") {
      const server = await startZooKeeper();
      stops.push(() => server.stop());
      url = server.url;
    } else throw new Error(`unknown backend ${backend}`);
    const { plain, tracked } = await measure(url);
    rows.push(`| ${backend} | ${plain.toFixed(0)} | ${tracked.toFixed(0)} | ${(tracked / plain).toFixed(2)} |`);
  }
} finally {
  for (const stop of stops) await stop();
}
process.stdout.write(
  `| backend | plain acquire+release/s | with fenceInfo /s | ratio |\n| --- | ---: | ---: | ---: |\n${rows.join("\n")}\n`,
);
