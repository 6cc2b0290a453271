import { performance } from "node:perf_hooks";
import type { DriverSession } from "./driver.js";
import { BatonError, SessionExpiredError } from "./errors.js";
import { Telemetry } from "./telemetry.js";

/**
 * A coordinator's session (lease). Everything acquired through it is bound to it: when the
 * session is lost, `signal` aborts (reason: a {@link SessionExpiredError}) and so does the
 * signal of every lock, permit, membership and leadership held through it.
 */
export interface Session {
  /** Backend-assigned id (etcd lease id, database connection id, ...). */
  readonly id: string;
  /** Lease time-to-live, in milliseconds. */
  readonly ttlMs: number;
  /** Aborts when the session is lost or closed. Never aborts otherwise. */
  readonly signal: AbortSignal;
}

/** Something bound to a session that must be told, synchronously, when it is lost. @internal */
export interface Dependent {
  lose(error: Error): void;
}

/**
 * Keeps a driver session alive and decides, from a conservative local deadline, when it
 * must be presumed lost.
 *
 * Why the deadline is safe: the backend starts a lease's new TTL no earlier than it
 * receives a keep-alive, so the lease cannot expire before `sentAt + ttl`. The local
 * deadline is `sentAt + ttl - margin` with `sentAt` read before sending, so the signals fire
 * before the backend could expire the lease and grant its locks to anyone else, with
 * `margin` left for timer lateness and clock-rate differences.
 * @internal
 */
export class LiveSession implements Session {
  readonly id: string;
  readonly ttlMs: number;
  readonly driver: DriverSession;
  readonly dependents = new Set<Dependent>();
  readonly #controller = new AbortController();
  #deadlineTimer: NodeJS.Timeout | null = null;
  #renewTimer: NodeJS.Timeout | null = null;
  #suspended = false;
  #ended = false;
  readonly #telemetry: Telemetry;

  constructor(driver: DriverSession, ttlMs: number, telemetry: Telemetry = Telemetry.off("", "")) {
    this.id = driver.id;
    this.#telemetry = telemetry;
    this.ttlMs = ttlMs;
    this.driver = driver;
    if (driver.keepAlive) {
      this.#armDeadline(performance.now());
      this.#scheduleRenewal(this.renewIntervalMs);
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  get lost(): boolean {
    return this.#controller.signal.aborted;
  }

  /** How often the lease is renewed: a third of the TTL, like etcd's concurrency.Session. */
  get renewIntervalMs(): number {
    return Math.max(100, Math.floor(this.ttlMs / 3));
  }

  /** Time left after the last acknowledged renewal before the session is presumed lost. */
  get marginMs(): number {
    return Math.max(100, Math.floor(this.ttlMs / 5));
  }

  /** Declares the session lost: aborts its signal, then every dependent's, synchronously. */
  lose(error: Error): void {
    if (this.#controller.signal.aborted) return;
    this.#stopTimers();
    this.#telemetry.sessionLost(this.id, error);
    this.#controller.abort(error);
    for (const dependent of [...this.dependents]) dependent.lose(error);
    this.dependents.clear();
    // The backend may still believe in the session (we only stopped hearing from it):
    // ending it explicitly lets others in sooner. Failures change nothing for us.
    if (!this.#ended) {
      this.#ended = true;
      this.driver.close().catch(() => {});
    }
  }

  /** Closes the session: frees everything it holds at the backend. Never throws. */
  async close(error: Error): Promise<void> {
    this.#stopTimers();
    if (!this.#controller.signal.aborted) {
      this.#controller.abort(error);
      for (const dependent of [...this.dependents]) dependent.lose(error);
      this.dependents.clear();
    }
    if (this.#ended) return;
    this.#ended = true;
    try {
      await this.driver.close();
    } catch {
      // Unreachable backend: the lease expires on its own within the TTL.
    }
  }

  /** Test hook: stop renewing, as if cut off from the backend. */
  suspendKeepAlive(): void {
    this.#suspended = true;
  }

  #armDeadline(sentAt: number): void {
    const delay = sentAt + this.ttlMs - this.marginMs - performance.now();
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(
      () => {
        this.lose(
          new SessionExpiredError(
            `session ${this.id} had no acknowledged keep-alive for ${this.ttlMs - this.marginMs} ms (TTL ${this.ttlMs} ms minus a ${this.marginMs} ms safety margin); presumed lost`,
          ),
        );
      },
      Math.max(0, delay),
    );
    this.#deadlineTimer.unref();
  }

  #scheduleRenewal(delayMs: number): void {
    // Unref'd: renewal alone must not keep a process alive that forgot close() (it would
    // never exit). What the process is doing keeps it alive: an in-flight wait holds a
    // ref'd handle (see cancel.ts), and so does any work the application still has. When
    // the process exits, its lease expires within the TTL (at once on backends that see
    // the process die).
    this.#renewTimer = setTimeout(() => void this.#renew(), delayMs);
    this.#renewTimer.unref();
  }

  async #renew(): Promise<void> {
    if (this.lost || this.#suspended) return;
    const sentAt = performance.now();
    try {
      await this.driver.keepAlive?.();
      if (this.lost) return;
      this.#telemetry.renewal(this.id);
      this.#armDeadline(sentAt);
      this.#scheduleRenewal(this.renewIntervalMs);
    } catch (error) {
      if (this.lost) return;
      this.#telemetry.renewal(this.id, error);
      if (error instanceof SessionExpiredError) return this.lose(error);
      if (error instanceof BatonError && error.code === "SESSION_EXPIRED") return this.lose(error);
      // Transient: retry sooner; the deadline timer decides when to give up.
      this.#scheduleRenewal(Math.max(50, Math.floor(this.renewIntervalMs / 4)));
    }
  }

  #stopTimers(): void {
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    this.#deadlineTimer = null;
    this.#renewTimer = null;
  }
}
