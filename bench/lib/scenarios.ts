/** The six scenarios of issue 6. Each returns rows for results.json; none throws. */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { type Backend, type Env, IMPLS, type ImplInfo, implInfo } from "./impls.js";
import type { Pool, Worker, WorkerEvent } from "./pool.js";
import { summarize } from "./stats.js";
import type { FailoverRow, HandoffRow, HerdRow, KeyspaceRow, ScaleRow, SharedRow, UncontendedRow } from "./types.js";

const require = createRequire(import.meta.url);

export interface Settings {
  quick: boolean;
  uncontended: { rounds: number; maxMs: number; maxOps: number };
  handoff: { waiters: number[]; durationMs: number; holdMs: number; thinkMs: number };
  keyspace: { clients: number; names: number; durationMs: number; processes: number };
  failover: { runs: number; slowRuns: number; shortTtlMs: number };
  scale: Record<Backend, number>;
  herd: { waiters: number; processes: number; releases: number; postgresWaiters: number };
  shared: { readers: number; writers: number; durationMs: number; processes: number };
}

export function settings(quick: boolean): Settings {
  return quick
    ? {
        quick,
        uncontended: { rounds: 3, maxMs: 600, maxOps: 50_000 },
        handoff: { waiters: [8, 64], durationMs: 2500, holdMs: 1, thinkMs: 1 },
        keyspace: { clients: 32, names: 1000, durationMs: 2500, processes: 4 },
        failover: { runs: 3, slowRuns: 1, shortTtlMs: 2000 },
        scale: {
          memory: 100_000,
          file: 100_000,
          etcd: 10_000,
          postgres: 10_000,
          redis: 10_000,
          zookeeper: 10_000,
          mysql: 10_000,
        },
        herd: { waiters: 250, processes: 10, releases: 8, postgresWaiters: 90 },
        shared: { readers: 32, writers: 1, durationMs: 2500, processes: 4 },
      }
    : {
        quick,
        uncontended: { rounds: 5, maxMs: 2000, maxOps: 200_000 },
        handoff: { waiters: [8, 64], durationMs: 8000, holdMs: 1, thinkMs: 1 },
        keyspace: { clients: 32, names: 1000, durationMs: 8000, processes: 4 },
        failover: { runs: 5, slowRuns: 3, shortTtlMs: 2000 },
        scale: {
          memory: 100_000,
          file: 1_000_000,
          etcd: 100_000,
          postgres: 100_000,
          redis: 100_000,
          zookeeper: 100_000,
          mysql: 100_000,
        },
        herd: { waiters: 1000, processes: 20, releases: 20, postgresWaiters: 90 },
        shared: { readers: 32, writers: 1, durationMs: 8000, processes: 4 },
      };
}

export interface Context {
  settings: Settings;
  backends: Backend[];
  env: Env;
  pool: Pool;
  /** Implementations that could not be used, with why. */
  unavailable: Map<string, string>;
  progress(message: string): void;
  /** Server process ids, for server-side RSS and metrics. */
  servers: { etcdPid?: number; etcdMetricsUrl?: string; pgPid?: number; pgLog?: string; redisPid?: number };
  now(): number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
let groupSeq = 0;
const newKey = (what: string) => `${what}-${++groupSeq}`;

/** Implementations of the selected backends that passed the probe. */
export function usable(ctx: Context, filter: (i: ImplInfo) => boolean = () => true): ImplInfo[] {
  return IMPLS.filter((i) => ctx.backends.includes(i.backend) && !ctx.unavailable.has(i.id) && filter(i));
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0]!.slice(0, 300);
}

/** Opens `count` clients of `impl` on each worker, as one group per worker. */
async function openOn(
  workers: Worker[],
  impl: string,
  env: Env,
  count: number | number[],
): Promise<{ worker: Worker; key: string; count: number }[]> {
  const placed = workers.map((worker, i) => ({
    worker,
    key: newKey(impl),
    count: Array.isArray(count) ? (count[i] as number) : count,
  }));
  await Promise.all(placed.map((p) => p.worker.call("open", { key: p.key, impl, env, count: p.count })));
  return placed;
}

async function closeAll(placed: { worker: Worker; key: string }[]): Promise<void> {
  await Promise.all(placed.map((p) => p.worker.call("close", { key: p.key }, 60_000).catch(() => {})));
}

/** Splits `total` clients over `processes` as evenly as possible. */
function spread(total: number, processes: number): number[] {
  return Array.from({ length: processes }, (_, i) => Math.floor(total / processes) + (i < total % processes ? 1 : 0));
}

// ---- probe -----------------------------------------------------------------------------

/** Tries each implementation once (open, acquire + release, close); records failures. */
export async function probe(ctx: Context): Promise<void> {
  const [worker] = await ctx.pool.take(1);
  for (const impl of usable(ctx)) {
    const key = newKey(`probe-${impl.id}`);
    try {
      await worker!.call("open", { key, impl: impl.id, env: ctx.env, count: 1 }, 30_000);
      await worker!.call("uncontended", { key, name: "probe", warmup: 0, maxOps: 3, maxMs: 5000 }, 30_000);
      ctx.progress(`probe ${impl.id}: ok`);
    } catch (error) {
      ctx.unavailable.set(impl.id, errorText(error));
      ctx.progress(`probe ${impl.id}: UNAVAILABLE (${errorText(error)})`);
    } finally {
      await worker!.call("close", { key }, 30_000).catch(() => {});
    }
  }
}

// ---- 1. uncontended ----------------------------------------------------------------------

export async function uncontended(ctx: Context): Promise<UncontendedRow[]> {
  const { rounds, maxMs, maxOps } = ctx.settings.uncontended;
  const impls = usable(ctx);
  const [worker] = await ctx.pool.take(1);
  const rows = new Map<string, { samples: Float64Array[]; wall: number; roundP50: number[]; error?: string }>();
  const placed = new Map<string, string>();
  for (const impl of impls) {
    const key = newKey(`unc-${impl.id}`);
    try {
      await worker!.call("open", { key, impl: impl.id, env: ctx.env, count: 1 });
      placed.set(impl.id, key);
      rows.set(impl.id, { samples: [], wall: 0, roundP50: [] });
    } catch (error) {
      rows.set(impl.id, { samples: [], wall: 0, roundP50: [], error: errorText(error) });
    }
  }
  // Rounds interleave the implementations, so slow drift of the machine hits all alike.
  for (let round = 0; round < rounds; round++) {
    for (const impl of impls) {
      const key = placed.get(impl.id);
      const row = rows.get(impl.id)!;
      if (!key || row.error) continue;
      try {
        const { samples, wallNs } = await worker!.call<{ samples: Float64Array; wallNs: number }>("uncontended", {
          key,
          name: `uncontended-${impl.id}`,
          warmup: round === 0 ? 300 : 20,
          maxOps,
          maxMs,
        });
        row.samples.push(samples);
        row.wall += wallNs;
        const s = summarize(samples);
        row.roundP50.push(s.p50);
        ctx.progress(
          `uncontended ${impl.id} round ${round + 1}/${rounds}: p50 ${(s.p50 / 1e3).toFixed(1)} us, n=${s.n}`,
        );
      } catch (error) {
        row.error = errorText(error);
        ctx.progress(`uncontended ${impl.id}: FAILED ${row.error}`);
      }
    }
  }
  for (const key of placed.values()) await worker!.call("close", { key }).catch(() => {});
  return impls.map((impl) => {
    const row = rows.get(impl.id)!;
    const all = new Float64Array(row.samples.reduce((n, s) => n + s.length, 0));
    let offset = 0;
    for (const s of row.samples) {
      all.set(s, offset);
      offset += s.length;
    }
    return {
      backend: impl.backend,
      impl: impl.id,
      label: impl.label,
      role: impl.role,
      stats: all.length ? summarize(all) : null,
      opsPerSec: row.wall > 0 ? (all.length / row.wall) * 1e9 : Number.NaN,
      roundP50: row.roundP50,
      ...(row.error ? { error: row.error } : {}),
    };
  });
}

// ---- 2. handoff under contention ------------------------------------------------------------

interface Cycle {
  client: number;
  req: number;
  grant: number;
  rel: number;
}

/** Handoff latencies from every client's (request, grant, release) times. */
export function analyseHandoff(cycles: Cycle[], startAt: number, endAt: number) {
  cycles.sort((a, b) => a.grant - b.grant);
  const handoffs: number[] = [];
  let barging = 0;
  let releases = 0;
  for (let i = 0; i < cycles.length; i++) {
    const released = cycles[i]!;
    if (released.rel < startAt || released.rel > endAt) continue;
    // The first later grant to a client that was already waiting when this release began.
    let j = i + 1;
    while (j < cycles.length && cycles[j]!.req >= released.rel) j++;
    const next = cycles[j];
    if (!next) continue;
    releases++;
    handoffs.push(next.grant - released.rel);
    if (j !== i + 1) barging++;
  }
  const inWindow = cycles.filter((c) => c.grant >= startAt && c.grant <= endAt).length;
  return {
    handoff: handoffs.length ? summarize(handoffs) : null,
    grants: inWindow,
    grantsPerSec: (inWindow / (endAt - startAt)) * 1e9,
    selfShare: releases ? barging / releases : 0,
  };
}

export async function handoff(ctx: Context): Promise<HandoffRow[]> {
  const { waiters: sizes, durationMs, holdMs, thinkMs } = ctx.settings.handoff;
  const rows: HandoffRow[] = [];
  for (const impl of usable(ctx, (i) => i.waits)) {
    for (const waiters of sizes) {
      const row: HandoffRow = {
        backend: impl.backend,
        impl: impl.id,
        label: impl.label,
        role: impl.role,
        waiting: impl.waiting,
        waiters,
        processes: impl.inProcess ? 1 : waiters,
        handoff: null,
        grants: 0,
        grantsPerSec: Number.NaN,
        selfShare: Number.NaN,
        censored: 0,
        errors: [],
      };
      rows.push(row);
      let placed: { worker: Worker; key: string; count: number }[] = [];
      try {
        // One process per waiter, as in real use; in-process libraries get one process.
        const workers = await ctx.pool.take(impl.inProcess ? 1 : waiters);
        placed = await openOn(workers, impl.id, ctx.env, impl.inProcess ? waiters : 1);
        const lock = newKey(`handoff-${impl.id}`);
        const startAt = ctx.now() + 300e6;
        const endAt = startAt + durationMs * 1e6;
        const answers = await Promise.all(
          placed.map((p) =>
            p.worker.call<{ req: number[]; grant: number[]; rel: number[]; errors: string[] }[]>(
              "handoff",
              { key: p.key, lock, holdMs, thinkMs, startAt, endAt },
              durationMs + 120_000,
            ),
          ),
        );
        const cycles: Cycle[] = [];
        let client = 0;
        for (const answer of answers) {
          for (const c of answer) {
            for (let k = 0; k < c.grant.length; k++) {
              cycles.push({ client, req: c.req[k]!, grant: c.grant[k]!, rel: c.rel[k]! });
            }
            row.errors.push(...c.errors.slice(0, 3));
            client++;
          }
        }
        Object.assign(row, analyseHandoff(cycles, startAt, endAt));
        ctx.progress(
          `handoff ${impl.id} x${waiters}: p50 ${row.handoff ? (row.handoff.p50 / 1e3).toFixed(1) : "n/a"} us, p99 ${
            row.handoff ? (row.handoff.p99 / 1e3).toFixed(1) : "n/a"
          } us, ${row.grantsPerSec.toFixed(0)} grants/s${row.errors.length ? `, errors: ${row.errors[0]}` : ""}`,
        );
      } catch (error) {
        row.error = errorText(error);
        ctx.progress(`handoff ${impl.id} x${waiters}: FAILED ${row.error}`);
      } finally {
        await closeAll(placed);
      }
    }
  }
  return rows;
}

// ---- 3. throughput across keys ---------------------------------------------------------------

export async function keyspace(ctx: Context): Promise<KeyspaceRow[]> {
  const { clients, names, durationMs, processes } = ctx.settings.keyspace;
  const rows: KeyspaceRow[] = [];
  // Waiting locks, and the raw floors that cannot wait (they cycle: issue 17's throughput
  // floors for etcd, ZooKeeper and Redis).
  for (const impl of usable(ctx, (i) => i.waits || i.role === "floor")) {
    const nproc = impl.inProcess ? 1 : processes;
    const row: KeyspaceRow = {
      backend: impl.backend,
      impl: impl.id,
      label: impl.label,
      role: impl.role,
      clients,
      processes: nproc,
      names,
      opsPerSec: Number.NaN,
      latency: null,
      errors: [],
    };
    rows.push(row);
    let placed: { worker: Worker; key: string; count: number }[] = [];
    try {
      const workers = await ctx.pool.take(nproc);
      placed = await openOn(workers, impl.id, ctx.env, spread(clients, nproc));
      const startAt = ctx.now() + 300e6;
      const endAt = startAt + durationMs * 1e6;
      const answers = await Promise.all(
        placed.map((p, i) =>
          p.worker.call<{ ops: number; latency: number[]; errors: string[] }[]>(
            "keyspace",
            { key: p.key, names, seed: 12345 + i * 7919, startAt, endAt, cycle: !impl.waits },
            durationMs + 120_000,
          ),
        ),
      );
      let ops = 0;
      const latency: number[] = [];
      for (const answer of answers) {
        for (const c of answer) {
          ops += c.ops;
          for (const l of c.latency) latency.push(l);
          row.errors.push(...c.errors.slice(0, 3));
        }
      }
      row.opsPerSec = ops / (durationMs / 1000);
      row.latency = latency.length ? summarize(latency) : null;
      ctx.progress(`keyspace ${impl.id}: ${row.opsPerSec.toFixed(0)} acquisitions/s`);
    } catch (error) {
      row.error = errorText(error);
      ctx.progress(`keyspace ${impl.id}: FAILED ${row.error}`);
    } finally {
      await closeAll(placed);
    }
  }
  return rows;
}

// ---- 4. failover after SIGKILL -------------------------------------------------------------

export async function failover(ctx: Context): Promise<FailoverRow[]> {
  const { runs, slowRuns, shortTtlMs } = ctx.settings.failover;
  const plans: { impl: ImplInfo; ttlMs: number | null; runs: number }[] = [];
  for (const impl of usable(ctx, (i) => !i.inProcess && i.waits)) {
    if (impl.id === "raw-ofd" || impl.id === "raw-pg") continue;
    if (impl.id === "etcd3-lock") continue; // a 30 s lease per run; see the report
    if (impl.id === "baton-etcd") {
      plans.push({ impl, ttlMs: null, runs: slowRuns + 1 });
      plans.push({ impl, ttlMs: shortTtlMs, runs });
    } else if (impl.id === "baton-postgres") {
      plans.push({ impl, ttlMs: null, runs });
      plans.push({ impl, ttlMs: shortTtlMs, runs });
    } else if (impl.id === "proper-lockfile") {
      plans.push({ impl, ttlMs: null, runs: slowRuns });
    } else {
      plans.push({ impl, ttlMs: null, runs });
    }
  }
  const rows: FailoverRow[] = [];
  for (const plan of plans) {
    const row: FailoverRow = {
      backend: plan.impl.backend,
      impl: plan.impl.id,
      label: plan.impl.label,
      ttlMs: plan.ttlMs,
      runs: [],
      p50: Number.NaN,
    };
    rows.push(row);
    const env: Env = plan.ttlMs === null ? ctx.env : { ...ctx.env, ttlMs: plan.ttlMs };
    for (let run = 0; run < plan.runs; run++) {
      let holder: Worker | null = null;
      let waiterGroup: { worker: Worker; key: string }[] = [];
      try {
        holder = await ctx.pool.spawnOne();
        const lock = newKey(`failover-${plan.impl.id}`);
        const holderKey = newKey("holder");
        await holder.call("open", { key: holderKey, impl: plan.impl.id, env, count: 1 });
        await holder.call("hold", { key: holderKey, lock });
        const [waiter] = await ctx.pool.take(1);
        waiterGroup = await openOn([waiter!], plan.impl.id, env, 1);
        const granted = waiter!.call<{ t: number }>("hold", { key: waiterGroup[0]!.key, lock }, 120_000);
        await sleep(500); // the waiter is queued (and subscribed) by now
        const killedAt = ctx.now();
        holder.kill("SIGKILL");
        const { t } = await granted;
        row.runs.push(t - killedAt);
        ctx.progress(
          `failover ${plan.impl.id}${plan.ttlMs ? ` ttl ${plan.ttlMs} ms` : ""} run ${run + 1}/${plan.runs}: ${((t - killedAt) / 1e6).toFixed(1)} ms`,
        );
      } catch (error) {
        row.error = errorText(error);
        ctx.progress(`failover ${plan.impl.id}: FAILED ${row.error}`);
        break;
      } finally {
        holder?.kill("SIGKILL");
        await closeAll(waiterGroup);
      }
    }
    row.p50 = row.runs.length ? summarize(row.runs).p50 : Number.NaN;
  }
  return rows;
}

// ---- 5. scale: many locks held, and wake-ups per release ----------------------------------

/** Resident memory of a process and its process group (a server with its children). */
function groupRss(pgid: number | undefined): number | null {
  if (pgid === undefined) return null;
  let total = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) !== pgid) continue;
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      total += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

export async function scale(ctx: Context): Promise<ScaleRow[]> {
  const rows: ScaleRow[] = [];
  for (const impl of usable(ctx, (i) => i.role === "baton")) {
    const n = ctx.settings.scale[impl.backend];
    const serverPid =
      impl.backend === "etcd"
        ? ctx.servers.etcdPid
        : impl.backend === "postgres"
          ? ctx.servers.pgPid
          : impl.backend === "redis"
            ? ctx.servers.redisPid
            : undefined;
    const row: ScaleRow = {
      backend: impl.backend,
      impl: impl.id,
      n,
      held: 0,
      acquireNs: Number.NaN,
      releaseNs: Number.NaN,
      rssDelta: Number.NaN,
      serverRssDelta: null,
      filesOnDisk: null,
    };
    rows.push(row);
    // A fresh process, so its resident memory is this workload's alone.
    let worker: Worker | null = null;
    try {
      worker = await ctx.pool.spawnOne();
      const key = newKey(`scale-${impl.id}`);
      const serverBefore = groupRss(serverPid);
      await worker.call("open", { key, impl: impl.id, env: ctx.env, count: 1 });
      const concurrency = impl.backend === "memory" || impl.backend === "file" ? 8 : 64;
      ctx.progress(`scale ${impl.id}: acquiring ${n} distinct locks`);
      const held = await worker.call<{
        held: number;
        acquireNs: number;
        rssBefore: number;
        rssHeld: number;
        filesHeld: number | null;
        error: string | null;
        milestones: { held: number; ns: number }[];
      }>(
        "scale",
        {
          key,
          n,
          concurrency,
          budgetMs: ctx.settings.quick ? 60_000 : 180_000,
          ...(impl.backend === "file" ? { dir: ctx.env.fileDir } : {}),
        },
        600_000,
      );
      const serverHeld = groupRss(serverPid);
      const released = await worker.call<{ releaseNs: number; failed: number }>(
        "scaleRelease",
        { key, concurrency },
        600_000,
      );
      Object.assign(row, {
        held: held.held,
        acquireNs: held.acquireNs,
        releaseNs: released.releaseNs,
        rssDelta: held.rssHeld - held.rssBefore,
        serverRssDelta: serverBefore !== null && serverHeld !== null ? serverHeld - serverBefore : null,
        filesOnDisk: held.filesHeld,
        milestones: held.milestones,
      });
      if (held.error) row.error = held.error;
      ctx.progress(
        `scale ${impl.id}: ${held.held}/${n} held in ${(held.acquireNs / 1e9).toFixed(2)} s, RSS +${((held.rssHeld - held.rssBefore) / 2 ** 20).toFixed(0)} MiB${held.error ? `, ${held.error}` : ""}`,
      );
      await worker.call("close", { key }, 120_000).catch(() => {});
    } catch (error) {
      row.error = errorText(error);
      ctx.progress(`scale ${impl.id}: FAILED ${row.error}`);
    } finally {
      worker?.kill("SIGKILL");
    }
  }
  return rows;
}

/** Sums Prometheus counters by metric name (labels folded), with a few label filters. */
async function etcdCounters(url: string | undefined): Promise<Record<string, number>> {
  if (!url) return {};
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = { events: 0, watchMsgsSent: 0, unaryRequests: 0 };
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const value = Number(line.slice(space + 1));
    if (line.startsWith("etcd_debugging_mvcc_events_total")) out.events! += value;
    else if (line.startsWith("grpc_server_msg_sent_total") && line.includes('grpc_method="Watch"')) {
      out.watchMsgsSent! += value;
    } else if (line.startsWith("grpc_server_handled_total") && line.includes('grpc_type="unary"')) {
      out.unaryRequests! += value;
    }
  }
  return out;
}

interface PgLike {
  connect(): Promise<void>;
  query(text: string): Promise<{ rows: Record<string, string>[] }>;
  end(): Promise<void>;
  on(event: "error", listener: () => void): void;
}

/** Statements logged between two offsets of the server log, and the sessions (pids) that ran them. */
function pgStatements(log: string, from: number, to: number): { statements: number; sessions: number } {
  const length = Math.max(0, to - from);
  const buffer = Buffer.alloc(length);
  const fd = openSync(log, "r");
  try {
    readSync(fd, buffer, 0, length, from);
  } finally {
    closeSync(fd);
  }
  let statements = 0;
  const pids = new Set<string>();
  for (const line of buffer.toString("utf8").split("\n")) {
    const match = /\[(\d+)\][^:]*LOG:\s+(statement|execute [^:]*):/.exec(line);
    if (!match) continue;
    statements++;
    pids.add(match[1]!);
  }
  return { statements, sessions: pids.size };
}

export async function herd(ctx: Context): Promise<HerdRow[]> {
  const rows: HerdRow[] = [];
  const s = ctx.settings.herd;
  for (const impl of usable(ctx, (i) => i.role === "baton" && !i.inProcess)) {
    // PostgreSQL and MySQL waiters each wait on a server connection of their own: the server's
    // default max_connections (100 and 151) bounds them, not Baton.
    const serverWait = impl.backend === "postgres" || impl.backend === "mysql";
    const waiters = serverWait ? Math.min(s.postgresWaiters, s.waiters) : s.waiters;
    const processes = Math.min(s.processes, waiters);
    const row: HerdRow = {
      backend: impl.backend,
      impl: impl.id,
      waiters,
      processes,
      releases: 0,
      perRelease: {},
      handoff: null,
      notes: [],
    };
    if (impl.backend === "postgres" && waiters < s.waiters) {
      row.notes.push(
        `${waiters} waiters, not ${s.waiters}: the test harness starts PostgreSQL with max_connections=200 and each Baton coordinator keeps a control connection besides the one that waits`,
      );
    }
    rows.push(row);
    let pgClient: PgLike | null = null;
    const placed: { worker: Worker; key: string; count: number }[] = [];
    const unlisten: (() => void)[] = [];
    try {
      const workers = await ctx.pool.take(processes + 1);
      const holderWorker = workers[0]!;
      const waiterWorkers = workers.slice(1);
      const lock = newKey(`herd-${impl.id}`);
      placed.push(...(await openOn([holderWorker], impl.id, ctx.env, 1)));
      await holderWorker.call("hold", { key: placed[0]!.key, lock });
      ctx.progress(`herd ${impl.id}: opening ${waiters} waiting clients in ${processes} processes`);
      const waiterGroups = await openOn(waiterWorkers, impl.id, ctx.env, spread(waiters, processes));
      placed.push(...waiterGroups);
      if (impl.backend === "file") {
        row.notes.push(
          "attempts = fs-native-extensions tryLock calls in the waiting processes (the bench wraps the function; Baton is not modified)",
        );
      }
      const grants: { key: string; index: number; t: number; worker: Worker }[] = [];
      let onGrant: (() => void) | null = null;
      for (const g of waiterGroups) {
        unlisten.push(
          g.worker.on((event: WorkerEvent) => {
            if (event.event === "grant" && event.key === g.key) {
              grants.push({ key: g.key, index: event.index as number, t: event.t as number, worker: g.worker });
              onGrant?.();
            }
          }),
        );
      }
      await Promise.all(waiterGroups.map((g) => g.worker.call("instrument", { on: impl.backend === "file" })));
      await Promise.all(waiterGroups.map((g) => g.worker.call("herd", { key: g.key, lock })));
      await sleep(ctx.settings.quick ? 2000 : 4000); // all queued and subscribed
      if (impl.backend === "postgres") {
        const pg = require("pg") as { Client: new (o: { connectionString: string }) => PgLike };
        pgClient = new pg.Client({ connectionString: ctx.env.pgUrl! });
        pgClient.on("error", () => {});
        await pgClient.connect();
        // Every statement of every session goes to the server log while this runs: the
        // statements and sessions between two offsets are what a release woke.
        await pgClient.query("ALTER SYSTEM SET log_statement = 'all'");
        await pgClient.query("SELECT pg_reload_conf()");
        await sleep(500);
      }
      const snapshot = async (): Promise<Record<string, number>> => {
        if (impl.backend === "file") {
          const counts = await Promise.all(waiterGroups.map((g) => g.worker.call<{ tryLock: number }>("counters")));
          return Object.fromEntries(counts.map((c, i) => [`p${i}`, c.tryLock]));
        }
        if (impl.backend === "etcd") return etcdCounters(ctx.servers.etcdMetricsUrl);
        if (impl.backend === "redis") {
          // Baton's own counters in every waiting process: messages received, re-checks
          // made, and which of the two each grant came from.
          const counts = await Promise.all(
            waiterGroups.map((g) => g.worker.call<Record<string, number>>("redisWakes")),
          );
          const sum: Record<string, number> = {};
          for (const c of counts) for (const [k, v] of Object.entries(c)) sum[k] = (sum[k] ?? 0) + v;
          return sum;
        }
        return { logOffset: statSync(ctx.servers.pgLog!).size };
      };
      const STEP_MS = 250;
      const fold = (before: Record<string, number>, after: Record<string, number>, into: Record<string, number[]>) => {
        if (impl.backend === "file") {
          let attempts = 0;
          let woken = 0;
          for (const k of Object.keys(after)) {
            const d = after[k]! - (before[k] ?? 0);
            attempts += d;
            if (d > 0) woken++;
          }
          (into.attempts ??= []).push(attempts);
          (into.processesWoken ??= []).push(woken);
        } else if (impl.backend === "postgres") {
          const { statements, sessions } = pgStatements(ctx.servers.pgLog!, before.logOffset!, after.logOffset!);
          (into.statements ??= []).push(statements);
          (into.sessions ??= []).push(sessions);
        } else {
          for (const k of Object.keys(after)) (into[k] ??= []).push(after[k]! - (before[k] ?? 0));
        }
      };
      // Background: the same windows with no release (keep-alives, safety timers, ...).
      const idle: Record<string, number[]> = {};
      for (let step = 0; step < Math.min(5, s.releases); step++) {
        const before = await snapshot();
        await sleep(STEP_MS);
        fold(before, await snapshot(), idle);
      }
      const deltas: Record<string, number[]> = {};
      const handoffs: number[] = [];
      let current: { worker: Worker; key: string; index: number } = {
        worker: holderWorker,
        key: placed[0]!.key,
        index: 0,
      };
      for (let step = 0; step < s.releases; step++) {
        const before = await snapshot();
        const stepStart = Date.now();
        const seen = grants.length;
        const granted = new Promise<void>((resolve) => {
          onGrant = () => {
            if (grants.length > seen) resolve();
          };
        });
        const { t: releasedAt } = await current.worker.call<{ t: number }>("release", {
          key: current.key,
          index: current.index,
        });
        await Promise.race([granted, sleep(30_000)]);
        onGrant = null;
        const next = grants[seen];
        if (!next) throw new Error(`no waiter was granted within 30 s of release ${step + 1}`);
        handoffs.push(next.t - releasedAt);
        await sleep(Math.max(0, stepStart + STEP_MS - Date.now())); // late wake-ups count too
        fold(before, await snapshot(), deltas);
        current = { worker: next.worker, key: next.key, index: next.index };
      }
      for (const [k, v] of Object.entries(idle)) row.perRelease[`idle ${k}`] = summarize(v).p50;
      row.releases = handoffs.length;
      row.handoff = summarize(handoffs);
      for (const [k, v] of Object.entries(deltas)) row.perRelease[k] = summarize(v).p50;
      ctx.progress(`herd ${impl.id}: per release ${JSON.stringify(row.perRelease)}`);
    } catch (error) {
      row.error = errorText(error);
      ctx.progress(`herd ${impl.id}: FAILED ${row.error}`);
    } finally {
      for (const u of unlisten) u();
      await Promise.all(placed.map((p) => p.worker.call("stop", { key: p.key }).catch(() => {})));
      await Promise.all(placed.map((p) => p.worker.call("instrument", { on: false }).catch(() => {})));
      await closeAll(placed);
      if (pgClient) {
        await pgClient.query("ALTER SYSTEM RESET log_statement").catch(() => {});
        await pgClient.query("SELECT pg_reload_conf()").catch(() => {});
        await pgClient.end().catch(() => {});
      }
    }
  }
  return rows;
}

// ---- 6. shared locks -------------------------------------------------------------------------

export async function shared(ctx: Context): Promise<SharedRow[]> {
  const { readers, writers, durationMs, processes } = ctx.settings.shared;
  const rows: SharedRow[] = [];
  for (const impl of usable(ctx, (i) => i.shared)) {
    const nproc = impl.inProcess ? 1 : processes;
    const row: SharedRow = {
      backend: impl.backend,
      impl: impl.id,
      label: impl.label,
      role: impl.role,
      readers,
      writers,
      durationS: durationMs / 1000,
      readsPerSec: Number.NaN,
      writesPerSec: Number.NaN,
      readWait: null,
      writeWait: null,
      errors: [],
    };
    rows.push(row);
    const placed: { worker: Worker; key: string; count: number }[] = [];
    try {
      const lock = newKey(`shared-${impl.id}`);
      // In-process libraries: one group whose first clients are the writers. Otherwise the
      // readers spread over `nproc` processes and the writer in a process of its own.
      const plan: { worker: Worker; count: number; writers: number }[] = [];
      if (impl.inProcess) {
        const [w] = await ctx.pool.take(1);
        plan.push({ worker: w!, count: readers + writers, writers });
      } else {
        const workers = await ctx.pool.take(nproc + 1);
        spread(readers, nproc).forEach((count, i) => {
          plan.push({ worker: workers[i]!, count, writers: 0 });
        });
        plan.push({ worker: workers[nproc]!, count: writers, writers });
      }
      for (const p of plan) placed.push(...(await openOn([p.worker], impl.id, ctx.env, p.count)));
      const startAt = ctx.now() + 300e6;
      const endAt = startAt + durationMs * 1e6;
      type Answer = { mode: string; ops: number; wait: number[]; errors: string[] }[];
      const answers = await Promise.all(
        placed.map((g, i) =>
          g.worker.call<Answer>(
            "rw",
            { key: g.key, lock, writers: plan[i]!.writers, startAt, endAt },
            durationMs + 120_000,
          ),
        ),
      );
      const fold = (mode: string) => {
        let ops = 0;
        const wait: number[] = [];
        for (const a of answers) {
          for (const c of a) {
            if (c.mode !== mode) continue;
            ops += c.ops;
            for (const w of c.wait) wait.push(w);
            row.errors.push(...c.errors.slice(0, 3));
          }
        }
        return { ops, wait };
      };
      const r = fold("shared");
      const w = fold("exclusive");
      row.readsPerSec = r.ops / (durationMs / 1000);
      row.writesPerSec = w.ops / (durationMs / 1000);
      row.readWait = r.wait.length ? summarize(r.wait) : null;
      row.writeWait = w.wait.length ? summarize(w.wait) : null;
      ctx.progress(`shared ${impl.id}: ${row.readsPerSec.toFixed(0)} reads/s, ${row.writesPerSec.toFixed(1)} writes/s`);
    } catch (error) {
      row.error = errorText(error);
      ctx.progress(`shared ${impl.id}: FAILED ${row.error}`);
    } finally {
      await closeAll(placed);
    }
  }
  return rows;
}

export { implInfo };
