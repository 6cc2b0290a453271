/**
 * `npm run bench -- [--quick] [--backends memory,file,etcd,postgres,redis,zookeeper,mysql] [--only a,b] [--out DIR]`
 * `node .bench/dist/bench/run.js --report-only RESULTS.json [--out DIR]`: render a run's report again
 *
 * Baton side by side with the libraries users would pick instead and with each backend's
 * raw floor, in one run on one machine (issue 6). Starts etcd and PostgreSQL through the
 * test harness, runs the scenarios in worker processes, writes raw JSON, a Markdown report
 * with SVG charts, and prints a summary. See docs/benchmarks.md for the method.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKENDS, type Backend, type Env } from "./lib/impls.js";
import { ROOT } from "./lib/root.js";
import { commandVersion, machine, packageVersions } from "./lib/machine.js";
import { Pool } from "./lib/pool.js";
import { writeReport } from "./lib/report.js";
import {
  type Context,
  failover,
  handoff,
  herd,
  keyspace,
  probe,
  scale,
  settings,
  shared,
  uncontended,
} from "./lib/scenarios.js";
import { computeTargets } from "./lib/targets.js";
import type { Results } from "./lib/types.js";

const SCENARIOS = ["uncontended", "handoff", "keyspace", "failover", "scale", "herd", "shared"] as const;

function parseArgs(argv: string[]) {
  let quick = false;
  let backends: Backend[] = [...BACKENDS];
  let only: string[] = [...SCENARIOS];
  let out: string | null = null;
  let reportOnly: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (name: string) => {
      if (arg.startsWith(`${name}=`)) return arg.slice(name.length + 1);
      const next = argv[++i];
      if (next === undefined) throw new Error(`${name} needs a value`);
      return next;
    };
    if (arg === "--quick") quick = true;
    else if (arg.startsWith("--backends")) {
      backends = value("--backends")
        .split(",")
        .filter(Boolean)
        .map((b) => {
          if (!BACKENDS.includes(b as Backend)) throw new Error(`unknown backend ${b}; known: ${BACKENDS.join(", ")}`);
          return b as Backend;
        });
    } else if (arg.startsWith("--only")) {
      only = value("--only").split(",").filter(Boolean);
      for (const s of only) if (!SCENARIOS.includes(s as never)) throw new Error(`unknown scenario ${s}`);
    } else if (arg.startsWith("--out")) out = value("--out");
    else if (arg.startsWith("--report-only")) reportOnly = value("--report-only");
    else if (arg === "--help" || arg === "-h") {
      process.stdout.write(
        "npm run bench -- [--quick] [--backends memory,file,etcd,postgres,redis,zookeeper,mysql] [--only uncontended,handoff,keyspace,failover,scale,herd,shared] [--out DIR] [--report-only RESULTS.json]\n",
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  // A quick run reports next to its JSON; only a full run replaces the committed report.
  const outDir = resolve(ROOT, out ?? (quick ? "bench/results/quick" : "docs"));
  return { quick, backends, only, outDir, reportOnly };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.reportOnly) {
    // Renders the report again from a run's raw results (same numbers, newer report code).
    const results = JSON.parse(readFileSync(resolve(args.reportOnly), "utf8")) as Results;
    results.targets = computeTargets(results);
    const written = writeReport(results, args.outDir, `${JSON.stringify(results, null, 1)}\n`);
    process.stderr.write(`wrote ${written.map((p) => relative(ROOT, p)).join(", ")}\n`);
    return;
  }
  const started = Date.now();
  const base = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - base);
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s`;
  const progress = (message: string) => process.stderr.write(`[bench ${elapsed()}] ${message}\n`);
  const cfg = settings(args.quick);
  const loadAtStart = os.loadavg().map((l) => Math.round(l * 100) / 100);
  // What was measured: run.sh compiled the tree just before this started.
  const git = (...a: string[]) => commandVersion("git", ["-C", ROOT, ...a]) ?? "unknown";
  const source = {
    commit: git("rev-parse", "--short", "HEAD"),
    uncommittedSrcFiles: Number(
      commandVersion("sh", ["-c", `git -C '${ROOT}' status --porcelain -- src | wc -l`]) ?? Number.NaN,
    ),
  };
  progress(
    `${args.quick ? "quick" : "full"} run; backends ${args.backends.join(", ")}; scenarios ${args.only.join(", ")}`,
  );

  const env: Env = {};
  const servers: Context["servers"] = {};
  const cleanups: (() => Promise<void> | void)[] = [];
  const unavailable = new Map<string, string>();
  const versions: Record<string, string | null> = {
    ...packageVersions([
      "async-mutex",
      "proper-lockfile",
      "advisory-lock",
      "etcd3",
      "pg",
      "fs-native-extensions",
      "redis",
      "redlock",
      "redis-semaphore",
      "ioredis",
      "node-zookeeper-client",
      "mysql2",
    ]),
  };
  const pool = new Pool(base);
  const stopAll = async () => {
    // Workers first: clients must not see their servers go away under them.
    pool.close();
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
  };
  process.on("SIGINT", () => {
    void stopAll().finally(() => process.exit(130));
  });

  try {
    if (args.backends.includes("file")) {
      // A directory of its own, on the default temp file system (where Baton's default is).
      env.fileDir = mkdtempSync(join(os.tmpdir(), "baton-bench-"));
      cleanups.push(() => rmSync(env.fileDir!, { recursive: true, force: true }));
    }
    if (args.backends.includes("etcd")) {
      try {
        const { startEtcd } = await import("../test/harness/etcd.js");
        const etcd = await startEtcd({ name: "baton-bench" });
        cleanups.push(() => etcd.stop());
        env.etcdUrl = etcd.url;
        env.etcdEndpoints = etcd.endpoints;
        servers.etcdPid = etcd.pid;
        servers.etcdMetricsUrl = `http://${etcd.endpoints[0]}/metrics`;
        versions.etcd = commandVersion("etcd", ["--version"]);
        progress(`etcd up at ${etcd.url}`);
      } catch (error) {
        for (const id of ["baton-etcd", "etcd3-lock", "raw-etcd"]) unavailable.set(id, `etcd did not start: ${error}`);
      }
    }
    if (args.backends.includes("postgres")) {
      try {
        const { startPostgres } = await import("../test/harness/postgres.js");
        const pg = await startPostgres();
        cleanups.push(() => pg.stop());
        env.pgUrl = pg.url;
        servers.pgPid = pg.pid;
        servers.pgLog = pg.logFile;
        versions.postgres = commandVersion("sh", [
          "-c",
          "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/postgres --version",
        ]);
        progress(`postgres up at ${pg.url}`);
      } catch (error) {
        for (const id of ["baton-postgres", "advisory-lock", "raw-pg"]) {
          unavailable.set(id, `PostgreSQL did not start: ${error}`);
        }
      }
    }

    if (args.backends.includes("mysql")) {
      try {
        const { startMariadb } = await import("../test/harness/mariadb.js");
        const mariadb = await startMariadb();
        cleanups.push(() => mariadb.stop());
        env.mysqlUrl = mariadb.url;
        versions.mariadb = commandVersion("/usr/sbin/mariadbd", ["--version"]);
        progress(`mariadb up at ${mariadb.url}`);
      } catch (error) {
        for (const id of ["baton-mysql", "raw-mysql"]) unavailable.set(id, `MariaDB did not start: ${error}`);
      }
    }

    if (args.backends.includes("redis")) {
      try {
        const { startRedis } = await import("../test/harness/redis.js");
        const redis = await startRedis({ name: "baton-bench" });
        cleanups.push(() => redis.stop());
        env.redisUrl = redis.url;
        servers.redisPid = redis.pid;
        versions.redis = commandVersion("redis-server", ["--version"]);
        progress(`redis up at ${redis.url}`);
      } catch (error) {
        for (const id of ["baton-redis", "redlock", "redis-semaphore", "raw-redis"]) {
          unavailable.set(id, `Redis did not start: ${error}`);
        }
      }
    }

    if (args.backends.includes("zookeeper")) {
      try {
        const { startZooKeeper } = await import("../test/harness/zookeeper.js");
        const zk = await startZooKeeper();
        cleanups.push(() => zk.stop());
        env.zkUrl = zk.url;
        env.zkAddress = zk.address;
        versions.zookeeper = commandVersion("sh", ["-c", "readlink -f /usr/share/java/zookeeper.jar"]);
        progress(`zookeeper up at ${zk.url}`);
      } catch (error) {
        for (const id of ["baton-zookeeper", "raw-zookeeper"]) unavailable.set(id, `ZooKeeper did not start: ${error}`);
      }
    }

    const ctx: Context = {
      settings: cfg,
      backends: args.backends,
      env,
      pool,
      unavailable,
      progress,
      servers,
      now,
    };
    await probe(ctx);

    const results: Results = {
      meta: {
        date: new Date().toISOString(),
        quick: args.quick,
        backends: args.backends,
        machine: machine(),
        versions,
        durationS: 0,
        unavailable: {},
        settings: { ...cfg, loadAtStart, source } as unknown as Record<string, unknown>,
      },
      uncontended: [],
      handoff: [],
      keyspace: [],
      failover: [],
      scale: [],
      herd: [],
      shared: [],
      targets: [],
    };
    const run = async <K extends (typeof SCENARIOS)[number]>(name: K, fn: (c: Context) => Promise<Results[K]>) => {
      if (!args.only.includes(name)) return;
      progress(`--- ${name} ---`);
      results[name] = await fn(ctx);
    };
    await run("uncontended", uncontended);
    await run("handoff", handoff);
    await run("keyspace", keyspace);
    await run("shared", shared);
    await run("failover", failover);
    await run("herd", herd);
    await run("scale", scale);

    results.meta.unavailable = Object.fromEntries(unavailable);
    results.meta.durationS = Math.round((Date.now() - started) / 1000);
    results.meta.machine.loadAverage = os.loadavg().map((l) => Math.round(l * 100) / 100);
    results.targets = computeTargets(results);

    mkdirSync(args.outDir, { recursive: true });
    const stamp = results.meta.date.replace(/[:.]/g, "-");
    const rawDir = join(ROOT, "bench/results");
    mkdirSync(rawDir, { recursive: true });
    const json = `${JSON.stringify(results, null, 1)}\n`;
    writeFileSync(join(rawDir, `${stamp}${args.quick ? "-quick" : ""}.json`), json);
    // Where Baton's own (client) time goes: a CPU profile of each backend's uncontended path;
    // the server backends' profiles show the client's CPU per operation (idle excluded).
    const serverUrls: Partial<Record<Backend, string | undefined>> = {
      etcd: env.etcdUrl,
      postgres: env.pgUrl,
      mysql: env.mysqlUrl,
      redis: env.redisUrl,
      zookeeper: env.zkUrl,
    };
    for (const backend of args.backends) {
      const target = backend === "file" || backend === "memory" ? backend : serverUrls[backend];
      if (!target) continue;
      progress(`profiling uncontended ${backend}`);
      try {
        execFileSync(
          process.execPath,
          [
            fileURLToPath(new URL("./profile.js", import.meta.url)),
            target,
            backend === "file" || backend === "memory" ? "200000" : "5000",
            "--write",
            join(args.outDir, "benchmarks"),
          ],
          {
            stdio: ["ignore", "ignore", "inherit"],
          },
        );
      } catch (error) {
        progress(`profile ${backend} failed: ${error}`);
      }
    }
    const written = writeReport(results, args.outDir, json);
    progress(
      `wrote ${written.map((p) => relative(ROOT, p)).join(", ")} and bench/results/${stamp}${args.quick ? "-quick" : ""}.json`,
    );

    // Summary.
    const lines = ["", `Baton bench (${args.quick ? "quick" : "full"}), ${results.meta.durationS} s`, ""];
    for (const t of results.targets) {
      lines.push(`  ${t.met === null ? "  ?" : t.met ? " ok" : "MISS"}  ${t.what}: ${t.measured} (target ${t.target})`);
    }
    if (unavailable.size) {
      lines.push("", "  not measured:");
      for (const [id, why] of unavailable) lines.push(`    ${id}: ${why}`);
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await stopAll();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : error}\n`);
    process.exit(1);
  },
);
