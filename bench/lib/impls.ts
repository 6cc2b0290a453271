/**
 * Every lock implementation the bench compares, behind one small interface: Baton on each
 * backend, the peers users would pick instead, and the raw floors (the fewest operations a
 * lock can cost on that backend). Peers are loaded only when used, so a missing one fails
 * only its own rows.
 */
import { openSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type { Coordinator } from "../../src/index.js";

const require = createRequire(import.meta.url);

export type Backend = "memory" | "file" | "etcd" | "postgres" | "redis" | "zookeeper" | "mysql";
export const BACKENDS: readonly Backend[] = ["memory", "file", "etcd", "postgres", "redis", "zookeeper", "mysql"];
export type Mode = "exclusive" | "shared";
export type Release = () => Promise<void>;

/** Where the backends are, handed to every process. */
export interface Env {
  fileDir?: string;
  etcdUrl?: string;
  etcdEndpoints?: string[];
  pgUrl?: string;
  mysqlUrl?: string;
  redisUrl?: string;
  zkUrl?: string;
  /** "127.0.0.1:PORT" */
  zkAddress?: string;
  /** Baton session TTL (failover runs). */
  ttlMs?: number;
}

/** One client (one coordinator, one connection, ...) of an implementation. */
export interface Client {
  /** Blocks until held; resolves with the release function. */
  acquire(name: string, mode?: Mode): Promise<Release>;
  /** One uncontended acquire + release, with as little wrapping as the API allows. */
  cycle(name: string): Promise<void>;
  close(): Promise<void>;
  /** Baton only. */
  coordinator?: Coordinator;
}

export interface ImplInfo {
  readonly id: string;
  readonly backend: Backend;
  readonly label: string;
  readonly role: "baton" | "peer" | "floor";
  /** Can block until a held lock is free (natively or by the polling we give it). */
  readonly waits: boolean;
  /** How it waits, for the report. */
  readonly waiting: string;
  readonly shared: boolean;
  /** Waiters must be in one process (in-process libraries). */
  readonly inProcess: boolean;
}

/** Poll interval given to peers that cannot wait by themselves (redis-semaphore's default). */
export const POLL_MS = 10;

export const IMPLS: readonly ImplInfo[] = [
  {
    id: "baton-memory",
    backend: "memory",
    label: "Baton memory://",
    role: "baton",
    waits: true,
    waiting: "FIFO queue, promise hand-off",
    shared: true,
    inProcess: true,
  },
  {
    id: "async-mutex",
    backend: "memory",
    label: "async-mutex Mutex",
    role: "peer",
    waits: true,
    waiting: "FIFO queue, promise hand-off",
    shared: false,
    inProcess: true,
  },
  {
    id: "baton-file",
    backend: "file",
    label: "Baton file://",
    role: "baton",
    waits: true,
    waiting: "OFD try-lock, woken by a push over the Unix-socket mesh",
    shared: true,
    inProcess: false,
  },
  {
    id: "proper-lockfile",
    backend: "file",
    label: "proper-lockfile",
    role: "peer",
    waits: true,
    waiting: `mkdir; no waiting by default (retries: 0), given a fixed ${POLL_MS} ms retry here`,
    shared: false,
    inProcess: false,
  },
  {
    id: "raw-ofd",
    backend: "file",
    label: "raw OFD lock (fs-native-extensions)",
    role: "floor",
    waits: true,
    waiting: "blocking F_OFD_SETLKW on a libuv thread (waitForLock)",
    shared: true,
    inProcess: false,
  },
  {
    id: "baton-etcd",
    backend: "etcd",
    label: "Baton etcd://",
    role: "baton",
    waits: true,
    waiting: "watch on the predecessor key",
    shared: true,
    inProcess: false,
  },
  {
    id: "etcd3-lock",
    backend: "etcd",
    label: "etcd3 Lock",
    role: "peer",
    waits: true,
    waiting: `tries once and never waits; retried every ${POLL_MS} ms here`,
    shared: false,
    inProcess: false,
  },
  {
    id: "raw-etcd",
    backend: "etcd",
    label: "raw put + delete (etcd3 client)",
    role: "floor",
    waits: false,
    waiting: "n/a",
    shared: false,
    inProcess: false,
  },
  {
    id: "baton-zookeeper",
    backend: "zookeeper",
    label: "Baton zookeeper://",
    role: "baton",
    waits: true,
    waiting: "watch on the predecessor node",
    shared: true,
    inProcess: false,
  },
  {
    id: "raw-zookeeper",
    backend: "zookeeper",
    label: "raw create + delete (node-zookeeper-client)",
    role: "floor",
    waits: false,
    waiting: "n/a",
    shared: false,
    inProcess: false,
  },
  {
    id: "baton-postgres",
    backend: "postgres",
    label: "Baton postgres://",
    role: "baton",
    waits: true,
    waiting: "server-side (advisory lock queue)",
    shared: true,
    inProcess: false,
  },
  {
    id: "advisory-lock",
    backend: "postgres",
    label: "advisory-lock",
    role: "peer",
    waits: true,
    waiting: "server-side pg_advisory_lock, a new connection per lock()",
    shared: false,
    inProcess: false,
  },
  {
    id: "raw-pg",
    backend: "postgres",
    label: "raw pg_advisory_lock + unlock (one connection)",
    role: "floor",
    waits: true,
    waiting: "server-side pg_advisory_lock",
    shared: true,
    inProcess: false,
  },
  {
    id: "baton-mysql",
    backend: "mysql",
    label: "Baton mysql://",
    role: "baton",
    waits: true,
    waiting: "server-side (GET_LOCK on the entry ahead)",
    shared: true,
    inProcess: false,
  },
  {
    id: "raw-mysql",
    backend: "mysql",
    label: "raw GET_LOCK + RELEASE_LOCK (one connection)",
    role: "floor",
    waits: true,
    waiting: "server-side GET_LOCK",
    shared: false,
    inProcess: false,
  },
  {
    id: "baton-redis",
    backend: "redis",
    label: "Baton redis://",
    role: "baton",
    waits: true,
    waiting: "pub/sub message to the waiter the release granted",
    shared: true,
    inProcess: false,
  },
  {
    id: "redlock",
    backend: "redis",
    label: "redlock (one server)",
    role: "peer",
    waits: true,
    waiting: "polls: 10 retries 200 ms apart (+ up to 200 ms jitter), retried here when they run out",
    shared: false,
    inProcess: false,
  },
  {
    id: "redis-semaphore",
    backend: "redis",
    label: "redis-semaphore Mutex",
    role: "peer",
    waits: true,
    waiting: "polls every 10 ms (retryInterval) for up to 10 s, retried here when it gives up",
    shared: false,
    inProcess: false,
  },
  {
    id: "raw-redis",
    backend: "redis",
    label: "raw SET NX PX + compare-and-delete script (node-redis)",
    role: "floor",
    waits: false,
    waiting: "n/a",
    shared: false,
    inProcess: false,
  },
];

export function implInfo(id: string): ImplInfo {
  const info = IMPLS.find((i) => i.id === id);
  if (!info) throw new Error(`unknown implementation ${id}`);
  return info;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A 40-bit offset / advisory key from a name (FNV-1a, then folded). */
function key40(name: string): number {
  let h = 0x811c9dc5;
  let g = 0x01000193;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    h = Math.imul(h ^ c, 0x01000193) >>> 0;
    g = Math.imul(g ^ c, 0x5bd1e995) >>> 0;
  }
  return (g & 0xff) * 2 ** 32 + h;
}

export async function createClient(id: string, env: Env): Promise<Client> {
  switch (id) {
    case "baton-memory":
      return baton("memory://bench", env);
    case "baton-file":
      return baton(`file://${need(env.fileDir, "fileDir")}`, env);
    case "baton-etcd":
      return baton(need(env.etcdUrl, "etcdUrl"), env);
    case "baton-postgres":
      return baton(need(env.pgUrl, "pgUrl"), env);
    case "baton-zookeeper":
      return baton(need(env.zkUrl, "zkUrl"), env);
    case "raw-zookeeper":
      return rawZooKeeper(need(env.zkAddress, "zkAddress"));
    case "async-mutex":
      return asyncMutex();
    case "proper-lockfile":
      return properLockfile(need(env.fileDir, "fileDir"));
    case "raw-ofd":
      return rawOfd(need(env.fileDir, "fileDir"));
    case "etcd3-lock":
      return etcd3Lock(need(env.etcdEndpoints, "etcdEndpoints"));
    case "raw-etcd":
      return rawEtcd(need(env.etcdEndpoints, "etcdEndpoints"));
    case "advisory-lock":
      return advisoryLock(need(env.pgUrl, "pgUrl"));
    case "raw-pg":
      return rawPg(need(env.pgUrl, "pgUrl"));
    case "baton-mysql":
      return baton(need(env.mysqlUrl, "mysqlUrl"), env);
    case "raw-mysql":
      return rawMysql(need(env.mysqlUrl, "mysqlUrl"));
    case "baton-redis":
      return baton(need(env.redisUrl, "redisUrl"), env);
    case "redlock":
      return redlock(need(env.redisUrl, "redisUrl"));
    case "redis-semaphore":
      return redisSemaphore(need(env.redisUrl, "redisUrl"));
    case "raw-redis":
      return rawRedis(need(env.redisUrl, "redisUrl"));
    default:
      throw new Error(`unknown implementation ${id}`);
  }
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`bench env lacks ${what}`);
  return value;
}

// ---- Baton -----------------------------------------------------------------------------

async function baton(url: string, env: Env): Promise<Client> {
  const { connect } = await import("../../src/index.js");
  const coord = await connect(url, env.ttlMs === undefined ? {} : { ttlMs: env.ttlMs });
  await coord.openSession();
  const check = (status: string) => {
    if (status !== "released") throw new Error(`release: ${status}`);
  };
  return {
    coordinator: coord,
    async acquire(name, mode) {
      const handle = await coord.lock(name).acquire(mode === "shared" ? { mode } : undefined);
      return async () => check((await handle.release()).status);
    },
    async cycle(name) {
      const handle = await coord.lock(name).acquire();
      check((await handle.release()).status);
    },
    close: () => coord.close(),
  };
}

// ---- peers -------------------------------------------------------------------------------

interface MutexLike {
  acquire(): Promise<() => void>;
}
const mutexes = new Map<string, MutexLike>();

function asyncMutex(): Client {
  const { Mutex } = require("async-mutex") as { Mutex: new () => MutexLike };
  const get = (name: string) => {
    let mutex = mutexes.get(name);
    if (!mutex) mutexes.set(name, (mutex = new Mutex()));
    return mutex;
  };
  return {
    async acquire(name) {
      const release = await get(name).acquire();
      return async () => release();
    },
    async cycle(name) {
      const release = await get(name).acquire();
      release();
    },
    async close() {},
  };
}

function properLockfile(dir: string): Client {
  const lockfile = require("proper-lockfile") as typeof import("proper-lockfile");
  const path = (name: string) => join(dir, `pl-${encodeURIComponent(name)}`);
  // The library's defaults (stale 10 s, update 5 s) except retries, which default to 0 (no
  // waiting at all): a fixed POLL_MS retry for up to 60 s.
  const waiting = {
    realpath: false,
    retries: { retries: Math.ceil(60_000 / POLL_MS), factor: 1, minTimeout: POLL_MS, maxTimeout: POLL_MS },
  };
  const once = { realpath: false, retries: 0 };
  return {
    async acquire(name) {
      return lockfile.lock(path(name), waiting);
    },
    async cycle(name) {
      const release = await lockfile.lock(path(name), once);
      await release();
    },
    async close() {},
  };
}

interface NativeLocks {
  tryLock(fd: number, offset: number, length: number, options: { shared?: boolean }): boolean;
  waitForLock(fd: number, offset: number, length: number, options: { shared?: boolean }): Promise<void>;
  unlock(fd: number, offset: number, length: number): void;
}

function rawOfd(dir: string): Client {
  const native = require("fs-native-extensions") as NativeLocks;
  // One open file description per client, as one Baton session has.
  const fd = openSync(join(dir, "raw-ofd"), "a+");
  return {
    async acquire(name, mode) {
      const offset = key40(name);
      await native.waitForLock(fd, offset, 1, { shared: mode === "shared" });
      return async () => native.unlock(fd, offset, 1);
    },
    async cycle(name) {
      const offset = key40(name);
      if (!native.tryLock(fd, offset, 1, {})) throw new Error("raw OFD lock is held");
      native.unlock(fd, offset, 1);
    },
    async close() {
      (await import("node:fs")).closeSync(fd);
    },
  };
}

interface Etcd3Like {
  lock(name: string): { acquire(): Promise<unknown>; release(): Promise<unknown> };
  put(key: string): { value(v: string): Promise<unknown> };
  delete(): { key(k: string): Promise<unknown> };
  close(): void;
}

function etcd3Client(endpoints: string[]): Etcd3Like {
  const { Etcd3 } = require("etcd3") as { Etcd3: new (options: { hosts: string[] }) => Etcd3Like };
  return new Etcd3({ hosts: endpoints.map((e) => `http://${e}`) });
}

function etcd3Lock(endpoints: string[]): Client {
  const { EtcdLockFailedError } = require("etcd3") as { EtcdLockFailedError: new () => Error };
  const client = etcd3Client(endpoints);
  return {
    async acquire(name) {
      for (;;) {
        const lock = client.lock(`etcd3-lock/${name}`);
        try {
          await lock.acquire();
          return async () => {
            await lock.release();
          };
        } catch (error) {
          if (!(error instanceof EtcdLockFailedError)) throw error;
          await sleep(POLL_MS);
        }
      }
    },
    async cycle(name) {
      const lock = client.lock(`etcd3-lock/${name}`);
      await lock.acquire();
      await lock.release();
    },
    async close() {
      client.close();
    },
  };
}

function rawEtcd(endpoints: string[]): Client {
  const client = etcd3Client(endpoints);
  return {
    async acquire() {
      throw new Error("raw put + delete is not a lock that waits");
    },
    async cycle(name) {
      await client.put(`raw/${name}`).value("");
      await client.delete().key(`raw/${name}`);
    },
    async close() {
      client.close();
    },
  };
}

interface ZkRaw {
  connect(): void;
  close(): void;
  once(event: string, listener: () => void): void;
  create(path: string, data: Buffer, mode: number, cb: (error: unknown) => void): void;
  remove(path: string, version: number, cb: (error: unknown) => void): void;
}

/** The floor: one ephemeral create and one delete, under a parent made once. */
async function rawZooKeeper(address: string): Promise<Client> {
  const zk = require("node-zookeeper-client") as { createClient(a: string, o: object): ZkRaw };
  const client = zk.createClient(address, { sessionTimeout: 10_000 });
  await new Promise<void>((resolve) => {
    client.once("connected", resolve);
    client.connect();
  });
  const call = (f: (cb: (error: unknown) => void) => void, ok: readonly number[] = []) =>
    new Promise<void>((resolve, reject) =>
      f((error) => (error && !ok.includes((error as { code: number }).code) ? reject(error) : resolve())),
    );
  await call((cb) => client.create("/raw", Buffer.alloc(0), 0, cb), [-110]);
  return {
    async acquire() {
      throw new Error("raw create + delete is not a lock that waits");
    },
    async cycle(name) {
      const path = `/raw/${encodeURIComponent(name)}`;
      await call((cb) => client.create(path, Buffer.alloc(0), 1, cb));
      await call((cb) => client.remove(path, -1, cb));
    },
    async close() {
      client.close();
    },
  };
}

function advisoryLock(url: string): Client {
  const mod = require("advisory-lock") as { default: (url: string) => (name: string) => { lock(): Promise<Release> } };
  const mutex = mod.default(url);
  return {
    async acquire(name) {
      return mutex(name).lock();
    },
    async cycle(name) {
      const unlock = await mutex(name).lock();
      await unlock();
    },
    async close() {},
  };
}

interface PgClient {
  connect(): Promise<void>;
  query(q: { name?: string; text: string; values?: unknown[] }): Promise<unknown>;
  end(): Promise<void>;
  on(event: "error", listener: (error: Error) => void): void;
}

async function rawPg(url: string): Promise<Client> {
  const pg = require("pg") as { Client: new (options: { connectionString: string }) => PgClient };
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  // Named (prepared) statements: the fewest bytes and the least server work per call.
  const lock = (key: number, mode?: Mode) =>
    client.query(
      mode === "shared"
        ? { name: "lks", text: "SELECT pg_advisory_lock_shared($1::bigint)", values: [key] }
        : { name: "lk", text: "SELECT pg_advisory_lock($1::bigint)", values: [key] },
    );
  const unlock = (key: number, mode?: Mode) =>
    client.query(
      mode === "shared"
        ? { name: "uls", text: "SELECT pg_advisory_unlock_shared($1::bigint)", values: [key] }
        : { name: "ul", text: "SELECT pg_advisory_unlock($1::bigint)", values: [key] },
    );
  return {
    async acquire(name, mode) {
      const key = key40(name);
      await lock(key, mode);
      return async () => {
        await unlock(key, mode);
      };
    },
    async cycle(name) {
      const key = key40(name);
      await lock(key);
      await unlock(key);
    },
    close: () => client.end(),
  };
}

// ---- Redis -------------------------------------------------------------------------------

interface IoRedisLike {
  quit(): Promise<unknown>;
}

function ioredis(url: string): IoRedisLike {
  const mod = require("ioredis") as { default?: new (url: string) => IoRedisLike } & (new (url: string) => IoRedisLike);
  const Redis = mod.default ?? mod;
  return new Redis(url);
}

interface RedlockLock {
  release(): Promise<unknown>;
}

async function redlock(url: string): Promise<Client> {
  const mod = require("redlock") as {
    default: new (
      clients: IoRedisLike[],
      settings?: object,
    ) => {
      acquire(resources: string[], durationMs: number): Promise<RedlockLock>;
    };
  };
  const client = ioredis(url);
  // Defaults: 10 retries, 200 ms apart, up to 200 ms jitter; a 10 s lock like the others.
  const redlock = new mod.default([client]);
  const take = async (name: string) => {
    for (;;) {
      try {
        return await redlock.acquire([`redlock:${name}`], 10_000);
      } catch (error) {
        if ((error as Error).name !== "ExecutionError") throw error;
      }
    }
  };
  return {
    async acquire(name) {
      const lock = await take(name);
      return async () => {
        await lock.release();
      };
    },
    async cycle(name) {
      const lock = await redlock.acquire([`redlock:${name}`], 10_000);
      await lock.release();
    },
    close: async () => {
      await client.quit();
    },
  };
}

async function redisSemaphore(url: string): Promise<Client> {
  const { Mutex } = require("redis-semaphore") as {
    Mutex: new (client: IoRedisLike, key: string) => { acquire(): Promise<void>; release(): Promise<void> };
  };
  const client = ioredis(url);
  const take = async (name: string) => {
    for (;;) {
      const mutex = new Mutex(client, `rs:${name}`);
      try {
        await mutex.acquire();
        return mutex;
      } catch (error) {
        if ((error as Error).name !== "TimeoutError") throw error;
      }
    }
  };
  return {
    async acquire(name) {
      const mutex = await take(name);
      return () => mutex.release();
    },
    async cycle(name) {
      const mutex = new Mutex(client, `rs:${name}`);
      await mutex.acquire();
      await mutex.release();
    },
    close: async () => {
      await client.quit();
    },
  };
}

const COMPARE_AND_DELETE =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

interface MysqlConnection {
  query(sql: string, values: unknown[], cb: (error: Error | null, rows?: unknown) => void): void;
  end(cb: () => void): void;
  on(event: "error", listener: (error: Error) => void): void;
}

/** The MySQL floor: GET_LOCK and RELEASE_LOCK on one connection, nothing else. */
async function rawMysql(url: string): Promise<Client> {
  const mysql = require("mysql2") as { createConnection(uri: string): MysqlConnection };
  const connection = mysql.createConnection(url);
  connection.on("error", () => {});
  // The statement's one value must be 1: GET_LOCK answers 0 on a timeout (and MariaDB does
  // not read a negative timeout as "forever", as MySQL does), RELEASE_LOCK 0 or NULL when the
  // lock was not held. An unchecked answer made contended "grants" overlap.
  const run = (sql: string, name: string) =>
    new Promise<void>((resolve, reject) =>
      connection.query(sql, [name], (e, rows) => {
        if (e) return reject(e);
        const value = Object.values((rows as Record<string, unknown>[])[0] ?? {})[0];
        if (Number(value) !== 1) return reject(new Error(`${sql} answered ${String(value)}, not 1`));
        resolve();
      }),
    );
  const key = (name: string) => `bench:${name}`.slice(0, 64);
  // A year: the longest wait the server accepts without reading it as "do not wait".
  const GET = "SELECT GET_LOCK(?, 31536000)";
  return {
    async acquire(name) {
      await run(GET, key(name));
      return () => run("SELECT RELEASE_LOCK(?)", key(name));
    },
    async cycle(name) {
      await run(GET, key(name));
      await run("SELECT RELEASE_LOCK(?)", key(name));
    },
    close: () => new Promise<void>((resolve) => connection.end(() => resolve())),
  };
}

async function rawRedis(url: string): Promise<Client> {
  const { createClient } = (await import("redis")) as typeof import("redis");
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  const sha = (await client.sendCommand(["SCRIPT", "LOAD", COMPARE_AND_DELETE])) as string;
  let seq = 0;
  return {
    async acquire() {
      throw new Error("raw SET NX + compare-and-delete is not a lock that waits");
    },
    async cycle(name) {
      const token = String(++seq);
      const set = await client.sendCommand(["SET", `raw:${name}`, token, "NX", "PX", "10000"]);
      if (String(set) !== "OK") throw new Error("raw redis lock is held");
      await client.sendCommand(["EVALSHA", sha, "1", `raw:${name}`, token]);
    },
    close: async () => {
      await client.close();
    },
  };
}
