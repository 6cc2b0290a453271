/**
 * Starting the command so that it, and everything it starts, never outlives the `baton`
 * holding its lock. Why this shape (and not a parent-death signal) is in docs/cli.md, "What
 * happens to the command when baton dies".
 *
 * - The command runs in a process group of its own (a new session: Node's `detached`), so
 *   one `kill(-pgid)` reaches its descendants too. `PR_SET_PDEATHSIG` alone would only stop
 *   the direct child; `sh -c 'a; b'` forks, and the grandchild would run on unlocked.
 * - A watchdog, a tiny `/bin/sh` in a session of its own, reads a pipe from `baton` and
 *   never gets data: end of file means `baton` is gone (the kernel closes the pipe however
 *   baton dies, SIGKILL included), so it kills the command's whole group.
 * - The command waits at a gate until the watchdog is armed: a `baton` killed between the
 *   two spawns leaves a gate that reads end of file and exits without running anything.
 * - On the file backend the kernel frees a dead baton's locks at the very moment the
 *   watchdog reads end of file, so a waiter could be granted before the watchdog has
 *   killed the group. The watchdog therefore inherits baton's lock-file descriptors
 *   ({@link fileLockDescriptors}): open-file-description locks belong to the description,
 *   so they stay held until the watchdog exits, which it does only after the kill. The
 *   command itself inherits nothing (Node opens every descriptor close-on-exec) and an
 *   unlock by a living baton frees the lock for every copy of the description.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";

/**
 * Waits for one line on fd 3, then becomes the command; exits 125 if baton died first, 127
 * with baton's own message if there is no such command.
 */
const GATE = `IFS= read -r _ <&3 || exit 125; exec 3<&-
command -v "$1" >/dev/null 2>&1 || { printf 'baton: cannot run %s: command not found\\n' "$1" >&2; exit 127; }
exec "$@"`;
/**
 * Ignores terminal signals (only `baton`'s death may trigger it), says it is armed, waits
 * for end of file on stdin, then kills the group named by $1.
 */
const WATCHDOG = `trap '' INT TERM HUP QUIT TSTP; echo armed; while IFS= read -r _; do :; done; kill -s KILL -- -"$1" 2>/dev/null`;

/** A command started under a watchdog; see the module comment. */
export interface GuardedCommand {
  /** The command's process (its pid is also its process group id). */
  readonly child: ChildProcess;
  /** Sends `signal` to the command's whole process group; a group already gone is no error. */
  signalGroup(signal: NodeJS.Signals): void;
  /**
   * Once the command has exited: kills whatever it left in its group (SIGKILL, so nothing
   * of it runs after the lock is released) and stops the watchdog. Idempotent.
   */
  finish(): void;
}

/**
 * Starts `argv` behind the gate, arms a watchdog for its process group, then opens the
 * gate. Rejects if the watchdog cannot be armed (the command then never runs).
 */
export async function startGuarded(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  keepOpen: readonly number[] = [],
): Promise<GuardedCommand> {
  const child = spawn("/bin/sh", ["-c", GATE, "baton", ...argv], {
    stdio: ["inherit", "inherit", "inherit", "pipe"],
    env,
    detached: true,
  });
  const pgid = child.pid;
  if (pgid === undefined) {
    // Spawning /bin/sh itself failed; the "error" event says why.
    const error = await new Promise<Error>((resolve) => child.once("error", resolve));
    throw error;
  }
  let finished = false;
  let watchdog: ChildProcess;
  try {
    watchdog = await armWatchdog(pgid, keepOpen);
  } catch (error) {
    killGroup(pgid, "SIGKILL");
    throw error;
  }
  // A watchdog that dies early (an OOM kill) is replaced: without one, baton's death would
  // leave the command running.
  const rearm = () => {
    if (finished) return;
    process.stderr.write("baton: the command's watchdog exited; starting another\n");
    armWatchdog(pgid, keepOpen).then(
      (next) => {
        watchdog = next;
        if (finished) next.kill("SIGKILL");
        else next.once("exit", rearm);
      },
      (error: Error) => process.stderr.write(`baton: cannot restart the watchdog: ${error.message}\n`),
    );
  };
  watchdog.once("exit", rearm);
  const gate = child.stdio[3] as NodeJS.WritableStream & { destroy(): void };
  gate.write("\n");
  gate.end();
  return {
    child,
    signalGroup: (signal) => killGroup(pgid, signal),
    finish() {
      if (finished) return;
      finished = true;
      killGroup(pgid, "SIGKILL");
      watchdog.kill("SIGKILL");
    },
  };
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

/**
 * Descriptors of the file backend's lock files open in this process (Linux: from
 * /proc/self/fd). The CLI holds one coordinator, so these are its session's locks.
 */
export function fileLockDescriptors(): number[] {
  const fds: number[] = [];
  for (const entry of readdirSync("/proc/self/fd")) {
    try {
      if (/\/(locks\.[0-9a-f]{2}|semaphores)$/.test(readlinkSync(`/proc/self/fd/${entry}`))) fds.push(Number(entry));
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return fds;
}

/**
 * Starts a watchdog for group `pgid`, holding copies of `keepOpen`, and resolves once it
 * says it is armed.
 */
function armWatchdog(pgid: number, keepOpen: readonly number[]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const watchdog = spawn("/bin/sh", ["-c", WATCHDOG, "baton-watchdog", String(pgid)], {
      stdio: ["pipe", "pipe", "ignore", ...keepOpen],
      detached: true,
    });
    // Neither the watchdog nor its pipes may keep baton's event loop alive.
    watchdog.unref();
    const stdout = watchdog.stdout as NodeJS.ReadableStream & { unref?: () => void };
    const fail = (why: string) => reject(new Error(`cannot start the watchdog for the command: ${why}`));
    watchdog.once("error", (error) => fail(error.message));
    watchdog.once("exit", (code, signal) => fail(`it exited (${signal ?? code}) before it was armed`));
    stdout.once("data", () => {
      watchdog.removeAllListeners("exit");
      stdout.unref?.();
      (watchdog.stdin as unknown as { unref?: () => void }).unref?.();
      resolve(watchdog);
    });
  });
}
