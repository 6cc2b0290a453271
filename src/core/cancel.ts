import { AbortedError, TimeoutError } from "./errors.js";

/** A signal combining a caller's signal, a timeout and internal stop signals. */
export interface Cancellation {
  readonly signal: AbortSignal;
  /** Detaches from every source and clears the timer. Call when the operation settles. */
  dispose(): void;
}

/**
 * Combines cancellation sources into one signal whose `reason` is a Baton error: a
 * {@link TimeoutError} when `timeoutMs` elapses, an {@link AbortedError} (cause: the caller's
 * reason) when the caller aborts, or an internal signal's own reason (session lost, closed).
 * Unlike `AbortSignal.any`, it leaves no listener behind once disposed.
 */
export function cancellation(options: {
  what: string;
  backend: string;
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  internal?: readonly AbortSignal[];
}): Cancellation {
  const controller = new AbortController();
  const detach: (() => void)[] = [];
  const dispose = () => {
    for (const undo of detach.splice(0)) undo();
  };
  const abort = (reason: unknown) => {
    dispose();
    controller.abort(reason);
  };
  const follow = (source: AbortSignal, reason: () => unknown) => {
    if (controller.signal.aborted) return;
    if (source.aborted) return abort(reason());
    const onAbort = () => abort(reason());
    source.addEventListener("abort", onAbort, { once: true });
    detach.push(() => source.removeEventListener("abort", onAbort));
  };
  const { what, backend, timeoutMs, signal } = options;
  for (const source of options.internal ?? []) follow(source, () => source.reason);
  if (signal) {
    follow(signal, () => new AbortedError(`${what} was cancelled`, { backend, cause: signal.reason }));
  }
  if (timeoutMs !== undefined && !controller.signal.aborted) {
    const timer = setTimeout(
      () => abort(new TimeoutError(`${what} timed out after ${timeoutMs} ms`, timeoutMs, { backend })),
      timeoutMs,
    );
    detach.push(() => clearTimeout(timer));
  }
  return { signal: controller.signal, dispose };
}
