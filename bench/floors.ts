/**
 * Floors that bound two goals of the backend issues, measured with the raw client libraries
 * and no Baton code, so that a goal below them is shown to be out of reach of any
 * implementation on this machine (not only of Baton's):
 *
 * - `redis-wake`: the cheapest pushed handoff through Redis. A "holder" process sends one
 *   command (PUBLISH, the least a release that wakes a waiter can send) and a "waiter" process,
 *   subscribed and idle, receives the message. Timed from just before the command is handed to
 *   the client library to the message's arrival in the other process (`process.hrtime.bigint()`
 *   is CLOCK_MONOTONIC, one clock for both). With node-redis (Baton's client) and ioredis (the
 *   peers'), alternating blocks. A waiter woken by a message cannot be granted sooner.
 * - `mysql-fenced`: the cheapest fenced lock on MariaDB. On one connection, alternating blocks:
 *   `raw` = GET_LOCK + RELEASE_LOCK (the issue's floor); `token` = GET_LOCK and a counter row's
 *   increment in one round trip (a multi-statement query) + RELEASE_LOCK: the least a lock with
 *   a fencing token stored on the server must do; `token+record` = as `token`, also writing a
 *   holder record at the grant and deleting it at the release (what takeover tracking, on by
 *   default, adds). Ratios are to `raw` within the same block pair.
 *
 * - `zk-queue`: the cheapest queue lock on ZooKeeper, with node-zookeeper-client (Baton's
 *   client): the issue's floor (create + delete), Curator's recipe (a sequential node, the read
 *   that shows it first, the delete) and the same with the holder's record written and deleted
 *   in the same transactions (takeover tracking, on by default).
 *
 *   node --import tsx bench/floors.ts [redis-wake] [mysql-fenced] [zk-queue] [--ms 2000] [--rounds 5]
 */
import { fork } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { percentile as pct } from "./lib/stats.js";

const require = createRequire(import.meta.url);
const now = () => Number(process.hrtime.bigint());
const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));
const here = fileURLToPath(import.meta.url);

const us = (ns: number) => `${(ns / 1000).toFixed(1)} us`;

// ---- redis-wake ------------------------------------------------------------------------------

type Lib = "node-redis" | "ioredis";

interface PubSub {
  subscribe(channel: string, onMessage: (message: string) => void): Promise<void>;
  publish(channel: string, message: string): Promise<unknown>;
  close(): Promise<void>;
}

async function open(lib: Lib, url: string): Promise<PubSub> {
  if (lib === "node-redis") {
    const { createClient } = require("redis") as typeof import("redis");
    const client = createClient({ url });
    await client.connect();
    return {
      subscribe: async (channel, onMessage) => {
        await client.subscribe(channel, onMessage);
      },
      publish: (channel, message) => client.publish(channel, message),
      close: async () => {
        await client.quit();
      },
    };
  }
  const mod = require("ioredis") as { default?: unknown };
  const Redis = (mod.default ?? mod) as new (
    url: string,
  ) => {
    subscribe(channel: string): Promise<unknown>;
    on(event: "message", listener: (channel: string, message: string) => void): void;
    publish(channel: string, message: string): Promise<unknown>;
    quit(): Promise<unknown>;
  };
  const client = new Redis(url);
  return {
    subscribe: async (channel, onMessage) => {
      client.on("message", (_c, m) => onMessage(m));
      await client.subscribe(channel);
    },
    publish: (channel, message) => client.publish(channel, message),
    close: async () => {
      await client.quit();
    },
  };
}

/** Child: `--wake-child LIB URL ROLE`. The waiter reports each message's delay to the parent. */
async function wakeChild(lib: Lib, url: string, role: string): Promise<void> {
  const client = await open(lib, url);
  if (role === "waiter") {
    const delays: number[] = [];
    await client.subscribe("floor", (message) => {
      delays.push(now() - Number(message));
    });
    process.on("message", (m: { op: string }) => {
      if (m.op === "report") {
        process.send?.({ delays: delays.splice(0) });
      } else if (m.op === "exit") void client.close().then(() => process.exit(0));
    });
    process.send?.({ ready: true });
    return;
  }
  process.on("message", async (m: { op: string; count: number; gapMs: number }) => {
    if (m.op === "run") {
      for (let i = 0; i < m.count; i++) {
        // Hold 1 ms, think 1 ms: the bench's handoff loop, so the waiter's process is idle
        // (asleep in epoll) when the message comes, as a waiting lock holder's would be.
        await sleep(m.gapMs);
        await client.publish("floor", String(now()));
      }
      process.send?.({ done: true });
    } else if (m.op === "exit") void client.close().then(() => process.exit(0));
  });
  process.send?.({ ready: true });
}

async function redisWake(ms: number, rounds: number): Promise<void> {
  const { startRedis } = await import("../test/harness/redis.js");
  const server = await startRedis();
  const libs: Lib[] = ["node-redis", "ioredis"];
  const results = new Map<Lib, number[]>(libs.map((l) => [l, []]));
  try {
    const procs = new Map<Lib, { waiter: ReturnType<typeof fork>; holder: ReturnType<typeof fork> }>();
    for (const lib of libs) {
      const waiter = fork(here, ["--wake-child", lib, server.url, "waiter"], { serialization: "advanced" });
      const holder = fork(here, ["--wake-child", lib, server.url, "holder"], { serialization: "advanced" });
      await Promise.all([waiter, holder].map((c) => new Promise<void>((done) => c.once("message", () => done()))));
      procs.set(lib, { waiter, holder });
    }
    const count = Math.max(50, Math.floor(ms / 2));
    for (let round = 0; round < rounds; round++) {
      for (const lib of libs) {
        const { waiter, holder } = procs.get(lib)!;
        await new Promise<void>((done) => {
          holder.once("message", () => done());
          holder.send({ op: "run", count, gapMs: 2 });
        });
        await sleep(50);
        const delays = await new Promise<number[]>((done) => {
          waiter.once("message", (m: { delays: number[] }) => done(m.delays));
          waiter.send({ op: "report" });
        });
        results.get(lib)!.push(...delays);
        console.log(`redis-wake ${lib} round ${round + 1}/${rounds}: p50 ${us(pct(delays, 50))}, n=${delays.length}`);
      }
    }
    for (const { waiter, holder } of procs.values()) for (const c of [waiter, holder]) c.send({ op: "exit" });
  } finally {
    await server.stop();
  }
  console.log("\n| client | messages | p50 | p99 |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const [lib, delays] of results) {
    console.log(`| ${lib} | ${delays.length} | ${us(pct(delays, 50))} | ${us(pct(delays, 99))} |`);
  }
}

// ---- mysql-fenced ----------------------------------------------------------------------------

interface Conn {
  query(sql: string, values?: unknown[]): Promise<unknown>;
  end(): Promise<void>;
}

async function mysqlFenced(ms: number, rounds: number): Promise<void> {
  const { startMariadb } = await import("../test/harness/mariadb.js");
  const server = await startMariadb();
  const mysql = require("mysql2/promise") as {
    createConnection(o: { uri: string; multipleStatements: boolean }): Promise<Conn>;
  };
  const conn = await mysql.createConnection({ uri: server.url, multipleStatements: true });
  const kinds = ["raw", "token", "token+record"] as const;
  const cycles = new Map<string, number[]>(kinds.map((k) => [k, []]));
  try {
    await conn.query("CREATE TABLE floor_tokens (k VARBINARY(64) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB");
    await conn.query(
      "CREATE TABLE floor_records (k VARBINARY(64) PRIMARY KEY, token BIGINT NOT NULL, rec VARBINARY(255)) ENGINE=InnoDB",
    );
    await conn.query("INSERT INTO floor_tokens VALUES ('x', 0)");
    const run: Record<(typeof kinds)[number], () => Promise<void>> = {
      raw: async () => {
        await conn.query("SELECT GET_LOCK('x', 0)");
        await conn.query("SELECT RELEASE_LOCK('x')");
      },
      token: async () => {
        await conn.query(
          "SELECT GET_LOCK('x', 0); UPDATE floor_tokens SET n = LAST_INSERT_ID(n + 1) WHERE k = 'x'; SELECT LAST_INSERT_ID()",
        );
        await conn.query("SELECT RELEASE_LOCK('x')");
      },
      "token+record": async () => {
        await conn.query(
          "SELECT GET_LOCK('x', 0); UPDATE floor_tokens SET n = LAST_INSERT_ID(n + 1) WHERE k = 'x'; " +
            "INSERT INTO floor_records VALUES ('x', LAST_INSERT_ID(), 'member m1 session s1') " +
            "ON DUPLICATE KEY UPDATE token = VALUES(token), rec = VALUES(rec)",
        );
        await conn.query("DELETE FROM floor_records WHERE k = 'x'; SELECT RELEASE_LOCK('x')");
      },
    };
    await alternate("mysql-fenced", run, cycles, rounds, ms);
  } finally {
    await conn.end();
    await server.stop();
  }
  table(cycles, "raw");
}

// ---- zk-queue --------------------------------------------------------------------------------

interface ZkTxn {
  create(path: string, data: Buffer, mode: number): ZkTxn;
  remove(path: string, version: number): ZkTxn;
  commit(cb: (error: unknown, results: { path?: string }[]) => void): void;
}
interface ZkClient {
  connect(): void;
  close(): void;
  once(event: string, listener: () => void): void;
  create(path: string, data: Buffer, mode: number, cb: (error: unknown, path: string) => void): void;
  remove(path: string, version: number, cb: (error: unknown) => void): void;
  getChildren(path: string, cb: (error: unknown, children: string[]) => void): void;
  transaction(): ZkTxn;
}

async function zkQueue(ms: number, rounds: number): Promise<void> {
  const { startZooKeeper } = await import("../test/harness/zookeeper.js");
  const server = await startZooKeeper();
  const zk = require("node-zookeeper-client") as { createClient(a: string, o: object): ZkClient };
  const client = zk.createClient(server.address, { sessionTimeout: 10_000 });
  await new Promise<void>((done) => {
    client.once("connected", done);
    client.connect();
  });
  const cb =
    <T>(done: (v: T) => void, fail: (e: unknown) => void) =>
    (error: unknown, value?: T) =>
      error ? fail(error) : done(value as T);
  const create = (path: string, mode: number) =>
    new Promise<string>((done, fail) => client.create(path, Buffer.alloc(0), mode, cb(done, fail)));
  const remove = (path: string) => new Promise<void>((done, fail) => client.remove(path, -1, cb(done, fail)));
  const children = (path: string) => new Promise<string[]>((done, fail) => client.getChildren(path, cb(done, fail)));
  const commit = (txn: ZkTxn) => new Promise<{ path?: string }[]>((done, fail) => txn.commit(cb(done, fail)));
  const EPHEMERAL = 1;
  const EPHEMERAL_SEQUENTIAL = 3;
  const record = Buffer.from(JSON.stringify({ member: "m1", session: "s1", since: Date.now() }));
  await create("/floor", 0);
  await create("/floor/q", 0);
  await create("/floor/r", 0);
  const kinds = ["create+delete", "queue (create, read, delete)", "queue + record (multi, read, multi)"] as const;
  const run: Record<(typeof kinds)[number], () => Promise<void>> = {
    // The floor (bench/lib/impls.ts rawZooKeeper): one create and one delete.
    "create+delete": async () => {
      await create("/floor/x", EPHEMERAL);
      await remove("/floor/x");
    },
    // The least a queue lock (Curator's recipe) sends: its sequential node, the read that shows
    // it first, the delete.
    "queue (create, read, delete)": async () => {
      const path = await create("/floor/q/n-", EPHEMERAL_SEQUENTIAL);
      await children("/floor/q");
      await remove(path);
    },
    // With the holder's record (takeover tracking, on by default) in the same transactions.
    "queue + record (multi, read, multi)": async () => {
      const [node] = await commit(
        client
          .transaction()
          .create("/floor/q/n-", Buffer.alloc(0), EPHEMERAL_SEQUENTIAL)
          .create("/floor/r/x", record, EPHEMERAL),
      );
      await children("/floor/q");
      await commit(client.transaction().remove(node!.path!, -1).remove("/floor/r/x", -1));
    },
  };
  const cycles = new Map<string, number[]>(kinds.map((k) => [k, []]));
  try {
    await alternate("zk-queue", run, cycles, rounds, ms);
  } finally {
    client.close();
    await server.stop();
  }
  table(cycles, "create+delete");
}

/**
 * Warms every cycle up, then times them in `rounds` rounds of alternating blocks (each
 * cycle `ms / kinds` milliseconds per round) so that drift hits all alike; appends each
 * cycle's times (ns) to `cycles`.
 */
async function alternate(
  label: string,
  run: Record<string, () => Promise<void>>,
  cycles: Map<string, number[]>,
  rounds: number,
  ms: number,
): Promise<void> {
  const kinds = Object.keys(run);
  for (const kind of kinds) for (let i = 0; i < 200; i++) await run[kind]!();
  for (let round = 0; round < rounds; round++) {
    for (const kind of kinds) {
      const out = cycles.get(kind)!;
      const end = now() + (ms / kinds.length) * 1e6;
      const start = out.length;
      while (now() < end) {
        const t0 = now();
        await run[kind]!();
        out.push(now() - t0);
      }
      console.log(`${label} ${kind} round ${round + 1}/${rounds}: p50 ${us(pct(out.slice(start), 50))}`);
    }
  }
}

function table(cycles: Map<string, number[]>, base: string): void {
  const floor = pct(cycles.get(base)!, 50);
  console.log("\n| cycle (raw client, one connection) | cycles | p50 | p99 | x floor p50 |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const [kind, values] of cycles) {
    console.log(
      `| ${kind} | ${values.length} | ${us(pct(values, 50))} | ${us(pct(values, 99))} | ${(pct(values, 50) / floor).toFixed(2)}x |`,
    );
  }
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--wake-child") return wakeChild(argv[1] as Lib, argv[2]!, argv[3]!);
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ms: { type: "string" }, rounds: { type: "string" } },
  });
  const ms = Number(values.ms ?? 2000);
  const rounds = Number(values.rounds ?? 5);
  const which = positionals.length > 0 ? positionals : ["redis-wake", "mysql-fenced", "zk-queue"];
  for (const name of which) {
    if (name === "redis-wake") await redisWake(ms, rounds);
    else if (name === "mysql-fenced") await mysqlFenced(ms, rounds);
    else if (name === "zk-queue") await zkQueue(ms, rounds);
    else throw new Error(`unknown floor ${name}: use redis-wake, mysql-fenced or zk-queue`);
  }
  process.exit(0);
}

void main();
