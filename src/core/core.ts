import { keepListening } from "./abortable.js";
import type { Driver } from "./driver.js";
import { BackendUnavailableError, BatonError, ClosedError } from "./errors.js";
import type { Guarantees } from "./guarantees.js";
import { LiveSession } from "./session.js";
import type { RecordTextCache } from "./takeover.js";
import { Telemetry } from "./telemetry.js";

/**
 * What every recipe (lock, semaphore, group, election, partitioner) shares: the driver,
 * identity, the current session and the closed state.
 * @internal
 */
export class CoordinatorCore {
  readonly backend: string;
  readonly guarantees: Guarantees;
  readonly driver: Driver;
  readonly memberId: string;
  readonly namespace: string;
  readonly ttlMs: number;
  /** Metrics and the debug log: every recipe reports through this one object. */
  readonly telemetry: Telemetry;
  readonly #closed = new AbortController();
  #session: LiveSession | null = null;
  #opening: Promise<LiveSession> | null = null;
  /** Held grants tracked for takeover: `close()` deletes their records (a clean end). */
  readonly claimed = new Set<{ dropRecord(): Promise<void> }>();
  /** The plain takeover record text of the current session, made once (takeover.ts). */
  readonly plainRecord: RecordTextCache = { memberId: "", sessionId: "", text: "" };
  /** Acquisitions under way (not the synchronous ones): `close()` lets them end first. */
  readonly acquiring = new Set<Promise<unknown>>();

  constructor(options: {
    backend: string;
    guarantees: Guarantees;
    driver: Driver;
    memberId: string;
    namespace: string;
    ttlMs: number;
    telemetry?: Telemetry | undefined;
  }) {
    this.backend = options.backend;
    this.guarantees = options.guarantees;
    this.driver = options.driver;
    this.memberId = options.memberId;
    this.namespace = options.namespace;
    this.ttlMs = options.ttlMs;
    this.telemetry = options.telemetry ?? Telemetry.off(options.backend, options.namespace);
    // Every wait follows it (cancel.ts), one after another: one listener, kept.
    keepListening(this.#closed.signal);
  }

  /** Aborts (reason: {@link ClosedError}) when the coordinator closes. */
  get closedSignal(): AbortSignal {
    return this.#closed.signal;
  }

  get closed(): boolean {
    return this.#closed.signal.aborted;
  }

  /** The current session, if one is open and not lost. */
  get currentSession(): LiveSession | null {
    return this.#session;
  }

  assertOpen(): void {
    if (this.closed) throw new ClosedError("the coordinator is closed; connect() again", { backend: this.backend });
  }

  /**
   * The live session, opening a new one when there is none or the last one was lost: this
   * is how a coordinator recovers by itself after a lease expired or a backend restarted.
   */
  liveSession(): Promise<LiveSession> {
    this.assertOpen();
    if (this.#session && !this.#session.lost) return Promise.resolve(this.#session);
    this.#opening ??= this.#open().finally(() => {
      this.#opening = null;
    });
    return this.#opening;
  }

  async #open(): Promise<LiveSession> {
    let session: LiveSession | null = null;
    try {
      const driverSession = await this.driver.openSession({
        onLost: (error) => session?.lose(error),
      });
      session = new LiveSession(driverSession, this.ttlMs, this.telemetry);
    } catch (error) {
      throw this.translate(error);
    }
    const opened = session;
    if (this.closed) {
      await opened.close(new ClosedError("the coordinator closed while its session was opening"));
      this.assertOpen();
    }
    opened.signal.addEventListener(
      "abort",
      () => {
        if (this.#session === opened) this.#session = null;
      },
      { once: true },
    );
    this.#session = opened;
    return opened;
  }

  /** Closes the session and the driver. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    const error = new ClosedError("the coordinator was closed", { backend: this.backend });
    this.#closed.abort(error);
    const opening = this.#opening?.catch(() => null);
    const session = this.#session ?? (await opening) ?? null;
    this.#session = null;
    // The close aborted every acquisition under way: each withdraws its grant, and the
    // record a racing grant wrote with it, while the session can still do that (freed by
    // the session's close instead, the record would stay: a false takeover); one that won
    // the race ends claimed, and goes below. Bounded: a backend that does not answer
    // cannot hold the close.
    if (this.acquiring.size > 0) {
      await this.bounded(Promise.allSettled([...this.acquiring]), this.ttlMs).catch(() => {});
    }
    // A close is a clean end: a tracked grant's record is deleted before its session frees
    // it, not left as a takeover; its handle is then lost with the session, as any other.
    await Promise.allSettled([...this.claimed].map((handle) => handle.dropRecord()));
    await session?.close(error);
    try {
      await this.driver.close();
    } catch {
      // Nothing useful to do: connections are gone either way.
    }
  }

  /** Makes any error a Baton error, keeping Baton errors as they are. */
  translate(error: unknown): BatonError {
    if (!(error instanceof BatonError) || error.code === "BACKEND_UNAVAILABLE") this.telemetry.backendError(error);
    if (error instanceof BatonError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new BackendUnavailableError(`${this.backend} backend failed: ${message}`, {
      backend: this.backend,
      cause: error,
    });
  }

  /** Rejects when `promise` has not settled within `ms`. */
  bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
    // One promise (not a race of two and a finally): every release goes through here.
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new BackendUnavailableError(`${this.backend} backend did not answer within ${ms} ms`)),
        ms,
      );
      timer.unref();
      // Promise.resolve: a registered driver's method that returned a plain value still counts.
      Promise.resolve(promise).then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }
}
