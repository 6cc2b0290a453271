/**
 * A bench worker process. The runner forks a pool of these and drives them over the IPC
 * channel: each holds clients of one implementation at a time and runs one role on them.
 * Times are process.hrtime.bigint() (CLOCK_MONOTONIC, shared by every process on the host)
 * minus a base the runner hands out, in nanoseconds, so events of different processes can
 * be ordered and subtracted.
 *
 * Requests: { id, op, ...params }; answers: { id, ok, result | error }. Unsolicited events
 * (a herd waiter was granted) are { event, ... }.
 */
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { type Client, createClient, type Env, type Mode, type Release } from "./lib/impls.js";

const require = createRequire(import.meta.url);

let base = process.hrtime.bigint();
const now = (): number => Number(process.hrtime.bigint() - base);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Group {
  impl: string;
  clients: Client[];
  stop: boolean;
  held: Map<number, Release>;
}
const groups = new Map<string, Group>();
const scaleHeld = new Map<string, Release[]>();

/** Counts fs-native-extensions tryLock calls (the file backend's attempts) when enabled. */
const counters = { tryLock: 0 };
let restoreTryLock: (() => void) | null = null;

function instrument(on: boolean): void {
  const native = require("fs-native-extensions") as { tryLock: (...args: unknown[]) => boolean };
  if (on && !restoreTryLock) {
    const original = native.tryLock;
    native.tryLock = (...args: unknown[]) => {
      counters.tryLock++;
      return original(...args);
    };
    restoreTryLock = () => {
      native.tryLock = original;
    };
  } else if (!on && restoreTryLock) {
    restoreTryLock();
    restoreTryLock = null;
  }
}

function group(key: string): Group {
  const g = groups.get(key);
  if (!g) throw new Error(`no client group ${key}`);
  return g;
}

function send(message: unknown): void {
  process.send?.(message);
}

function rss(): number {
  global.gc?.();
  global.gc?.();
  return process.memoryUsage().rss;
}

type Params = Record<string, unknown>;

const ops: Record<string, (p: Params) => Promise<unknown>> = {
  async ping() {
    return { pid: process.pid };
  },
  async base(p) {
    base = BigInt(p.base as string);
    return now();
  },
  async open(p) {
    const key = p.key as string;
    const count = (p.count as number | undefined) ?? 1;
    const env = p.env as Env;
    const clients: Client[] = [];
    groups.set(key, { impl: p.impl as string, clients, stop: false, held: new Map() });
    // Opened a few at a time: hundreds of simultaneous connects overload a small server.
    for (let i = 0; i < count; i += 16) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(16, count - i) }, () => createClient(p.impl as string, env)),
      );
      clients.push(...batch);
    }
    return { opened: clients.length };
  },
  async close(p) {
    const key = p.key as string;
    const g = groups.get(key);
    if (!g) return {};
    g.stop = true;
    groups.delete(key);
    await Promise.all(g.clients.map((c) => Promise.race([c.close().catch(() => {}), sleep(10_000)])));
    return {};
  },
  async stop(p) {
    group(p.key as string).stop = true;
    return {};
  },
  async instrument(p) {
    instrument(p.on as boolean);
    counters.tryLock = 0;
    return {};
  },
  async redisWakes() {
    const { wakeStats } = await import("../src/backends/redis/wakeups.js");
    return { ...wakeStats };
  },
  async zkWakes() {
    const { wakeStats } = await import("../src/backends/zookeeper/client.js");
    return { ...wakeStats };
  },
  async counters() {
    return { ...counters };
  },
  async files(p) {
    return { count: readdirSync(p.dir as string).length };
  },

  /** Sequential acquire + release of one name on client 0; per-operation times in ns. */
  async uncontended(p) {
    const g = group(p.key as string);
    const client = g.clients[0]!;
    const name = p.name as string;
    const warmup = p.warmup as number;
    const maxOps = p.maxOps as number;
    const maxNs = (p.maxMs as number) * 1e6;
    for (let i = 0; i < warmup; i++) await client.cycle(name);
    const samples = new Float64Array(maxOps);
    let n = 0;
    const start = process.hrtime.bigint();
    const deadline = start + BigInt(Math.round(maxNs));
    let t0 = start;
    while (n < maxOps) {
      await client.cycle(name);
      const t1 = process.hrtime.bigint();
      samples[n++] = Number(t1 - t0);
      t0 = t1;
      if (t1 > deadline) break;
    }
    return { samples: samples.slice(0, n), wallNs: Number(t0 - start) };
  },

  /**
   * Contention: every client loops acquire, hold, release, think on one lock until told to
   * stop. Records when each request started, was granted and released.
   */
  async handoff(p) {
    const g = group(p.key as string);
    const lock = p.lock as string;
    const holdMs = p.holdMs as number;
    const thinkMs = p.thinkMs as number;
    const startAt = p.startAt as number;
    const endAt = p.endAt as number;
    while (now() < startAt) await sleep(1);
    const results = await Promise.all(
      g.clients.map(async (client) => {
        const req: number[] = [];
        const grant: number[] = [];
        const rel: number[] = [];
        const errors: string[] = [];
        // Past endAt every client finishes its current wait (the queue drains) and stops.
        while (!g.stop && now() < endAt) {
          try {
            const r = now();
            const release = await client.acquire(lock);
            const t = now();
            if (holdMs > 0) await sleep(holdMs);
            else await Promise.resolve();
            const u = now();
            await release();
            req.push(r);
            grant.push(t);
            rel.push(u);
          } catch (error) {
            errors.push(String(error));
            if (errors.length > 20) break;
            await sleep(50);
          }
          if (thinkMs > 0) await sleep(thinkMs);
        }
        return { req, grant, rel, errors };
      }),
    );
    return results;
  },

  /** Every client loops over random names (of `names`) until told to stop. */
  async keyspace(p) {
    const g = group(p.key as string);
    const names = p.names as number;
    let seed = (p.seed as number) >>> 0 || 1;
    const random = () => {
      // xorshift32: cheap and deterministic per worker.
      seed ^= seed << 13;
      seed >>>= 0;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      seed >>>= 0;
      return seed / 2 ** 32;
    };
    const startAt = p.startAt as number;
    const endAt = p.endAt as number;
    const cycle = p.cycle === true;
    while (now() < startAt) await sleep(1);
    const results = await Promise.all(
      g.clients.map(async (client) => {
        let ops = 0;
        const latency: number[] = [];
        const errors: string[] = [];
        while (now() < endAt && !g.stop) {
          const name = `k${Math.floor(random() * names)}`;
          const t0 = now();
          try {
            // A floor that cannot wait (raw put + delete) does one cycle on the name instead:
            // the throughput of its two writes, with no exclusion (issue 17's floors).
            if (cycle) await client.cycle(name);
            else await (await client.acquire(name))();
            ops++;
            if (latency.length < 20_000) latency.push(now() - t0);
          } catch (error) {
            errors.push(String(error));
            if (errors.length > 20) break;
          }
        }
        return { ops, latency, errors };
      }),
    );
    return results;
  },

  /**
   * Readers and writers: each client loops acquire + release until `endAt`; the first
   * `writers` clients of the group take the lock exclusively, the others shared. One call
   * runs them all, so in-process clients start together.
   */
  async rw(p) {
    const g = group(p.key as string);
    const writers = p.writers as number;
    const lock = p.lock as string;
    const startAt = p.startAt as number;
    const endAt = p.endAt as number;
    while (now() < startAt) await sleep(1);
    const results = await Promise.all(
      g.clients.map(async (client, index) => {
        const mode: Mode = index < writers ? "exclusive" : "shared";
        let ops = 0;
        const wait: number[] = [];
        const errors: string[] = [];
        while (now() < endAt && !g.stop) {
          const t0 = now();
          try {
            const release = await client.acquire(lock, mode);
            const t1 = now();
            if (t1 < endAt) {
              ops++;
              if (wait.length < 20_000) wait.push(t1 - t0);
            }
            await release();
          } catch (error) {
            errors.push(String(error));
            if (errors.length > 20) break;
          }
        }
        return { mode, ops, wait, errors };
      }),
    );
    return results;
  },

  /** Acquires `lock` on client `index` (default 0) and keeps it; resolves at the grant. */
  async hold(p) {
    const g = group(p.key as string);
    const index = (p.index as number | undefined) ?? 0;
    const release = await g.clients[index]!.acquire(p.lock as string);
    g.held.set(index, release);
    return { t: now() };
  },
  async release(p) {
    const g = group(p.key as string);
    const index = (p.index as number | undefined) ?? 0;
    const release = g.held.get(index);
    g.held.delete(index);
    const t = now();
    await release?.();
    return { t };
  },

  /**
   * Every client starts acquiring `lock`; each grant is announced as an event and the lock
   * is then held until `release` names that client. Resolves once all acquires started.
   */
  async herd(p) {
    const g = group(p.key as string);
    const lock = p.lock as string;
    g.clients.forEach((client, index) => {
      client.acquire(lock).then(
        (release) => {
          g.held.set(index, release);
          send({ event: "grant", key: p.key, index, t: now(), pid: process.pid });
        },
        (error: unknown) => {
          if (!g.stop) send({ event: "herd-error", key: p.key, index, error: String(error) });
        },
      );
    });
    return {};
  },

  /** Takes `n` distinct locks on client 0, `concurrency` at a time, and keeps them. */
  async scale(p) {
    const g = group(p.key as string);
    const client = g.clients[0]!;
    const n = p.n as number;
    const concurrency = p.concurrency as number;
    const budgetNs = (p.budgetMs as number) * 1e6;
    const rssBefore = rss();
    const releases: Release[] = [];
    let next = 0;
    let error: string | null = null;
    // Time at every tenth of the way: how the cost of one more lock grows with those held.
    const step = Math.max(1, Math.floor(n / 10));
    const milestones: { held: number; ns: number }[] = [];
    const t0 = now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (error === null) {
          const i = next++;
          if (i >= n) return;
          if (now() - t0 > budgetNs) {
            error = `stopped after the ${p.budgetMs} ms budget`;
            return;
          }
          try {
            releases.push(await client.acquire(`scale-${i}`));
            if (releases.length % step === 0) milestones.push({ held: releases.length, ns: now() - t0 });
          } catch (e) {
            error ??= String(e);
          }
        }
      }),
    );
    const acquireNs = now() - t0;
    const rssHeld = rss();
    const filesHeld = p.dir ? readdirSync(p.dir as string).length : null;
    scaleHeld.set(p.key as string, releases);
    return { held: releases.length, acquireNs, rssBefore, rssHeld, filesHeld, error, milestones };
  },
  async scaleRelease(p) {
    const releases = scaleHeld.get(p.key as string) ?? [];
    scaleHeld.delete(p.key as string);
    const concurrency = p.concurrency as number;
    const t1 = now();
    let next = 0;
    let failed = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < releases.length) await releases[next++]!().catch(() => failed++);
      }),
    );
    return { releaseNs: now() - t1, failed };
  },
};

process.on("message", (message: { id: number; op: string } & Params) => {
  const op = ops[message.op];
  if (!op) {
    send({ id: message.id, ok: false, error: `unknown op ${message.op}` });
    return;
  }
  op(message).then(
    (result) => send({ id: message.id, ok: true, result }),
    (error: unknown) =>
      send({
        id: message.id,
        ok: false,
        error: error instanceof Error ? (error.stack ?? error.message) : String(error),
      }),
  );
});
process.on("disconnect", () => process.exit(0));
process.on("uncaughtException", (error) => {
  send({ event: "log", text: `uncaught exception in worker ${process.pid}: ${error.stack ?? String(error)}` });
});
process.on("unhandledRejection", (error) => {
  send({ event: "log", text: `unhandled rejection in worker ${process.pid}: ${String(error)}` });
});
send({ event: "up", pid: process.pid });
