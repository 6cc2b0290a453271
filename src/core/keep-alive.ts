/**
 * What keeps a process alive. Background work (session renewal, lease expiry, idle
 * connections) is unref'd so that a program that forgot `close()` still exits; a wait the
 * program is blocked on (an acquisition, an upgrade, an event stream's `next()`) holds the
 * process until it settles, as a socket read would.
 *
 * @module
 * @internal
 */
import { MAX_TIMER_MS } from "./validate.js";

let holders = 0;
let timer: NodeJS.Timeout | null = null;

/**
 * Keeps the event loop alive until the returned function is called (once; later calls do
 * nothing). One ref'd timer serves every holder.
 */
export function holdProcess(): () => void {
  holders++;
  timer ??= setInterval(() => {}, MAX_TIMER_MS);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--holders === 0 && timer) {
      clearInterval(timer);
      timer = null;
    }
  };
}
