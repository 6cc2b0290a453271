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
 * nothing). One timer serves every holder: ref'd while anyone holds, unref'd (kept, not
 * cleared) when nobody does, so a wait that starts and ends in a loop does not make and
 * clear a timer each time.
 */
export function holdProcess(): () => void {
  if (holders++ === 0) {
    if (timer) timer.ref();
    else timer = setInterval(() => {}, MAX_TIMER_MS);
  }
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--holders === 0) timer?.unref();
  };
}
