/**
 * Process plumbing shared by the server harnesses: spawning a server with its
 * output going to a log file, bounded waits, graceful/forced stop, and a
 * process-exit safety net that kills whatever a test forgot to stop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  uid?: number;
  gid?: number;
  /** Output (stdout + stderr) is appended here. */
  logFile: string;
  /** Written to the child's stdin (then closed). Default: stdin is /dev/null. */
  input?: string;
}

/**
 * A spawned server process. The child is its own process group leader
 * (`detached`), so signals can go to the whole group (PostgreSQL backends
 * included) and a test runner's Ctrl-C does not race our own shutdown.
 * The child is unref'd: a forgotten server never keeps the test process
 * alive; the exit hook below kills it instead.
 */
export class ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly label: string,
    command: string,
    args: readonly string[],
    readonly opts: SpawnOptions,
  ) {
    const fd = fs.openSync(opts.logFile, "a");
    try {
      this.child = spawn(command, args, {
        cwd: opts.cwd ?? os.tmpdir(),
        env: opts.env ?? process.env,
        stdio: [opts.input === undefined ? "ignore" : "pipe", fd, fd],
        detached: true,
        ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
        ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
      });
    } finally {
      fs.closeSync(fd);
    }
    let resolveExit!: (info: { code: number | null; signal: NodeJS.Signals | null }) => void;
    this.exited = new Promise((resolve) => {
      resolveExit = resolve;
    });
    const onExit = (info: { code: number | null; signal: NodeJS.Signals | null }): void => {
      if (this.exitInfo !== undefined) return;
      this.exitInfo = info;
      live.delete(this);
      resolveExit(info);
    };
    this.child.once("exit", (code, signal) => onExit({ code, signal }));
    // Surface spawn failures (ENOENT, EACCES) through `exited` + the log.
    this.child.once("error", (err) => {
      try {
        fs.appendFileSync(opts.logFile, `\n[harness] spawn error: ${err.message}\n`);
      } catch {
        // the log's directory may already be gone
      }
      if (this.child.pid === undefined || this.child.exitCode !== null) onExit({ code: -1, signal: null });
    });
    if (this.child.pid === undefined) {
      let reason = "not found on PATH or not executable";
      try {
        fs.accessSync(command, fs.constants.X_OK);
      } catch (err) {
        if (command.includes("/")) reason = (err as Error).message;
      }
      throw new Error(`${label}: failed to spawn ${command}: ${reason}`);
    }
    this.pid = this.child.pid;
    if (opts.input !== undefined && this.child.stdin) {
      this.child.stdin.on("error", () => {}); // EPIPE if the child exits early
      this.child.stdin.end(opts.input);
      // A piped stdin would keep the event loop alive; the exit waiters ref instead.
      (this.child.stdin as unknown as { unref?: () => void }).unref?.();
    }
    this.child.unref();
    live.add(this);
    installExitHook();
  }

  private waiters = 0;

  /**
   * Wait for the process to exit. The child is unref'd, so while somebody
   * waits we ref it again; otherwise Node could exit mid-await.
   */
  async waitExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.exitInfo !== undefined) return this.exitInfo;
    if (this.waiters++ === 0) this.child.ref();
    try {
      return await this.exited;
    } finally {
      if (--this.waiters === 0) this.child.unref();
    }
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  get exitDescription(): string {
    const e = this.exitInfo;
    if (e === undefined) return "still running";
    return e.signal !== null ? `killed by ${e.signal}` : `exited with code ${e.code}`;
  }

  /** Signal the whole process group; no-op if already gone. */
  signal(sig: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(-this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }

  /**
   * Send `sig` (SIGCONT first, in case the process is paused), wait up to
   * `timeoutMs` for exit, then SIGKILL the group and wait for the exit.
   */
  async stop(sig: NodeJS.Signals = "SIGTERM", timeoutMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.signal("SIGCONT");
    this.signal(sig);
    const timedOut = await raceTimeout(this.waitExit(), timeoutMs);
    if (timedOut) {
      this.signal("SIGKILL");
      await this.waitExit();
    }
  }

  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.waitExit();
  }

  /** Synchronous best-effort SIGKILL, for exit hooks. */
  killSync(): void {
    this.signal("SIGKILL");
  }

  logTail(lines = 30): string {
    return tail(this.opts.logFile, lines);
  }
}

/** Resolves `true` if `p` did not settle within `ms`. Never leaves a timer behind. */
export async function raceTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<true>((resolve) => {
    timer = setTimeout(() => resolve(true), ms);
  });
  try {
    return await Promise.race([p.then(() => false as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `probe` until it returns true, `proc` dies, or `timeoutMs` elapses.
 * Throws an error with the last probe error and the tail of the log.
 */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; procs?: readonly ServerProcess[] },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 50;
  let lastError: unknown;
  for (;;) {
    for (const p of opts.procs ?? []) {
      if (!p.running) {
        throw new Error(
          `${what}: ${p.label} (pid ${p.pid}) ${p.exitDescription} before becoming ready.\n` +
            `--- last lines of ${p.opts.logFile} ---\n${p.logTail()}`,
        );
      }
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const logs = (opts.procs ?? [])
        .map((p) => `--- last lines of ${p.opts.logFile} (${p.label}) ---\n${p.logTail()}`)
        .join("\n");
      const last = lastError === undefined ? "" : ` Last error: ${(lastError as Error).message ?? String(lastError)}.`;
      throw new Error(`${what}: not ready after ${opts.timeoutMs} ms.${last}\n${logs}`);
    }
    await delay(interval);
  }
}

/**
 * freePort() only promises a port that was free a moment ago; another process
 * can grab it before the server binds. Retry the whole startup (which must
 * clean up after itself on failure) when the error says so.
 */
export async function retryOnAddressInUse<T>(start: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await start();
    } catch (err) {
      if (i >= attempts || !/address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

export function tail(file: string, lines = 30): string {
  try {
    const text = fs.readFileSync(file, "utf8");
    return text
      .split("\n")
      .slice(-lines - 1)
      .join("\n");
  } catch (err) {
    return `(could not read ${file}: ${(err as Error).message})`;
  }
}

/**
 * Parent of all harness temp dirs: $BATON_HARNESS_TMPDIR if set, else
 * os.tmpdir(). Pointing it at a tmpfs (e.g. /dev/shm) makes PostgreSQL
 * startup several times faster on slow disks.
 */
export function harnessTmpRoot(): string {
  return process.env.BATON_HARNESS_TMPDIR || os.tmpdir();
}

export function makeTempDir(prefix: string): string {
  installExitHook();
  const dir = fs.mkdtempSync(path.join(harnessTmpRoot(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  tempDirs.delete(dir);
}

// ---------------------------------------------------------------------------
// Safety net: on process exit, SIGKILL any server still running and remove
// temp dirs. Tests are expected to clean up in after() hooks; this only
// covers crashes and forgotten servers. Also handles SIGINT/SIGTERM, since
// the children are in their own process groups and would not see a Ctrl-C.

const live = new Set<ServerProcess>();
const tempDirs = new Set<string>();
const exitCallbacks = new Set<() => void>();
let hookInstalled = false;

/** Extra synchronous cleanup to run at process exit (e.g. shared memory). */
export function onProcessExit(fn: () => void): () => void {
  exitCallbacks.add(fn);
  return () => exitCallbacks.delete(fn);
}

function cleanupSync(): void {
  for (const p of live) p.killSync();
  live.clear();
  for (const fn of exitCallbacks) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  exitCallbacks.clear();
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
  tempDirs.clear();
}

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.once("exit", cleanupSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    // Only take over the signal if nobody else handles it, and re-raise
    // afterwards so the exit status still says "killed by signal".
    if (process.listenerCount(sig) > 0) continue;
    process.once(sig, () => {
      cleanupSync();
      process.kill(process.pid, sig);
    });
  }
}
