/**
 * `baton status --watch`: the status table redrawn in place every interval, like watch(1),
 * until SIGINT or SIGTERM. On a terminal it uses the alternate screen (restored on exit)
 * and colours long waits; piped, it prints one snapshot after another.
 *
 * @module
 */
import type { Coordinator } from "../core/coordinator.js";
import { formatStatus } from "../status/text.js";

/** Options of {@link watchStatus}. */
export interface WatchOptions {
  intervalMs: number;
  longWaitMs?: number | undefined;
}

/** Redraws until a signal; resolves 0 then. A failed inspection is shown and retried. */
export async function watchStatus(coord: Coordinator, options: WatchOptions): Promise<number> {
  const tty = process.stdout.isTTY === true;
  let stopped = false;
  let wake: () => void = () => {};
  const onSignal = () => {
    stopped = true;
    wake();
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, onSignal);
  if (tty) process.stdout.write("\u001b[?1049h");
  try {
    while (!stopped) {
      let body: string;
      try {
        body = formatStatus(await coord.inspect(), { longWaitMs: options.longWaitMs, color: tty });
      } catch (error) {
        body = `cannot inspect: ${error instanceof Error ? error.message : String(error)}\n`;
      }
      if (stopped) break;
      const header = `Every ${(options.intervalMs / 1000).toFixed(1)}s: baton status  ${new Date().toISOString().slice(11, 19)} UTC\n\n`;
      process.stdout.write(tty ? `\u001b[H\u001b[2J${header}${body}` : `${header}${body}\n`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, options.intervalMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    if (tty) process.stdout.write("\u001b[?1049l");
    for (const s of signals) process.off(s, onSignal);
  }
  return 0;
}
