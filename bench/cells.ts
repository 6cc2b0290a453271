/**
 * Cells under contention: C clients race `transition(n, n + 1)` on one cell for a fixed
 * time (each loser retries from the state its ConflictError carried), against the raw
 * conditional update each engine offers (an etcd txn on the mod revision; PostgreSQL's
 * `UPDATE ... WHERE version = $1`), with the same clients and the same retry rule. Prints
 * a Markdown table of transitions/s (successes) and attempts/s.
 *
 *   npx tsc -p bench/tsconfig.json && node .bench/dist/bench/cells.js [clients] [ms]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Etcd3 } from "etcd3";
import pg from "pg";
import { ConflictError, connect } from "../src/index.js";
import { startEtcd } from "../test/harness/etcd.js";
import { startPostgres } from "../test/harness/postgres.js";

const clients = Number(process.argv[2] ?? 8);
const durationMs = Number(process.argv[3] ?? 3000);

interface Result {
  readonly wins: number;
  readonly attempts: number;
}

/** Runs `clients` loops of `attempt` for `durationMs`; `attempt` resolves whether it won. */
async function race(attempt: (client: number) => Promise<boolean>): Promise<Result> {
  const end = performance.now() + durationMs;
  let wins = 0;
  let attempts = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      while (performance.now() < end) {
        attempts++;
        if (await attempt(i)) wins++;
      }
    }),
  );
  return { wins, attempts };
}

async function baton(url: string): Promise<Result> {
  const coords = await Promise.all(Array.from({ length: clients }, () => connect(url, { namespace: "bench-cells" })));
  const cells = coords.map((c) => c.cell<number>("counter"));
  await cells[0]!.set(0);
  const known = coords.map(() => 0);
  try {
    return await race(async (i) => {
      try {
        await cells[i]!.transition(known[i]!, known[i]! + 1);
        known[i]!++;
        return true;
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        known[i] = error.current?.value as number;
        return false;
      }
    });
  } finally {
    await Promise.all(coords.map((c) => c.close()));
  }
}

async function rawEtcd(hosts: string): Promise<Result> {
  const etcds = Array.from({ length: clients }, () => new Etcd3({ hosts }));
  const key = Buffer.from("bench/raw-counter");
  await etcds[0]!.put("bench/raw-counter").value("0");
  const first = await etcds[0]!.kv.range({ key });
  const known = etcds.map(() => ({ value: 0, rev: first.kvs[0]!.mod_revision }));
  try {
    return await race(async (i) => {
      const k = known[i]!;
      const response = await etcds[i]!.kv.txn({
        compare: [{ key, target: "Mod", result: "Equal", mod_revision: k.rev }],
        success: [{ request_put: { key, value: Buffer.from(String(k.value + 1)) } }],
        failure: [{ request_range: { key } }],
      });
      if (response.succeeded) {
        known[i] = { value: k.value + 1, rev: response.header.revision };
        return true;
      }
      const kv = response.responses[0]!.response_range.kvs[0]!;
      known[i] = { value: Number(kv.value.toString()), rev: kv.mod_revision };
      return false;
    });
  } finally {
    for (const e of etcds) e.close();
  }
}

async function rawPostgres(url: string): Promise<Result> {
  const pgs = Array.from({ length: clients }, () => new pg.Client({ connectionString: url }));
  await Promise.all(pgs.map((c) => c.connect()));
  await pgs[0]!.query("CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, v bigint, version bigint)");
  await pgs[0]!.query("INSERT INTO bench_counter VALUES (1, 0, 1) ON CONFLICT (id) DO UPDATE SET v = 0, version = 1");
  const known = pgs.map(() => ({ v: 0, version: 1 }));
  try {
    return await race(async (i) => {
      const k = known[i]!;
      const result = await pgs[i]!.query<{ version: string }>(
        "UPDATE bench_counter SET v = v + 1, version = version + 1 WHERE id = 1 AND version = $1 RETURNING version",
        [k.version],
      );
      if (result.rows[0]) {
        known[i] = { v: k.v + 1, version: Number(result.rows[0].version) };
        return true;
      }
      const row = (
        await pgs[i]!.query<{ v: string; version: string }>("SELECT v, version FROM bench_counter WHERE id = 1")
      ).rows[0]!;
      known[i] = { v: Number(row.v), version: Number(row.version) };
      return false;
    });
  } finally {
    await Promise.all(pgs.map((c) => c.end()));
  }
}

const rows: string[] = [];
const report = (what: string, r: Result) => {
  const s = durationMs / 1000;
  rows.push(
    `| ${what} | ${Math.round(r.wins / s)} | ${Math.round(r.attempts / s)} | ${((100 * r.wins) / r.attempts).toFixed(1)}% |`,
  );
  console.error(rows.at(-1));
};
const dir = mkdtempSync(join(process.env.BATON_HARNESS_TMPDIR ?? tmpdir(), "baton-bench-cells-"));
try {
  report("memory: baton transition", await baton("memory://bench"));
  report("file: baton transition", await baton(pathToFileURL(dir).href));
  const etcd = await startEtcd();
  try {
    report("etcd: baton transition", await baton(etcd.url));
    report("etcd: raw txn on mod revision", await rawEtcd(etcd.url.replace("etcd://", "")));
  } finally {
    await etcd.stop();
  }
  const postgres = await startPostgres();
  try {
    report("postgres: baton transition", await baton(postgres.url));
    report("postgres: raw UPDATE ... WHERE version = $1", await rawPostgres(postgres.url));
  } finally {
    await postgres.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${clients} clients in one process, one cell, ${durationMs} ms each, ${new Date().toISOString()}\n`);
console.log("| scenario | transitions/s | attempts/s | won |\n| --- | --- | --- | --- |");
console.log(rows.join("\n"));
