import { onAbort } from "./abortable.js";
import { AbortError, TimeoutError } from "./errors.js";
import type { LiveSession } from "./session.js";
import { holdProcess } from "./keep-alive.js";

/** A signal combining a caller's signal, a timeout and internal stop signals. */
export interface Cancellation {
  /** Whether it was cancelled; cheap (no signal is made for it). */
  readonly aborted: boolean;
  /** Why it was cancelled: a Baton error, or an internal signal's reason. */
  readonly reason: unknown;
  /** The combined signal, made on first use: most acquisitions never wait, so never need one. */
  readonly signal: AbortSignal;
  /** Detaches from every source and clears the timer. Call when the operation settles. */
  dispose(): void;
}

/**
 * Combines cancellation sources into one signal whose `reason` is a Baton error: a
 * {@link TimeoutError} when `timeoutMs` elapses, an {@link AbortError} (cause: the caller's
 * reason) when the caller aborts, or an internal source's own reason (session lost, closed).
 * Unlike `AbortSignal.any`, it leaves no listener behind once disposed, and it builds no
 * `AbortController` unless someone reads `signal` (the uncontended path never does).
 */
export function cancellation(options: {
  what: string;
  backend: string;
  timeoutMs?: number | undefined;
  /** The timeout to name in the `TimeoutError`, when it differs from `timeoutMs`. */
  reportedTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  internal?: readonly AbortSignal[];
  /**
   * Abort (with the session's reason) when this session is lost or closed. Registered as a
   * dependent rather than as an event listener: it is the hot path of every acquisition.
   */
  session?: LiveSession;
}): Cancellation {
  let controller: AbortController | null = null;
  let aborted = false;
  let reason: unknown;
  const detach: (() => void)[] = [];
  const dispose = () => {
    for (const undo of detach.splice(0)) undo();
  };
  const abort = (why: unknown) => {
    if (aborted) return;
    aborted = true;
    reason = why;
    dispose();
    controller?.abort(why);
  };
  const follow = (source: AbortSignal, why: () => unknown) => {
    if (aborted) return;
    // onAbort shares one listener per signal: one caller signal may cancel thousands.
    detach.push(onAbort(source, () => abort(why())));
  };
  const { what, backend, timeoutMs, signal, session } = options;
  if (session) {
    if (session.lost) abort(session.signal.reason);
    else {
      const dependent = { lose: (error: Error) => abort(error) };
      session.dependents.add(dependent);
      detach.push(() => session.dependents.delete(dependent));
    }
  }
  for (const source of options.internal ?? []) follow(source, () => source.reason);
  if (signal) {
    follow(signal, () => new AbortError(`${what} was cancelled`, { backend, cause: signal.reason }));
  }
  if (timeoutMs !== undefined && !aborted) {
    const timer = setTimeout(() => {
      const reported = options.reportedTimeoutMs ?? timeoutMs;
      abort(new TimeoutError(`${what} timed out after ${reported} ms`, reported, { backend }));
    }, timeoutMs);
    detach.push(() => clearTimeout(timer));
  }
  return {
    get aborted() {
      return aborted;
    },
    get reason() {
      return reason;
    },
    get signal() {
      if (!controller) {
        controller = new AbortController();
        if (aborted) controller.abort(reason);
        // Someone reads `signal` only to wait on it: that wait keeps the process alive,
        // as the background timers (session renewal, lease expiry) do not.
        else detach.push(holdProcess());
      }
      return controller.signal;
    },
    dispose,
  };
}
