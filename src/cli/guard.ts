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
 * - Where baton's death frees the lock at once, a waiter could be granted before the
 *   watchdog has killed the group: on the file backend the kernel drops a dead process's
 *   locks, and PostgreSQL drops a closed connection's advisory locks. So the watchdog
 *   inherits copies of baton's sockets and lock files ({@link heldDescriptors}): a lock
 *   belongs to the open file description (OFD locks) or to the connection, so it stays
 *   held until the watchdog exits, which it does only after the kill. The command itself
 *   inherits none of them (Node opens every descriptor close-on-exec), and a release by a
 *   living baton (an unlock, a SQL call) frees the lock for every copy.
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
 * gate. `stdin: "ignore"` for a command that must not take baton's input (a hook). Rejects if the watchdog cannot be armed (the command then never runs).
 */
export async function startGuarded(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  keepOpen: readonly number[] = [],
  stdin: "inherit" | "ignore" = "inherit",
): Promise<GuardedCommand> {
  const child = spawn("/bin/sh", ["-c", GATE, "baton", ...argv], {
    stdio: [stdin, "inherit", "inherit", "pipe"],
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
 * The descriptors a lock can live on, open in this process (Linux: from /proc/self/fd):
 * sockets (a PostgreSQL connection, the file backend's mesh) and the file backend's lock
 * files. Taken before the command starts, so none of the guard's own pipes are among them.
 */
export function heldDescriptors(): number[] {
  // Elsewhere there is no /proc; nothing frees a lock at a process's death there but a
  // server's closed connection, a narrower window the watchdog still closes quickly.
  if (process.platform !== "linux") return [];
  const fds: number[] = [];
  for (const entry of readdirSync("/proc/self/fd")) {
    const fd = Number(entry);
    if (fd <= 2) continue;
    try {
      const target = readlinkSync(`/proc/self/fd/${entry}`);
      if (/^socket:|\/(locks\.[0-9a-f]{2}|semaphores)$/.test(target)) fds.push(fd);
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
