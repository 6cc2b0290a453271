/**
 * Takeover records on PostgreSQL: the server-side work of a tracked acquire + release,
 * counted by the server itself (the WAL records a cycle writes, read back with `pg_waldump`;
 * speed is measured by `npm run bench` and bench/takeover.ts, this pins down the work that
 * makes it), and the upgrade of a schema holding records of version 4.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { advisoryKey } from "../../src/backends/postgres/keys.js";
import { MIGRATIONS } from "../../src/backends/postgres/migrations.js";
import { pgBinDir, startPostgres } from "../harness/postgres.js";
import { ownServer } from "./fixtures/backend-suite.js";

const run = promisify(execFile);

interface WalCount {
  /** Records per cycle by `rmgr:kind`, of the cells table and its index only. */
  readonly cells: Record<string, number>;
  /** WAL bytes per cycle, all records. */
  readonly bytes: number;
}

/**
 * The WAL written by `cycles` runs of `cycle`, from the insert position before to the
 * position after; CHECKPOINT writes out the asynchronously committed tail first.
 */
async function walOf(
  admin: pg.Client,
  dataDir: string,
  cycles: number,
  cycle: () => Promise<unknown>,
): Promise<WalCount> {
  const lsn = async (fn: string) => (await admin.query<{ l: string }>(`SELECT ${fn}()::text AS l`)).rows[0]?.l;
  const start = await lsn("pg_current_wal_insert_lsn");
  for (let i = 0; i < cycles; i++) await cycle();
  const end = await lsn("pg_current_wal_insert_lsn");
  await admin.query("CHECKPOINT");
  const bytes = await admin.query<{ d: string }>("SELECT pg_wal_lsn_diff($1, $2)::text AS d", [end, start]);
  const files = await admin.query<{ heap: string; pkey: string }>(
    "SELECT pg_relation_filepath('baton.cells') AS heap, pg_relation_filepath('baton.cells_pkey') AS pkey",
  );
  const rels = new Set(Object.values(files.rows[0] ?? {}).map((file) => file.split("/").slice(1).join("/")));
  const { stdout } = await run(path.join(pgBinDir(), "pg_waldump"), [
    "-p",
    path.join(dataDir, "pg_wal"),
    "-s",
    String(start),
    "-e",
    String(end),
  ]);
  const cells: Record<string, number> = {};
  for (const line of stdout.split("\n")) {
    const record = /^rmgr: (\w+) .* desc: (\w+).*blkref #0: rel \d+\/(\d+\/\d+)/.exec(line);
    if (!record || !rels.has(record[3] as string)) continue;
    const kind = `${record[1]}:${record[2]}`;
    cells[kind] = (cells[kind] ?? 0) + 1;
  }
  for (const kind of Object.keys(cells)) cells[kind] = (cells[kind] as number) / cycles;
  return { cells, bytes: Number(bytes.rows[0]?.d) / cycles };
}

describe("postgres takeover records", () => {
  const { server, client } = ownServer(() => startPostgres());

  it("a tracked exclusive lock rewrites its record row in place: no index entry, no new row per cycle", async () => {
    // A TTL that no heartbeat interrupts during the loop.
    const coord = await client({ ttlMs: 60_000 });
    await coord.openSession();
    const admin = new pg.Client({ connectionString: server().url });
    await admin.connect();
    try {
      const lock = coord.lock("cost-tracked");
      // The first grant of a name registers it and creates its record row; the loop runs after.
      await (await lock.acquire()).release();
      const cycles = 20;
      const wal = await walOf(admin, server().dataDir, cycles, async () => {
        const handle = await lock.acquire();
        assert.equal(handle.takeover, null);
        assert.equal((await handle.release()).status, "released");
      });
      // One heap-only update each way (grant: the record; release: its tombstone). Schema
      // version 4 inserted a row and an index entry (and confirmed the insert) per grant,
      // and deleted the row per release: 505 WAL bytes a cycle against about 390 now.
      assert.deepEqual(wal.cells, { "Heap:HOT_UPDATE": 2 }, JSON.stringify(wal));
    } finally {
      await admin.end();
    }
  });

  it("a record a version 4 schema kept for a lost holder is handed on after the upgrade, then kept as a tombstone", async () => {
    const schema = "upgrade_v4";
    const admin = new pg.Client({ connectionString: server().url });
    await admin.connect();
    try {
      // The schema as version 4 left it (what migrate() did before version 5).
      const render = (sql: string) => sql.replaceAll("@s", `"${schema}"`).replaceAll("@lit", `'${schema}'`);
      await admin.query(`CREATE SCHEMA ${schema}`);
      await admin.query(
        `CREATE TABLE ${schema}.migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      for (const [i, sql] of MIGRATIONS.slice(0, 4).entries()) {
        await admin.query(render(sql));
        await admin.query(`INSERT INTO ${schema}.migrations (version) VALUES ($1)`, [i + 1]);
      }
      // A version 4 grant of "old" whose holder is then lost: its connection ends, holding.
      const holder = new pg.Client({ connectionString: server().url });
      await holder.connect();
      const key = advisoryKey(schema, "up", "lock", "old", 0);
      const epoch = (await holder.query(`SELECT ${schema}.epoch()::text AS e`)).rows[0].e;
      const granted = await holder.query(
        `SELECT * FROM ${schema}.lock_acquire_tracked($1, 'up', 'lock', 'old', false, $2, $3)`,
        [key, epoch, '{"m":"old-member","s":"old-session","f":{"pid":7},"d":0}'],
      );
      const lostToken = BigInt(granted.rows[0].o_token);
      await holder.end();

      const coord = await client({ schema, namespace: "up", ttlMs: 60_000 });
      const next = await coord.lock("old").acquire({ timeoutMs: 10_000 });
      assert.equal(next.takeover?.token, lostToken);
      assert.equal(next.takeover?.memberId, "old-member");
      assert.deepEqual(next.takeover?.fenceInfo, { pid: 7 });
      assert.ok(next.token > lostToken);
      assert.equal((await next.release()).status, "released");
      const [row] = (await admin.query(`SELECT value FROM ${schema}.cells WHERE space = 'takeover' AND key = 'old'`))
        .rows;
      assert.deepEqual(row, { value: null }, "the clean release leaves a tombstone");
      const again = await coord.lock("old").acquire({ timeoutMs: 10_000 });
      assert.equal(again.takeover, null);
      assert.equal((await again.release()).status, "released");
      assert.deepEqual((await coord.inspect()).takeovers, []);
      const versions = await admin.query(`SELECT max(version) AS v FROM ${schema}.migrations`);
      assert.equal(versions.rows[0].v, MIGRATIONS.length);
    } finally {
      await admin.end();
    }
  });
});
