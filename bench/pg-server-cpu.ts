/**
 * Server CPU per statement pattern on PostgreSQL: the backend's own CPU (/proc/PID/schedstat)
 * over N executions of each pattern, interleaved in rounds on one connection each.
 *
 *   node --import tsx bench/pg-server-cpu.ts [--cycles N] [--rounds N]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import pg from "pg";
import { connect } from "../src/index.js";
import { startPostgres } from "../test/harness/postgres.js";

const { values } = parseArgs({ options: { cycles: { type: "string" }, rounds: { type: "string" } } });
const cycles = Number(values.cycles ?? 3000);
const rounds = Number(values.rounds ?? 4);
const server = await startPostgres();
const coord = await connect(server.url, { namespace: "cpu" });
await (await coord.lock("warm").acquire()).release();
const cpuNs = (pid: number) => Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[0]);
const open = async () => {
  const c = new pg.Client({ connectionString: server.url });
  await c.connect();
  const pid = Number((await c.query("SELECT pg_backend_pid() AS p")).rows[0].p);
  return { c, pid };
};
const q = '"baton"';
type Cycle = (c: pg.Client, i: number) => Promise<void>;
const patterns: Record<string, Cycle> = {
  "raw lock+unlock": async (c) => {
    await c.query({ name: "rl", text: "SELECT pg_advisory_lock($1::bigint)", values: [111] });
    await c.query({ name: "ru", text: "SELECT pg_advisory_unlock($1::bigint)", values: [111] });
  },
  "untracked lock_acquire+unlock": async (c) => {
    await c.query({
      name: "ua",
      text: `SELECT * FROM ${q}.lock_acquire($1, $2, 'lock', $3, false, false, $4)`,
      values: [222, "cpu", "u-name", 0],
    });
    await c.query({ name: "uu", text: "SELECT pg_advisory_unlock($1::bigint)", values: [222] });
  },
  "tracked acquire+release": async (c) => {
    const r = await c.query({
      name: "ta",
      text: `SELECT * FROM ${q}.lock_acquire_tracked($1, $2, 'lock', $3, false, $4, $5)`,
      values: [333, "cpu", "t-name", 0, '{"id":"m","sid":"s","s":1}'],
    });
    const version = r.rows[0].o_version;
    await c.query({
      name: "tr",
      text: `WITH cleared AS (UPDATE ${q}.cells SET value = NULL, version = nextval('${q}.cell_versions')
        WHERE namespace = $2 AND space = 'takeover' AND key = $3 AND version = $4 RETURNING 1)
      SELECT pg_advisory_unlock($1) AS o_released, pg_backend_pid() AS o_pid,
        set_config('synchronous_commit', 'off', true) AS o_commit
      FROM (SELECT count(*) FROM cleared) AS c`,
      values: [333, "cpu", "t-name", version],
    });
  },
};
const extra = process.env.PG_EXTRA_PATTERNS;
if (extra) Object.assign(patterns, (await import(extra)).patterns(q));
const conns = new Map<string, { c: pg.Client; pid: number }>();
for (const name of Object.keys(patterns)) conns.set(name, await open());
const results = new Map<string, { server: number[]; wall: number[] }>();
for (let round = 0; round < rounds; round++) {
  for (const [name, cycle] of Object.entries(patterns)) {
    const { c, pid } = conns.get(name)!;
    for (let i = 0; i < 200; i++) await cycle(c, i);
    const before = cpuNs(pid);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < cycles; i++) await cycle(c, i);
    const wall = Number(process.hrtime.bigint() - t0) / cycles / 1000;
    const server = (cpuNs(pid) - before) / cycles / 1000;
    const r = results.get(name) ?? { server: [], wall: [] };
    r.server.push(server);
    r.wall.push(wall);
    results.set(name, r);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`| per cycle (median of ${rounds} rounds of ${cycles}) | server CPU | wall mean |`);
console.log("| --- | --- | --- |");
for (const [name, r] of results)
  console.log(`| ${name} | ${median(r.server).toFixed(1)} us | ${median(r.wall).toFixed(1)} us |`);
for (const { c } of conns.values()) await c.end();
await coord.close();
await server.stop();
