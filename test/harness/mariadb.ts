/**
 * Throwaway MariaDB servers for tests, from Debian's mariadb-server (see
 * scripts/ensure-servers.sh). Each `startMariadb()` runs mariadb-install-db into its own
 * temp dir (under BATON_HARNESS_TMPDIR), then mariadbd on a free loopback port with a
 * private socket and `--skip-grant-tables` (every client is a superuser: tests need no
 * password and may KILL any connection), and creates the `baton` database. The system
 * server (if any) is never touched.
 */
import fs from "node:fs";
import path from "node:path";
import mysql from "mysql2/promise";
import { freePort } from "./ports.js";
import { makeTempDir, onProcessExit, removeTempDir, retryOnAddressInUse, ServerProcess, waitUntil } from "./proc.js";

const HOST = "127.0.0.1";
const STARTUP_TIMEOUT_MS = 30_000;
const DATABASE = "baton";

export interface MariadbServer {
  /** "mysql://root@127.0.0.1:PORT/baton" */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly socket: string;
  readonly pid: number;
  readonly dir: string;
  readonly logFile: string;
  /** Runs one statement as root on a fresh connection and returns its rows. */
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Clean shutdown (SIGTERM; SIGKILL after 10 s), then remove all files. Idempotent. */
  stop(): Promise<void>;
  /** Stops (clean shutdown) and starts again on the same port and data. */
  restart(): Promise<void>;
  /** SIGKILL the server (simulated crash); `restart()` starts it again. */
  kill(): Promise<void>;
  pause(): void;
  resume(): void;
}

function binary(name: string): string {
  for (const dir of ["/usr/sbin", "/usr/bin", "/usr/local/bin"]) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not found; run \`bash scripts/ensure-servers.sh mariadb\``);
}

const env = (home: string): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: home,
  LANG: "C",
  TZ: "UTC",
});

// A small, fast, crash-tolerant server: durable enough for SIGKILL tests (the log is
// written at each commit), not for a power cut.
const tuning = [
  "--innodb-buffer-pool-size=32M",
  "--innodb-log-file-size=8M",
  "--innodb-flush-log-at-trx-commit=2",
  "--skip-log-bin",
  "--skip-name-resolve",
  "--skip-grant-tables",
  "--max-connections=400",
  "--performance-schema=OFF",
  "--innodb-print-all-deadlocks=ON",
];

/** Options of {@link startMariadb}. */
export interface MariadbOptions {
  /** Extra mariadbd arguments (e.g. `--wsrep-on=ON` to look like a Galera node). */
  readonly args?: readonly string[];
}

export function startMariadb(options: MariadbOptions = {}): Promise<MariadbServer> {
  return retryOnAddressInUse(() => startOnce(options));
}

async function startOnce(options: MariadbOptions): Promise<MariadbServer> {
  const dir = makeTempDir("baton-mariadb-");
  const dataDir = path.join(dir, "data");
  const logFile = path.join(dir, "mariadb.log");
  const socket = path.join(dir, "mysqld.sock");
  let proc: ServerProcess | undefined;
  let unregisterExit: (() => void) | undefined;
  try {
    fs.writeFileSync(logFile, "");
    // mariadb-install-db has been seen to fail once on a loaded machine (its bootstrap
    // server gave up): one more try in a fresh directory before the test fails.
    for (let attempt = 1; ; attempt++) {
      const install = new ServerProcess(
        "mariadb-install-db",
        binary("mariadb-install-db"),
        [
          "--no-defaults",
          `--datadir=${dataDir}`,
          "--user=root",
          "--auth-root-authentication-method=normal",
          "--skip-test-db",
          "--skip-name-resolve",
          "--innodb-log-file-size=8M",
        ],
        { env: env(dir), logFile, cwd: dir },
      );
      const installed = await install.waitExit();
      if (installed.code === 0) break;
      if (attempt >= 2) throw new Error(`mariadb-install-db failed:\n${install.logTail(80)}`);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
    const port = await freePort();
    const args = [
      "--no-defaults",
      `--datadir=${dataDir}`,
      `--port=${port}`,
      `--bind-address=${HOST}`,
      `--socket=${socket}`,
      `--pid-file=${path.join(dir, "mysqld.pid")}`,
      "--user=root",
      ...tuning,
      ...(options.args ?? []),
    ];
    const spawnServer = () => {
      fs.appendFileSync(logFile, `\n[harness] starting mariadbd on ${HOST}:${port}\n`);
      proc = new ServerProcess("mariadbd", binary("mariadbd"), args, { env: env(dir), logFile, cwd: dir });
      return proc;
    };
    const query = async <R>(sql: string, params: unknown[] = []): Promise<R[]> => {
      const conn = await mysql.createConnection({ socketPath: socket, user: "root", connectTimeout: 2000 });
      try {
        const [rows] = await conn.query(sql, params);
        return rows as R[];
      } finally {
        await conn.end().catch(() => conn.destroy());
      }
    };
    const waitReady = async (p: ServerProcess) => {
      await waitUntil(
        `mariadbd on ${HOST}:${port}`,
        async () => {
          await query("SELECT 1");
          return true;
        },
        { timeoutMs: STARTUP_TIMEOUT_MS, procs: [p] },
      );
    };
    await waitReady(spawnServer());
    unregisterExit = onProcessExit(() => proc?.killSync());
    await query(`CREATE DATABASE IF NOT EXISTS ${DATABASE}`);
    let stopped = false;
    const server: MariadbServer = {
      url: `mysql://root@${HOST}:${port}/${DATABASE}`,
      host: HOST,
      port,
      socket,
      get pid() {
        if (!proc) throw new Error("mariadb: not started");
        return proc.pid;
      },
      dir,
      logFile,
      query,
      async stop() {
        if (stopped) return;
        stopped = true;
        await proc?.stop("SIGTERM", 10_000);
        unregisterExit?.();
        removeTempDir(dir);
      },
      async restart() {
        if (stopped) throw new Error("mariadb: restart() after stop()");
        await proc?.stop("SIGTERM", 10_000);
        await waitReady(spawnServer());
      },
      async kill() {
        await proc?.kill();
      },
      pause: () => proc?.signal("SIGSTOP"),
      resume: () => proc?.signal("SIGCONT"),
    };
    return server;
  } catch (error) {
    await proc?.kill();
    unregisterExit?.();
    removeTempDir(dir);
    throw error;
  }
}
