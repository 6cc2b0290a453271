/**
 * The one way Baton waits for something with an `AbortSignal`: settle on the event, or
 * reject with `signal.reason` as soon as it aborts, and in every case remove the abort
 * listener and stop the wait exactly once. Drivers and the core build their waits on it
 * instead of hand-rolling the promise, the listener and the clean-up each time.
 *
 * @module
 */

/** The actions waiting on each signal, behind its one listener. */
const fans = new WeakMap<AbortSignal, { readonly actions: Set<() => void>; readonly listener: () => void }>();

/** Long-lived internal signals whose one listener stays when their last action detaches. */
const kept = new WeakSet<AbortSignal>();

/**
 * Keeps the shared listener on `signal` (a coordinator's close, a session's loss) once it
 * is added, instead of removing it with the last action and adding it again with the next:
 * every wait of a coordinator follows its close signal, one at a time in a loop. Only for
 * internal signals that live as long as their owner (one idle listener each).
 * @internal
 */
export function keepListening(signal: AbortSignal): void {
  kept.add(signal);
}

/**
 * A cancellation without an `AbortSignal` (whose construction costs microseconds on Node
 * 20): whether and why it was cancelled, and a subscription. {@link Cancellation} of
 * cancel.ts is one; {@link watchSignal} makes one of a signal.
 */
export interface CancelWatch {
  readonly aborted: boolean;
  readonly reason: unknown;
  /**
   * Runs `action` once when cancelled (not when it already is: check `aborted` first);
   * returns how to detach.
   */
  onAbort(action: () => void): () => void;
}

/** A signal as a {@link CancelWatch}. */
export function watchSignal(signal: AbortSignal): CancelWatch {
  return {
    get aborted() {
      return signal.aborted;
    },
    get reason() {
      return signal.reason;
    },
    onAbort: (action) => onAbort(signal, action),
  };
}

/**
 * Runs every action of `actions` (a snapshot: one that adds or removes actions does not
 * change this run), each once, in order. One that throws does not keep the others from
 * running: its error is rethrown asynchronously, as an event listener's would be.
 */
export function runEach(actions: Iterable<() => void>): void {
  for (const run of [...actions]) {
    try {
      run();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

/**
 * Runs `action` when `signal` (not yet aborted) aborts, through one shared listener per
 * signal: a caller may pass one signal to thousands of acquisitions, and a listener each
 * would cost more and make Node print a `MaxListenersExceededWarning` past ten. Returns
 * how to detach; the listener goes with the last action. Actions run in the order they
 * were added, each once; one that throws does not keep the others from running (its error
 * is rethrown asynchronously, as an event listener's would be).
 */
function subscribe(signal: AbortSignal, action: () => void): () => void {
  let fan = fans.get(signal);
  if (!fan) {
    const actions = new Set<() => void>();
    const listener = () => {
      fans.delete(signal);
      runEach(actions);
      actions.clear();
    };
    fan = { actions, listener };
    fans.set(signal, fan);
    signal.addEventListener("abort", listener, { once: true });
  }
  const { actions, listener } = fan;
  // A wrapper, so the same function added twice is two subscriptions, as with listeners.
  const entry = () => action();
  actions.add(entry);
  return () => {
    if (!actions.delete(entry) || actions.size > 0 || kept.has(signal) || fans.get(signal)?.actions !== actions) {
      return;
    }
    fans.delete(signal);
    signal.removeEventListener("abort", listener);
  };
}

/**
 * Starts a wait with `start(resolve, reject)`, which returns how to stop it (remove a
 * waiter from a set, clear a timer, close a watch) or nothing. The promise settles with
 * the first of `resolve`, `reject` or `signal` aborting (then with `signal.reason`); after
 * that the stop function has run and the listener is gone, and later calls are ignored.
 * An already-aborted signal rejects without starting.
 */
export function abortable<T>(
  signal: AbortSignal | undefined,
  start: (resolve: (value: T) => void, reject: (error: unknown) => void) => (() => unknown) | undefined,
): Promise<T> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let stop: (() => unknown) | undefined;
    let detach: (() => unknown) | undefined;
    const finish = (settle: () => void) => {
      if (settled) return;
      settled = true;
      detach?.();
      stop?.();
      settle();
    };
    if (signal) detach = subscribe(signal, () => finish(() => reject(signal.reason)));
    stop = start(
      (value) => finish(() => resolve(value)),
      (error) => finish(() => reject(error)),
    );
    // `start` may have settled synchronously, before `stop` was known.
    if (settled) stop?.();
  });
}

/**
 * Resolves after `ms`, or rejects with `signal.reason` when it aborts first. `unref`: the
 * timer does not keep the process alive (background retries).
 */
export function sleep(ms: number, signal?: AbortSignal, options: { unref?: boolean } = {}): Promise<void> {
  return abortable<void>(signal, (resolve) => {
    const timer = setTimeout(resolve, ms);
    if (options.unref) timer.unref();
    return () => clearTimeout(timer);
  });
}

/**
 * Settles like `promise`, or rejects with `signal.reason` as soon as `signal` aborts (the
 * promise keeps running; its outcome is then ignored).
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) promise.catch(() => {});
  return abortable<T>(signal, (resolve, reject) => {
    promise.then(resolve, reject);
    return undefined;
  });
}

/**
 * Runs `action` once when `signal` aborts: at once if it already has, else on its event.
 * Returns how to detach (a no-op once `action` ran); `until` aborting detaches too. For
 * work that must react to a cancel without settling on it (ask a server to cancel a wait,
 * close a watch, end a stream), where {@link abortable} does not fit.
 */
export function onAbort(signal: AbortSignal, action: () => void, until?: AbortSignal): () => void {
  if (signal.aborted) {
    action();
    return () => {};
  }
  if (until?.aborted) return () => {};
  const detach = subscribe(signal, () => {
    untilDetach?.();
    action();
  });
  const untilDetach = until ? subscribe(until, detach) : undefined;
  return () => {
    detach();
    untilDetach?.();
  };
}

/**
 * Settles like `promise`, or rejects after `ms` with an error saying so (the promise keeps
 * running; its outcome is then ignored). The timer does not keep the process alive.
 */
export function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  promise.catch(() => {});
  return abortable<T>(undefined, (resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    timer.unref();
    promise.then(resolve, reject);
    return () => clearTimeout(timer);
  });
}

/**
 * Waits for `promise`, but at most `ms`: then resolves with `undefined` and stops waiting
 * (the promise keeps running). A rejection before that rejects. For best-effort clean-up
 * (withdrawing a queue key) that must not hold up the caller for long.
 */
export function atMost<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  return abortable<T | undefined>(undefined, (resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
    promise.then(resolve, reject);
    return () => clearTimeout(timer);
  });
}

/**
 * Settles like `promise`, but no later than `graceMs` after `signal` aborts (then with its
 * reason): for an operation that must clean up after a cancel (withdraw a waiter) yet
 * cannot be trusted to end. A value it resolves with after that is handed to `late`.
 */
export function graceAfterAbort<T>(
  promise: Promise<T>,
  signal: AbortSignal | CancelWatch,
  graceMs: number,
  late: (value: T) => void,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let abandoned = false;
    const grace = () => {
      timer = setTimeout(() => {
        abandoned = true;
        reject(signal.reason);
      }, graceMs);
    };
    let detach: () => void = () => {};
    if (signal instanceof AbortSignal) detach = onAbort(signal, grace);
    else if (signal.aborted) grace();
    else detach = signal.onAbort(grace);
    const settle = () => {
      detach();
      clearTimeout(timer);
    };
    promise.then(
      (value) => {
        settle();
        if (abandoned) late(value);
        else resolve(value);
      },
      (error: unknown) => {
        settle();
        reject(error);
      },
    );
  });
}

/**
 * A driver's stop for one acquisition: the caller's cancellation or the session's end.
 * `aborted` and `reason` read the two directly; `signal` (the two linked, by {@link linked})
 * is made only when a wait or a retry needs an AbortSignal, so an acquisition granted in its
 * first round trip builds none. `callerSignal` makes the caller's side as a signal (the
 * core's request builds its own lazily too).
 */
export class LazyStop {
  readonly #callerSignal: () => AbortSignal;
  readonly #caller: { readonly aborted: boolean; readonly reason: unknown };
  readonly #ended: AbortSignal;
  #linked: { readonly signal: AbortSignal; readonly dispose: () => void } | null = null;

  constructor(
    callerSignal: () => AbortSignal,
    caller: { readonly aborted: boolean; readonly reason: unknown },
    ended: AbortSignal,
  ) {
    this.#callerSignal = callerSignal;
    this.#caller = caller;
    this.#ended = ended;
  }

  get aborted(): boolean {
    return this.#linked ? this.#linked.signal.aborted : this.#caller.aborted || this.#ended.aborted;
  }

  get reason(): unknown {
    if (this.#linked) return this.#linked.signal.reason;
    return this.#caller.aborted ? this.#caller.reason : this.#ended.reason;
  }

  /**
   * Aborts when either does. Not AbortSignal.any: the session's signal would keep every
   * acquisition's composite signal for the session's life (Node's kDependantSignals), 45
   * bytes a grant in the soak.
   */
  get signal(): AbortSignal {
    this.#linked ??= linked([this.#callerSignal(), this.#ended]);
    return this.#linked.signal;
  }

  /** Detaches the linked signal, if one was made. */
  dispose(): void {
    this.#linked?.dispose();
  }
}

/**
 * A signal that aborts when any of `signals` does (with its reason), and a `dispose` that
 * detaches from all of them (the signal then never aborts). Once it aborted, it holds no
 * listener on the others.
 */
export function linked(signals: readonly AbortSignal[]): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const detach = signals.map((source) => onAbort(source, () => controller.abort(source.reason), controller.signal));
  return {
    signal: controller.signal,
    dispose: () => {
      for (const undo of detach) undo();
    },
  };
}
