/**
 * Throwaway PostgreSQL servers for tests. Each `startPostgres()` gets its
 * own data dir under os.tmpdir(), a free loopback port, trust auth and a unix
 * socket inside its temp dir, so the system cluster (if any) is never touched.
 *
 * PostgreSQL refuses to run as root; when we are root the server runs as the
 * `postgres` system user (created by the Debian package), via spawn's uid/gid.
 * Binaries come from /usr/lib/postgresql/<newest>/bin (Debian layout), or
 * $PG_BINDIR, or PATH. See scripts/ensure-servers.sh.
 */
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import type { Gateway, Host } from "./hosts.js";
import { freePort } from "./ports.js";
import { makeTempDir, onProcessExit, removeTempDir, retryOnAddressInUse, ServerProcess, waitUntil } from "./proc.js";

const LOOPBACK = "127.0.0.1";
const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const DATABASE = "baton";

export interface PgServer {
  /** "postgres://postgres@127.0.0.1:PORT/baton" */
  readonly url: string;
  /** `url` as the test process reaches it (through a gateway when the server runs in a host). */
  readonly localUrl: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  /** PID of the current postmaster (changes after `restart()`). */
  readonly pid: number;
  readonly dataDir: string;
  /** Directory holding the unix socket (`.s.PGSQL.<port>`). */
  readonly socketDir: string;
  readonly logFile: string;
  /** Connection URL for another database on this server. */
  urlFor(database: string): string;
  /** Fast shutdown (SIGINT; SIGKILL after 10 s), then remove all files. Idempotent. */
  stop(): Promise<void>;
  /**
   * Stop (fast shutdown) if running, then start again with the same data
   * dir and port, and wait until it accepts queries. Works after `kill()`
   * (PostgreSQL then runs crash recovery).
   */
  restart(): Promise<void>;
  /** SIGKILL the postmaster and all its backends (simulated crash). */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT the whole server (postmaster and backends). */
  pause(): void;
  resume(): void;
}

// ---------------------------------------------------------------------------
// Binaries and user

let cachedBinDir: string | undefined;

export function pgBinDir(): string {
  if (cachedBinDir !== undefined) return cachedBinDir;
  const fromEnv = process.env.PG_BINDIR;
  if (fromEnv) return (cachedBinDir = fromEnv);
  const root = "/usr/lib/postgresql";
  let versions: string[] = [];
  try {
    versions = fs
      .readdirSync(root)
      .filter((v) => fs.existsSync(path.join(root, v, "bin", "initdb")))
      .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  } catch {
    // not Debian-style
  }
  const newest = versions[0];
  if (newest !== undefined) return (cachedBinDir = path.join(root, newest, "bin"));
  try {
    const initdb = execFileSync("sh", ["-c", "command -v initdb"], { encoding: "utf8" }).trim();
    if (initdb) return (cachedBinDir = path.dirname(fs.realpathSync(initdb)));
  } catch {
    // fall through
  }
  throw new Error(
    "PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); " +
      "run `bash scripts/ensure-servers.sh postgres` or set PG_BINDIR",
  );
}

interface RunAs {
  uid?: number;
  gid?: number;
}

let cachedRunAs: RunAs | undefined;

function runAs(): RunAs {
  if (cachedRunAs !== undefined) return cachedRunAs;
  if (process.getuid?.() !== 0) return (cachedRunAs = {});
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return (cachedRunAs = { uid, gid });
  } catch {
    throw new Error(
      "running as root but there is no `postgres` user to run PostgreSQL as; " +
        "run `bash scripts/ensure-servers.sh postgres`",
    );
  }
}

function chownTree(dir: string): void {
  const { uid, gid } = runAs();
  if (uid === undefined || gid === undefined) return;
  execFileSync("chown", ["-R", `${uid}:${gid}`, dir]);
}

function serverEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, LANG: "C", LC_ALL: "C", TZ: "UTC" };
}

// ---------------------------------------------------------------------------
// Cluster creation: initdb plus `CREATE DATABASE baton` in single-user mode,
// done once per process into a template; each server copies the template
// (cp -a, ~0.1-0.5 s) instead of running initdb (~1 s) and CREATE DATABASE
// (~0.3 s) itself.

async function runToCompletion(
  label: string,
  bin: string,
  args: string[],
  home: string,
  logFile: string,
  input?: string,
): Promise<void> {
  const proc = new ServerProcess(label, path.join(pgBinDir(), bin), args, {
    env: serverEnv(home),
    logFile,
    cwd: home,
    ...runAs(),
    ...(input !== undefined ? { input } : {}),
  });
  const { code, signal } = await proc.waitExit();
  if (code !== 0) {
    throw new Error(`${label} failed (code ${code}, signal ${signal}):\n${proc.logTail(40)}`);
  }
}

async function createCluster(dataDir: string, home: string, logFile: string): Promise<void> {
  await runToCompletion(
    "initdb",
    "initdb",
    [
      "-D",
      dataDir,
      "-U",
      "postgres",
      "-A",
      "trust",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
      "--no-instructions",
      // 1 MB WAL segments instead of 16 MB: less to copy per server.
      "--wal-segsize=1",
    ],
    home,
    logFile,
  );
  await runToCompletion(
    "postgres --single",
    "postgres",
    ["--single", "-D", dataDir, "-c", "fsync=off", "postgres"],
    home,
    logFile,
    `CREATE DATABASE ${DATABASE};\n`,
  );
}

let template: Promise<string> | undefined;

function templateDataDir(): Promise<string> {
  template ??= (async () => {
    const root = makeTempDir("baton-pg-template-");
    chownTree(root);
    const dataDir = path.join(root, "data");
    await createCluster(dataDir, root, path.join(root, "initdb.log"));
    return dataDir;
  })();
  // A failed initdb should not poison later attempts.
  template.catch(() => {
    template = undefined;
  });
  return template;
}

async function prepareDataDir(root: string, dataDir: string, logFile: string): Promise<void> {
  let tpl: string | undefined;
  try {
    tpl = await templateDataDir();
  } catch (err) {
    fs.appendFileSync(logFile, `[harness] template failed, creating the cluster directly: ${(err as Error).message}\n`);
  }
  if (tpl !== undefined) {
    // cp -a preserves ownership and the 0700 mode PostgreSQL insists on.
    await promisify(execFile)("cp", ["-a", tpl, dataDir]);
    return;
  }
  await createCluster(dataDir, root, logFile);
}

// ---------------------------------------------------------------------------

async function canQuery(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  // An 'error' after connect (e.g. server shutting down) must not crash the test.
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Remove the SysV shared memory segment a SIGKILLed postmaster left behind. */
function removeStaleShmem(dataDir: string): void {
  let lines: string[];
  try {
    lines = fs.readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n");
  } catch {
    return; // clean shutdown (or never started): nothing to do
  }
  // Line 7: "<shmem key> <shmem id>"
  const shmid = lines[6]?.trim().split(/\s+/)[1];
  if (shmid === undefined || !/^\d+$/.test(shmid)) return;
  try {
    execFileSync("ipcrm", ["-m", shmid], { stdio: "ignore" });
  } catch {
    // already gone
  }
}

/**
 * `host`: run the server inside that host of hosts.ts, on its address and port 5432; `url`
 * then names that address (for clients in other hosts) and `localUrl` a gateway to it.
 */
export interface StartPostgresOptions {
  host?: Host;
  /** The server's `max_connections` (default 200): a soak's coordinators each hold two or more. */
  maxConnections?: number;
}

export function startPostgres(opts: StartPostgresOptions = {}): Promise<PgServer> {
  return retryOnAddressInUse(() => startPostgresOnce(opts));
}

async function startPostgresOnce(opts: StartPostgresOptions): Promise<PgServer> {
  const inHost = opts.host;
  const listenHost = inHost?.address ?? LOOPBACK;
  let gateway: Gateway | undefined;
  const root = makeTempDir("baton-pg-");
  const dataDir = path.join(root, "data");
  const logFile = path.join(root, "postgres.log");
  let proc: ServerProcess | undefined;
  let unregisterExit: (() => void) | undefined;
  try {
    fs.writeFileSync(logFile, "");
    chownTree(root);
    const port = inHost ? 5432 : await freePort();
    await prepareDataDir(root, dataDir, logFile);
    // initdb trusts 127.0.0.1 only; clients in other hosts come from 127.1.0.x.
    if (inHost) fs.appendFileSync(path.join(dataDir, "pg_hba.conf"), "host all all 127.0.0.0/8 trust\n");

    const args = [
      "-D",
      dataDir,
      "-p",
      String(port),
      "-h",
      listenHost,
      "-k",
      root,
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      `max_connections=${opts.maxConnections ?? 200}`,
      "-c",
      "shared_buffers=32MB",
      "-c",
      "huge_pages=off",
      // Keep dynamic shared memory inside the data dir, so nothing leaks
      // into /dev/shm when a server is SIGKILLed.
      "-c",
      "dynamic_shared_memory_type=mmap",
      "-c",
      "max_parallel_workers_per_gather=0",
      "-c",
      "log_min_messages=warning",
      "-c",
      "log_connections=off",
    ];
    const baseUrl = (db: string) => `postgres://postgres@${listenHost}:${port}/${db}`;
    if (inHost) gateway = await inHost.gateway(port);
    const localUrl = (db: string) => (gateway ? `postgres://postgres@${gateway.address}/${db}` : baseUrl(db));

    const spawnServer = (): ServerProcess => {
      fs.appendFileSync(logFile, `\n[harness] starting postgres on ${listenHost}:${port}\n`);
      const bin = path.join(pgBinDir(), "postgres");
      const spawnOpts = { env: serverEnv(root), logFile, cwd: root };
      if (inHost) {
        // `ip netns exec` needs root: drop to the postgres user after it.
        const { uid, gid } = runAs();
        const drop = uid === undefined ? [] : ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups"];
        const [cmd, ...rest] = [...drop, bin, ...args] as [string, ...string[]];
        proc = inHost.spawn("postgres", cmd, rest, spawnOpts);
      } else proc = new ServerProcess("postgres", bin, args, { ...spawnOpts, ...runAs() });
      return proc;
    };
    const waitReady = async (p: ServerProcess, db: string): Promise<void> => {
      await waitUntil(`postgres on ${listenHost}:${port}`, () => canQuery(localUrl(db)), {
        timeoutMs: STARTUP_TIMEOUT_MS,
        procs: [p],
      });
    };
    // Stop the server at fast shutdown (SIGINT); SIGKILL the group on timeout.
    const shutdown = async (): Promise<void> => {
      if (proc === undefined) return;
      await proc.stop("SIGINT", STOP_TIMEOUT_MS);
      await waitGroupGone(proc.pid);
    };

    const first = spawnServer();
    unregisterExit = onProcessExit(() => removeStaleShmem(dataDir));
    await waitReady(first, DATABASE);

    let stopped = false;
    const server: PgServer = {
      url: baseUrl(DATABASE),
      localUrl: localUrl(DATABASE),
      host: listenHost,
      port,
      database: DATABASE,
      user: "postgres",
      get pid() {
        if (proc === undefined) throw new Error("postgres: not started");
        return proc.pid;
      },
      dataDir,
      socketDir: root,
      logFile,
      urlFor: baseUrl,
      async stop() {
        if (stopped) return;
        stopped = true;
        await shutdown();
        await gateway?.close();
        removeStaleShmem(dataDir);
        unregisterExit?.();
        removeTempDir(root);
      },
      async restart() {
        if (stopped) throw new Error("postgres: restart() after stop()");
        await shutdown();
        const p = spawnServer();
        await waitReady(p, DATABASE);
      },
      async kill() {
        if (proc === undefined) return;
        await proc.kill();
        await waitGroupGone(proc.pid);
      },
      pause: () => proc?.signal("SIGSTOP"),
      resume: () => proc?.signal("SIGCONT"),
    };
    return server;
  } catch (err) {
    if (proc !== undefined) {
      await proc.kill();
      await waitGroupGone(proc.pid).catch(() => {});
    }
    await gateway?.close();
    removeStaleShmem(dataDir);
    unregisterExit?.();
    removeTempDir(root);
    throw err;
  }
}

/**
 * Wait until no live (non-zombie) process remains in process group `pgid`.
 * After the postmaster dies its backends are reparented and may linger for a
 * moment; a new postmaster refuses to start while they still hold the old
 * shared memory. Zombies are ignored: PID 1 in some containers never reaps.
 */
async function waitGroupGone(pgid: number, timeoutMs = 10_000): Promise<void> {
  await waitUntil(`process group ${pgid} to exit`, async () => !groupAlive(pgid), {
    timeoutMs,
    intervalMs: 20,
  });
}

function groupAlive(pgid: number): boolean {
  let pids: string[];
  try {
    pids = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  } catch {
    // No /proc (not Linux): fall back to kill(-pgid, 0), zombies included.
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  }
  for (const pid of pids) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces/parens.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    const pgrp = Number(fields[2]);
    if (pgrp === pgid && state !== "Z" && state !== "X") return true;
  }
  return false;
}
