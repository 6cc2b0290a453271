/**
 * `baton lock NAME` with no command: hold until SIGINT, SIGTERM or SIGHUP, as
 * `etcdctl lock NAME` does, printing the token so a script can read it.
 *
 * @module
 */
import { holdProcess } from "../core/keep-alive.js";
import { EXIT } from "./run.js";

/** Signals that end a hold with no command. */
const ENDING: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Prints `token` on stdout and waits for a signal (resolves 0) or the loss of what is held
 * (resolves {@link EXIT.lost}). The signal handlers are in place when this returns, so the
 * caller may then remove its own (which cancel the wait) with no moment in between where a
 * signal meets the default action.
 */
export function holdUntilSignal(label: string, token: bigint, lost: AbortSignal): Promise<number> {
  let settle: (status: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    settle = resolve;
  });
  const onSignal = () => settle(0);
  const onLost = () => {
    process.stderr.write(`baton: ${(lost.reason as Error)?.message ?? `${label} was lost`}\n`);
    settle(EXIT.lost);
  };
  for (const signal of ENDING) process.on(signal, onSignal);
  // Nothing else keeps the process alive while it only holds (renewal timers are unref'd).
  const release = holdProcess();
  if (lost.aborted) onLost();
  else lost.addEventListener("abort", onLost, { once: true });
  process.stdout.write(`${token}\n`);
  return done.finally(() => {
    release();
    for (const signal of ENDING) process.off(signal, onSignal);
    lost.removeEventListener("abort", onLost);
  });
}
