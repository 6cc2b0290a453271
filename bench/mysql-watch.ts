/**
 * What the MySQL backend's two polls cost (it declares `pushEvents: false`), measured through
 * Baton's public API against a throwaway MariaDB (test/harness startMariadb), all coordinators
 * in this one process (one clock for writer and watcher):
 *
 * - `latency`: a record write in one coordinator to the event's arrival in a group watch in
 *   another. Writes go one at a time, in turn a `Membership.update()` by a member, a `join()`
 *   and a `leave()` by a second coordinator, each after a random pause of 0 to 300 ms from
 *   the last event's arrival: that arrival came at one of the watcher's polls, so a pause over
 *   a whole number of 100 ms periods puts the write at any phase of the poll alike. Timed from
 *   just before the call to the watch's event (so the write's own round trip is in it);
 *   `write` is the call alone.
 * - `idle`: what idle watches cost the server. N coordinators (0, 10, 50), each with a group
 *   watch that sees no change, against the same N coordinators with no watch, in alternating
 *   windows: rates from `SHOW GLOBAL STATUS` deltas (`Questions`: statements clients sent;
 *   `statements`: the `Com_*` counters summed, which count the statements run inside stored
 *   procedures too; `Queries`: every instruction of a stored program as well, `SET` and
 *   `IF` included; the meter's own `SHOW` left out) and mariadbd's CPU (utime + stime of
 *   /proc/PID/stat, every thread, in clock ticks).
 * - `semaphore`: the semaphore waiter's 50 ms server-side poll (SEM_POLL_MS in
 *   src/backends/mysql/session.ts). Its cost: N waiters (0, 10, 50, one coordinator, one lane
 *   each) on a semaphore whose 2 permits are held, against N waiters on a held exclusive lock
 *   (pushed, no poll), measured as `idle` is. Its latency: a permit released by the holder
 *   the waiter does not sleep on (the newer of two; the poll finds it) to the waiter's grant,
 *   against a limit-1 semaphore's handoff (the waiter sleeps on that holder's key: pushed).
 *
 *   node --import tsx bench/mysql-watch.ts [latency] [idle] [semaphore] [--events 300]
 *     [--window-ms 5000] [--rounds 2] [--counts 0,10,50]
 *
 * The machine is shared with other work: CPU figures are per window and vary; statement
 * counts are exact.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import mysql from "mysql2/promise";
import { type Coordinator, connect, type LockHandle, type Membership } from "../src/index.js";
import { type MariadbServer, startMariadb } from "../test/harness/mariadb.js";
import { median, percentile as pct } from "./lib/stats.js";

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

const ms = (v: number) => `${v.toFixed(1)} ms`;

// ---- server readings ---------------------------------------------------------------------------

interface Reading {
  readonly questions: number;
  readonly statements: number;
  readonly queries: number;
  readonly ticks: number;
  readonly at: number;
}

interface Rate {
  readonly questions: number;
  /** Statements by kind (`Com_*`), those inside procedures included. */
  readonly statements: number;
  readonly queries: number;
  /** mariadbd CPU, % of one core. */
  readonly cpu: number;
}

/** Readings of one server over a connection of its own (never a coordinator's). */
async function meter(server: MariadbServer) {
  const conn = await mysql.createConnection({ uri: server.url });
  const read = async (): Promise<Reading> => {
    const [rows] = await conn.query(
      "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Queries') OR Variable_name LIKE 'Com\\_%'",
    );
    const status = new Map((rows as { Variable_name: string; Value: string }[]).map((r) => [r.Variable_name, r.Value]));
    let statements = 0;
    for (const [name, value] of status)
      if (name.startsWith("Com_") && name !== "Com_show_status") statements += Number(value);
    const stat = readFileSync(`/proc/${server.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat(5) (utime, stime); fields[0] is field 3.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return {
      questions: Number(status.get("Questions")),
      statements,
      queries: Number(status.get("Queries")),
      ticks,
      at: now(),
    };
  };
  /** Rates over the next `windowMs`. */
  const over = async (windowMs: number): Promise<Rate> => {
    const a = await read();
    await sleep(windowMs);
    const b = await read();
    const s = (b.at - a.at) / 1000;
    // One statement of the pair (the second reading) is the meter's own.
    return {
      questions: (b.questions - a.questions - 1) / s,
      statements: (b.statements - a.statements) / s,
      queries: (b.queries - a.queries - 1) / s,
      cpu: ((b.ticks - a.ticks) / CLK_TCK / s) * 100,
    };
  };
  return { over, close: () => conn.end() };
}

type Meter = Awaited<ReturnType<typeof meter>>;

let members = 0;

async function coordinators(url: string, n: number, options: { maxConnections?: number } = {}): Promise<Coordinator[]> {
  const out: Coordinator[] = [];
  const query = options.maxConnections ? `?maxConnections=${options.maxConnections}` : "";
  // In batches: 50 at once would queue on the migration lock for nothing.
  for (let i = 0; i < n; i += 10) {
    const batch = Array.from({ length: Math.min(10, n - i) }, () =>
      connect(`${url}${query}`, { namespace: "bench", memberId: `m${++members}` }),
    );
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/**
 * Alternating windows, `rounds` of each: `quiet` then `busy` (started by `start`, ended by the
 * function it returns). Per-unit figures are (busy - quiet) / n.
 */
async function compare(
  m: Meter,
  label: string,
  n: number,
  windowMs: number,
  rounds: number,
  start: () => Promise<() => Promise<void>>,
): Promise<{ quiet: Rate[]; busy: Rate[] }> {
  const quiet: Rate[] = [];
  const busy: Rate[] = [];
  for (let round = 0; round < rounds; round++) {
    await sleep(500);
    quiet.push(await m.over(windowMs));
    const stop = await start();
    await sleep(1000);
    busy.push(await m.over(windowMs));
    await stop();
    const line = (r: Rate) =>
      `${r.questions.toFixed(1)} questions/s ${r.statements.toFixed(1)} statements/s ${r.queries.toFixed(1)} queries/s ${r.cpu.toFixed(1)}% cpu`;
    console.log(
      `${label} n=${n} round ${round + 1}/${rounds}: without ${line(quiet.at(-1)!)}; with ${line(busy.at(-1)!)}`,
    );
  }
  return { quiet, busy };
}

function rateTable(title: string, unit: string, rows: Map<number, { quiet: Rate[]; busy: Rate[] }>): void {
  const fields = ["questions", "statements", "queries", "cpu"] as const;
  console.log(`\n${title}: with (without), medians of the windows; per ${unit}: (with - without) / n`);
  console.log(
    "| n | questions/s | statements/s | queries/s | mariadbd CPU | per: questions/s | statements/s | queries/s | CPU |",
  );
  console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [n, { quiet, busy }] of rows) {
    const field = (xs: Rate[], f: keyof Rate) => median(xs.map((x) => x[f]));
    const show = (f: keyof Rate, v: number) => (f === "cpu" ? `${v.toFixed(2)}%` : v.toFixed(1));
    const total = fields.map((f) => `${show(f, field(busy, f))} (${show(f, field(quiet, f))})`);
    const per = fields.map((f) => (n > 0 ? show(f, (field(busy, f) - field(quiet, f)) / n) : ""));
    console.log(`| ${n} | ${total.join(" | ")} | ${per.join(" | ")} |`);
  }
}

// ---- latency -----------------------------------------------------------------------------------

async function latency(server: MariadbServer, events: number): Promise<void> {
  const [writer, joiner, watcher] = await coordinators(server.url, 3);
  const group = "bench-latency";
  const membership = await writer!.group(group).join({ i: -1 });
  const stop = new AbortController();
  // The write in flight: what its event looks like, and who waits for it.
  const pending: { expect: (type: string, memberId: string, i: number) => boolean; arrived: () => void } = {
    expect: () => false,
    arrived: () => {},
  };
  const watching = (async () => {
    for await (const event of watcher!.group<{ i: number }>(group).watch({ signal: stop.signal })) {
      if (event.type === "join" && event.existing) continue;
      const memberId = event.type === "leave" ? event.memberId : event.member.memberId;
      const i = event.type === "leave" ? -1 : event.member.capabilities.i;
      if (pending.expect(event.type, memberId, i)) pending.arrived();
    }
  })();
  await sleep(500);
  const kinds = ["update", "join", "leave"] as const;
  const results = new Map<string, { total: number[]; write: number[] }>(
    kinds.map((k) => [k, { total: [], write: [] }]),
  );
  let joined: Membership | null = null;
  for (let i = 0; i < events; i++) {
    const kind = kinds[i % kinds.length]!;
    await sleep(Math.random() * 300);
    const seen = new Promise<number>((done) => {
      pending.arrived = () => done(now());
    });
    pending.expect =
      kind === "update"
        ? (type, member, n) => type === "update" && member === writer!.memberId && n === i
        : kind === "join"
          ? (type, member) => type === "join" && member === joiner!.memberId
          : (type, member) => type === "leave" && member === joiner!.memberId;
    const t0 = now();
    if (kind === "update") await membership.update({ i });
    else if (kind === "join") joined = await joiner!.group(group).join({ i });
    else await joined!.leave();
    const t1 = now();
    const t2 = await Promise.race([seen, sleep(5000).then(() => Number.NaN)]);
    if (Number.isNaN(t2)) throw new Error(`event ${i} (${kind}) did not arrive within 5 s`);
    results.get(kind)!.total.push(t2 - t0);
    results.get(kind)!.write.push(t1 - t0);
  }
  stop.abort();
  await watching.catch(() => {});
  const all = [...results.values()].flatMap((r) => r.total);
  const writes = [...results.values()].flatMap((r) => r.write);
  console.log("\n| write -> watch event | events | p50 | p90 | p99 | max | write alone p50 |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [kind, r] of results) {
    console.log(
      `| ${kind} | ${r.total.length} | ${ms(pct(r.total, 50))} | ${ms(pct(r.total, 90))} | ${ms(pct(r.total, 99))} ` +
        `| ${ms(Math.max(...r.total))} | ${ms(pct(r.write, 50))} |`,
    );
  }
  console.log(
    `| all | ${all.length} | ${ms(pct(all, 50))} | ${ms(pct(all, 90))} | ${ms(pct(all, 99))} ` +
      `| ${ms(Math.max(...all))} | ${ms(pct(writes, 50))} |`,
  );
  await Promise.all([writer, joiner, watcher].map((c) => c!.close()));
}

// ---- idle watches ------------------------------------------------------------------------------

async function idle(server: MariadbServer, counts: number[], windowMs: number, rounds: number): Promise<void> {
  const m = await meter(server);
  const rows = new Map<number, { quiet: Rate[]; busy: Rate[] }>();
  for (const n of counts) {
    const coords = await coordinators(server.url, n);
    rows.set(
      n,
      await compare(m, "idle watches", n, windowMs, rounds, async () => {
        const stop = new AbortController();
        const loops = coords.map(async (coord, i) => {
          // One group each: no two share a reader, none sees an event.
          for await (const _ of coord.group(`bench-idle-${i}`).watch({ signal: stop.signal })) {
            /* nothing changes */
          }
        });
        return async () => {
          stop.abort();
          await Promise.allSettled(loops);
        };
      }),
    );
    await Promise.all(coords.map((c) => c.close()));
  }
  await m.close();
  rateTable("watching coordinators", "watch", rows);
}

// ---- semaphore poll ----------------------------------------------------------------------------

async function semaphoreCost(server: MariadbServer, counts: number[], windowMs: number, rounds: number) {
  const m = await meter(server);
  const [holder] = await coordinators(server.url, 1);
  const permits = await Promise.all([0, 1].map(() => holder!.semaphore("bench-sem", { limit: 2 }).acquire()));
  const lockHeld = await holder!.lock("bench-lock").acquire();
  for (const kind of ["semaphore", "lock"] as const) {
    const rows = new Map<number, { quiet: Rate[]; busy: Rate[] }>();
    for (const n of counts) {
      const [waiters] = await coordinators(server.url, 1, { maxConnections: Math.max(2, n + 2) });
      await waiters!.openSession();
      rows.set(
        n,
        await compare(m, `${kind} waiters`, n, windowMs, rounds, async () => {
          const stop = new AbortController();
          const waits = Array.from({ length: n }, () =>
            (kind === "semaphore"
              ? waiters!.semaphore("bench-sem", { limit: 2 }).acquire({ signal: stop.signal })
              : waiters!.lock("bench-lock").acquire({ signal: stop.signal })
            ).then(
              () => {
                throw new Error(`a ${kind} waiter was granted`);
              },
              () => {},
            ),
          );
          return async () => {
            stop.abort();
            await Promise.all(waits);
          };
        }),
      );
      await waiters!.close();
    }
    rateTable(`${kind} waiters`, "waiter", rows);
  }
  await Promise.all([...permits, lockHeld].map((h) => h.release()));
  await holder!.close();
  await m.close();
}

/**
 * Release to grant. `limit 2`: a permit holder that has held since the start (the oldest
 * entry, which a waiter sleeps on) and two coordinators taking turns: one holds the second
 * permit and releases it, the other waits and is granted, then they swap. `limit 1`: the two
 * take turns on a semaphore of one permit (the waiter sleeps on the holder's key).
 */
async function semaphoreLatency(server: MariadbServer, cycles: number): Promise<void> {
  const [oldest, a, b] = await coordinators(server.url, 3);
  const results = new Map<string, number[]>();
  for (const limit of [2, 1]) {
    const name = `bench-sem-latency-${limit}`;
    const first = limit === 2 ? await oldest!.semaphore(name, { limit }).acquire() : null;
    let holding: { coord: Coordinator; handle: LockHandle } = {
      coord: a!,
      handle: await a!.semaphore(name, { limit }).acquire(),
    };
    const out: number[] = [];
    for (let i = 0; i < cycles; i++) {
      const waiter = holding.coord === a ? b! : a!;
      const granted = waiter.semaphore(name, { limit }).acquire({ timeoutMs: 10_000 });
      // Well after the waiter has queued, at a random phase of its 50 ms poll.
      await sleep(60 + Math.random() * 50);
      const t0 = now();
      await holding.handle.release();
      const handle = await granted;
      out.push(now() - t0);
      holding = { coord: waiter, handle };
    }
    await holding.handle.release();
    await first?.release();
    results.set(limit === 2 ? "limit 2, release by the holder not slept on" : "limit 1 (pushed)", out);
  }
  console.log("\n| semaphore: release -> waiter granted | cycles | p50 | p90 | p99 | max |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const [what, out] of results) {
    console.log(
      `| ${what} | ${out.length} | ${ms(pct(out, 50))} | ${ms(pct(out, 90))} | ${ms(pct(out, 99))} | ${ms(Math.max(...out))} |`,
    );
  }
  await Promise.all([oldest, a, b].map((c) => c!.close()));
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      events: { type: "string" },
      "window-ms": { type: "string" },
      rounds: { type: "string" },
      counts: { type: "string" },
    },
  });
  const events = Number(values.events ?? 300);
  const windowMs = Number(values["window-ms"] ?? 5000);
  const rounds = Number(values.rounds ?? 2);
  const counts = (values.counts ?? "0,10,50").split(",").map(Number);
  const which = positionals.length > 0 ? positionals : ["latency", "idle", "semaphore"];
  const server = await startMariadb();
  try {
    console.log(`mysql-watch: ${new Date().toISOString()}, mariadbd pid ${server.pid}, CLK_TCK ${CLK_TCK}`);
    for (const name of which) {
      if (name === "latency") await latency(server, events);
      else if (name === "idle") await idle(server, counts, windowMs, rounds);
      else if (name === "semaphore") {
        await semaphoreLatency(server, Math.max(50, Math.floor(events / 3)));
        await semaphoreCost(server, counts, windowMs, rounds);
      } else throw new Error(`unknown part ${name}: use latency, idle or semaphore`);
    }
  } finally {
    await server.stop();
  }
  process.exit(0);
}

void main();
