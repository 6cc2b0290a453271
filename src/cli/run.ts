import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:os";
import type { Coordinator } from "../core/coordinator.js";
import { BackendUnavailableError, BatonError, InvalidArgumentError, TimeoutError } from "../core/errors.js";

/** Exit statuses of the `baton` CLI, after sysexits(3). */
export const EXIT = {
  /** Bad usage: unknown option, malformed duration, missing command. */
  usage: 64,
  /** The backend could not be reached. */
  unavailable: 69,
  /** Not acquired: busy with `--no-wait`, or timed out. */
  notAcquired: 75,
  /** The lock was lost while the command ran (it got SIGTERM, then SIGKILL). */
  lost: 76,
} as const;

/** Signals forwarded to the command. */
const FORWARDED: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];

/** Maps an error to the CLI's exit status and prints it. */
export function exitStatusFor(error: unknown): number {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`baton: ${message}\n`);
  if (error instanceof InvalidArgumentError) return EXIT.usage;
  if (error instanceof TimeoutError) return EXIT.notAcquired;
  if (error instanceof BackendUnavailableError) return EXIT.unavailable;
  if (error instanceof BatonError && error.code === "MISSING_GUARANTEE") return EXIT.usage;
  return EXIT.unavailable;
}

/**
 * Shows, on a terminal only, what the process waits for and for how long. Returns a
 * function that clears the line.
 */
export function showWaiting(
  what: string,
  coord: Coordinator,
  kind: "locks" | "semaphores" | "elections",
  name: string,
): () => void {
  if (!process.stderr.isTTY) return () => {};
  const started = Date.now();
  let holders = "";
  const draw = () => {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    process.stderr.write(`\r\u001b[2Kbaton: waiting for ${what}${holders} (${seconds}s)`);
  };
  const refresh = async () => {
    try {
      const info = await coord.inspect();
      if (kind === "elections") {
        const leader = info.elections.find((e) => e.id === name)?.leader;
        holders = leader ? `, led by ${leader.memberId}` : "";
      } else {
        const found = info[kind].find((l) => l.name === name);
        holders = found?.holders.length ? `, held by ${found.holders.map((h) => h.memberId).join(", ")}` : "";
      }
    } catch {
      holders = "";
    }
  };
  void refresh();
  const timer = setInterval(() => {
    draw();
    if ((Date.now() - started) % 2000 < 250) void refresh();
  }, 250);
  timer.unref();
  draw();
  return () => {
    clearInterval(timer);
    process.stderr.write("\r\u001b[2K");
  };
}

/**
 * Runs `argv` while something is held. When `lost` aborts, the command gets SIGTERM and,
 * `killAfterMs` later, SIGKILL; the result is then {@link EXIT.lost}. Signals sent to this
 * process are forwarded to the command. Resolves with the exit status to use.
 */
export function runHolding(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  lost: AbortSignal,
  killAfterMs: number,
): Promise<number> {
  const [command, ...args] = argv;
  return new Promise<number>((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(command as string, args, { stdio: "inherit", env });
    } catch (error) {
      process.stderr.write(`baton: cannot run ${command}: ${(error as Error).message}\n`);
      resolve(127);
      return;
    }
    let wasLost = false;
    let killTimer: NodeJS.Timeout | null = null;
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of FORWARDED) process.on(signal, forward);
    const onLost = () => {
      wasLost = true;
      process.stderr.write(`baton: ${(lost.reason as Error)?.message ?? "lost"}; stopping the command\n`);
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    };
    if (lost.aborted) onLost();
    else lost.addEventListener("abort", onLost, { once: true });
    child.once("error", (error: NodeJS.ErrnoException) => {
      process.stderr.write(`baton: cannot run ${command}: ${error.message}\n`);
      finish(error.code === "ENOENT" ? 127 : 126);
    });
    child.once("exit", (code, signal) => {
      finish(wasLost ? EXIT.lost : (code ?? 128 + ((signal && constants.signals[signal]) || 0)));
    });
    let finished = false;
    function finish(status: number) {
      if (finished) return;
      finished = true;
      if (killTimer) clearTimeout(killTimer);
      lost.removeEventListener("abort", onLost);
      for (const signal of FORWARDED) process.off(signal, forward);
      resolve(status);
    }
  });
}
