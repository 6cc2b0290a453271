/**
 * What takeover tracking by default costs: acquire+release of one lock with `takeover:
 * false` (untracked: what a plain acquire did before tracking was the default) and with
 * the default (tracked: the record written with the grant, deleted with the release, in
 * the same round trip where the driver has `nativeRecords`), in alternating blocks so that
 * both see the same machine load. Two loads: one client on a free lock (uncontended), and
 * two clients of their own coordinators taking turns on one lock (handoff: nearly every
 * grant goes to a waiter as the other releases). Prints a Markdown table of
 * acquire+release pairs per second and the ratios tracked/untracked.
 *
 *   npx tsc -p bench/tsconfig.json && node .bench/dist/bench/takeover.js [backends] [ms per block]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type Coordinator, connect } from "../src/index.js";
import { startEtcd } from "../test/harness/etcd.js";
import { startMariadb } from "../test/harness/mariadb.js";
import { startPostgres } from "../test/harness/postgres.js";
import { startRedis } from "../test/harness/redis.js";
import { startZooKeeper } from "../test/harness/zookeeper.js";

const backends = (process.argv[2] ?? "memory,file,etcd,postgres,redis,zookeeper,mysql").split(",");
const blockMs = Number(process.argv[3] ?? 1000);
const BLOCKS = 3;

type Load = (coords: Coordinator[], tracked: boolean, end: number) => Promise<number>;

/** One client, one free lock. */
const uncontended: Load = async ([coord], tracked, end) => {
  const lock = (coord as Coordinator).lock("uncontended");
  let n = 0;
  while (performance.now() < end) {
    await (await lock.acquire(tracked ? {} : { takeover: false })).release();
    n++;
  }
  return n;
};

/** Two clients taking turns: each grant but the first is a handoff from the other. */
const handoff: Load = async (coords, tracked, end) => {
  const counts = await Promise.all(
    coords.map(async (coord) => {
      const lock = coord.lock("handoff");
      let n = 0;
      while (performance.now() < end) {
        const handle = await lock.acquire(tracked ? {} : { takeover: false });
        // Yield while holding, so the other client is queued when this one releases.
        await new Promise((resolve) => setImmediate(resolve));
        await handle.release();
        n++;
      }
      return n;
    }),
  );
  return counts.reduce((a, b) => a + b, 0);
};

/** Pairs per second of each variant over `BLOCKS` blocks, interleaved. */
async function measure(url: string, load: Load, clients: number): Promise<{ plain: number; tracked: number }> {
  const coords = await Promise.all(
    Array.from({ length: clients }, () => connect(url, { namespace: "bench-takeover" })),
  );
  const block = async (tracked: boolean) => {
    const started = performance.now();
    const n = await load(coords, tracked, started + blockMs);
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
    await Promise.all(coords.map((c) => c.close()));
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
    } else if (backend === "mysql") {
      const server = await startMariadb();
      stops.push(() => server.stop());
      url = server.url;
    } else throw new Error(`unknown backend ${backend}`);
    const one = await measure(url, uncontended, 1);
    const two = await measure(url, handoff, 2);
    const cells = [one, two].map(
      (r) => `${r.plain.toFixed(0)} | ${r.tracked.toFixed(0)} | ${(r.tracked / r.plain).toFixed(2)}`,
    );
    rows.push(`| ${backend} | ${cells.join(" | ")} |`);
  }
} finally {
  for (const stop of stops) await stop();
}
process.stdout.write(
  "| backend | uncontended, untracked /s | tracked /s | ratio | handoff, untracked /s | tracked /s | ratio |\n" +
    `| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n${rows.join("\n")}\n`,
);
