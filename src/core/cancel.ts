import { type CancelWatch, onAbort, runEach } from "./abortable.js";
import { AbortError, TimeoutError } from "./errors.js";
import type { Dependent, LiveSession } from "./session.js";
import { holdProcess } from "./keep-alive.js";

/** A signal combining a caller's signal, a timeout and internal stop signals. */
export interface Cancellation extends CancelWatch {
  /** Whether it was cancelled; cheap (no signal is made for it). */
  readonly aborted: boolean;
  /** Why it was cancelled: a Baton error, or an internal signal's reason. */
  readonly reason: unknown;
  /** The combined signal, made on first use: most acquisitions never wait, so never need one. */
  readonly signal: AbortSignal;
  /**
   * Runs `action` once when it is cancelled, after the signal's listeners (if `signal` was
   * read); returns how to detach. A wait on it without `signal` (the memory backend's): no
   * `AbortController`, no event listener. Like reading `signal`, it keeps the process alive
   * until disposed. Nothing runs for a cancellation that already happened: check `aborted`.
   */
  onAbort(action: () => void): () => void;
  /** Detaches from every source and clears the timer. Call when the operation settles. */
  dispose(): void;
}

/** What {@link cancellation} combines. */
export interface CancellationOptions {
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
}

/**
 * Combines cancellation sources into one signal whose `reason` is a Baton error: a
 * {@link TimeoutError} when `timeoutMs` elapses, an {@link AbortError} (cause: the caller's
 * reason) when the caller aborts, or an internal source's own reason (session lost, closed).
 * Unlike `AbortSignal.any`, it leaves no listener behind once disposed, and it builds no
 * `AbortController` unless someone reads `signal` (the uncontended path never does).
 */
export function cancellation(options: CancellationOptions): Cancellation {
  return new Combined(options);
}

/**
 * A class, not an object literal: a literal with getters costs V8 about ten times a plain
 * one, and one is made per wait. It is the session's dependent itself (no object for that).
 */
class Combined implements Cancellation, Dependent {
  readonly #what: string;
  readonly #backend: string;
  readonly #timeoutMs: number | undefined;
  readonly #reportedTimeoutMs: number | undefined;
  #session: LiveSession | undefined = undefined;
  #controller: AbortController | null = null;
  #aborted = false;
  #reason: unknown = undefined;
  #disposed = false;
  /** Detaches from the followed signals. */
  #detach: (() => void)[] | null = null;
  #timer: NodeJS.Timeout | undefined = undefined;
  /** Ends the process hold of a wait on it (`signal` read or `onAbort`). */
  #unhold: (() => void) | null = null;
  /** Actions of onAbort(). */
  #actions: Set<() => void> | null = null;

  constructor(options: CancellationOptions) {
    const { what, backend, timeoutMs, signal, session } = options;
    this.#what = what;
    this.#backend = backend;
    this.#timeoutMs = timeoutMs;
    this.#reportedTimeoutMs = options.reportedTimeoutMs;
    if (session) {
      if (session.lost) this.#abort(session.signal.reason);
      else {
        this.#session = session;
        session.dependents.add(this);
      }
    }
    for (const source of options.internal ?? []) this.#follow(source, () => source.reason);
    if (signal) {
      this.#follow(signal, () => new AbortError(`${what} was cancelled`, { backend, cause: signal.reason }));
    }
    if (timeoutMs !== undefined && !this.#aborted) this.#timer = setTimeout(() => this.#timedOut(), timeoutMs);
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
      else this.#hold();
    }
    return this.#controller.signal;
  }

  onAbort(action: () => void): () => void {
    if (this.#aborted || this.#disposed) return () => {};
    this.#hold();
    const entry = () => action();
    this.#actions ??= new Set();
    this.#actions.add(entry);
    return () => {
      this.#actions?.delete(entry);
    };
  }

  /** @internal The session was lost (as its dependent). */
  lose(error: Error): void {
    this.#abort(error);
  }

  dispose(): void {
    this.#disposed = true;
    if (this.#detach) for (const undo of this.#detach.splice(0)) undo();
    if (this.#session) {
      this.#session.dependents.delete(this);
      this.#session = undefined;
    }
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#unhold) {
      this.#unhold();
      this.#unhold = null;
    }
  }

  // Someone reads `signal` or subscribes only to wait on it: that wait keeps the process
  // alive, as the background timers (session renewal, lease expiry) do not.
  #hold(): void {
    if (this.#unhold || this.#disposed) return;
    this.#unhold = holdProcess();
  }

  #follow(source: AbortSignal, why: () => unknown): void {
    if (this.#aborted) return;
    // onAbort shares one listener per signal: one caller signal may cancel thousands.
    (this.#detach ??= []).push(onAbort(source, () => this.#abort(why())));
  }

  #timedOut(): void {
    const reported = this.#reportedTimeoutMs ?? (this.#timeoutMs as number);
    this.#abort(new TimeoutError(`${this.#what} timed out after ${reported} ms`, reported, { backend: this.#backend }));
  }

  #abort(why: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = why;
    this.dispose();
    this.#controller?.abort(why);
    const actions = this.#actions;
    if (!actions) return;
    this.#actions = null;
    runEach(actions);
  }
}
