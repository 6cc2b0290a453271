/**
 * The connection budget the SQL backends (PostgreSQL, MySQL) share between a coordinator's
 * sessions, and the notifier their lane waits use.
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";

/** Wakes everyone waiting for "something changed" (a lane freed, a connection closed). */
export class Notifier {
  readonly #waiters = new Set<() => void>();

  /** Resolves at the next {@link notify}; rejects with `signal.reason` if it aborts first. */
  wait(signal: AbortSignal): Promise<void> {
    return abortable<void>(signal, (resolve) => {
      const done = () => resolve();
      this.#waiters.add(done);
      return () => this.#waiters.delete(done);
    });
  }

  /** Wakes the waiters in the order they started waiting (they then look again, FIFO). */
  notify(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const done of waiters) done();
  }
}

/**
 * The coordinator's connection budget: `maxConnections` minus the control connection.
 * `changed` wakes the waiters for a lane when a connection goes or a lane frees.
 */
export class ConnectionBudget {
  readonly limit: number;
  #used = 0;
  readonly changed = new Notifier();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Takes a slot if one is free. */
  take(): boolean {
    if (this.#used >= this.limit) return false;
    this.#used++;
    return true;
  }

  /** Gives a slot back (its connection closed) and wakes the waiters. */
  give(): void {
    this.#used--;
    this.changed.notify();
  }
}
