import { constants } from "node:os";
import type { Coordinator } from "../core/coordinator.js";
import {
  BackendUnavailableError,
  BatonError,
  ConflictError,
  FencedError,
  FenceFailedError,
  InvalidArgumentError,
  TimeoutError,
} from "../core/errors.js";
import { type GuardedCommand, startGuarded } from "./guard.js";

/** Exit statuses of the `baton` CLI, after sysexits(3). */
export const EXIT = {
  /** Bad usage: unknown option, malformed duration, missing command. */
  usage: 64,
  /** A cell write was refused: the cell changed (conflict) or a later lock holder wrote (fenced). */
  conflict: 65,
  /** The cell does not exist (`baton cell get`). */
  noCell: 66,
  /** The backend could not be reached. */
  unavailable: 69,
  /** Not acquired: busy with `--no-wait`, or timed out. */
  notAcquired: 75,
  /** The lock was lost while the command ran (it got SIGTERM, then SIGKILL). */
  lost: 76,
  /** `--on-takeover` failed: the lock was released and the command did not run. */
  fenceFailed: 77,
  /** `baton unlock`: the backend cannot revoke a live holder (file), and no `--kill`. */
  cannotRevoke: 78,
} as const;

/** Signals forwarded to the command. */
const FORWARDED: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];

/** Maps an error to the CLI's exit status and prints it. */
export function exitStatusFor(error: unknown): number {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`baton: ${message}\n`);
  if (error instanceof InvalidArgumentError) return EXIT.usage;
  if (error instanceof TimeoutError) return EXIT.notAcquired;
  if (error instanceof FenceFailedError) return EXIT.fenceFailed;
  if (error instanceof ConflictError || error instanceof FencedError) return EXIT.conflict;
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
 * Runs `argv` while something is held, in a process group of its own that dies with this
 * process (see guard.ts); `keepOpen` are the descriptors the lock lives on, which the
 * watchdog keeps open until the group is dead. When `lost` aborts, the group gets SIGTERM
 * and, `killAfterMs` later, SIGKILL; the result is then {@link EXIT.lost}. Signals sent to
 * this process are forwarded to the group. When the command exits, whatever it left in
 * its group is killed before this resolves, so nothing of it runs once the caller
 * releases. Resolves with the exit status to use.
 */
export async function runHolding(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  lost: AbortSignal,
  killAfterMs: number,
  keepOpen: readonly number[] = [],
): Promise<number> {
  // The forwarding handlers go in before anything is awaited: the caller removes its own
  // (which cancel the wait) only after this call, so there is no moment where a Ctrl-C
  // finds no handler and the kernel's default kills baton while the command runs on. A
  // signal that arrives while the command is being started is delivered once it exists.
  let guarded: GuardedCommand | null = null;
  const early: NodeJS.Signals[] = [];
  const forward = (signal: NodeJS.Signals) => (guarded ? guarded.signalGroup(signal) : early.push(signal));
  for (const signal of FORWARDED) process.on(signal, forward);
  const unforward = () => {
    for (const s of FORWARDED) process.off(s, forward);
  };
  let started: GuardedCommand;
  try {
    started = await startGuarded(argv, env, keepOpen);
  } catch (error) {
    unforward();
    process.stderr.write(`baton: cannot run ${argv[0]}: ${(error as Error).message}\n`);
    return 126;
  }
  guarded = started;
  for (const signal of early) started.signalGroup(signal);
  const { child } = started;
  return new Promise<number>((resolve) => {
    let wasLost = false;
    let killTimer: NodeJS.Timeout | null = null;
    const onLost = () => {
      wasLost = true;
      process.stderr.write(`baton: ${(lost.reason as Error)?.message ?? "lost"}; stopping the command\n`);
      started.signalGroup("SIGTERM");
      killTimer = setTimeout(() => started.signalGroup("SIGKILL"), killAfterMs);
    };
    if (lost.aborted) onLost();
    else lost.addEventListener("abort", onLost, { once: true });
    child.once("exit", (code, signal) => {
      started.finish();
      if (killTimer) clearTimeout(killTimer);
      lost.removeEventListener("abort", onLost);
      unforward();
      resolve(wasLost ? EXIT.lost : (code ?? 128 + ((signal && constants.signals[signal]) || 0)));
    });
  });
}
