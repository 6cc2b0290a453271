/**
 * The lanes (lock-holding connections) of one SQL session, within the coordinator's
 * connection budget: the part PostgreSQL and MySQL share. Each backend says how to open a
 * connection, wrap it in its lane and register that lane on the server.
 *
 * @module
 */
import { raceSignal } from "../../core/abortable.js";
import { ClosedError } from "../../core/errors.js";
import type { ConnectionBudget } from "./budget.js";

/** Lanes holding nothing are closed after this long unused. */
const IDLE_LANE_MS = 3000;

/** What the pool reads and reserves on a backend's lane. */
export interface PoolLane {
  readonly grants: { readonly size: number };
  /** Grant ids reserved or held on this lane (one grant of a name per lane). */
  readonly ids: Set<string>;
  /** Acquisitions that picked this lane and have not settled yet. */
  reservations: number;
  readonly empty: boolean;
  readonly idleSince: number;
  close(): Promise<void>;
}

/** What the pool needs of a lane's connection. */
export interface PoolConnection {
  onDeath(listener: () => void): unknown;
  destroy(error: Error): void;
}

/** How a backend makes its lanes. */
export interface LaneFactory<C extends PoolConnection, L extends PoolLane> {
  readonly backend: string;
  readonly budget: ConnectionBudget;
  /** Opens a connection for a new lane; when it rejects, nothing is left open. */
  connect(): Promise<C>;
  /** The lane over `connection`; it calls `changed` when waiters for a lane may look again. */
  lane(connection: C, changed: () => void): L;
  /** Registers the lane on the server for the session; a rejection drops the connection. */
  setup(lane: L): Promise<void>;
}

/**
 * The lanes of one session: picking one for a statement, opening one within the budget
 * (registered on the server so that an expired session's connections can be ended), and
 * closing those idle for a while.
 */
export class LanePool<C extends PoolConnection, L extends PoolLane> {
  readonly #f: LaneFactory<C, L>;
  readonly #sessionId: string;
  readonly #lanes = new Set<L>();
  readonly #reaper: NodeJS.Timeout;
  #closed = false;

  constructor(factory: LaneFactory<C, L>, sessionId: string) {
    this.#f = factory;
    this.#sessionId = sessionId;
    this.#reaper = setInterval(() => this.#reap(), 1000);
    this.#reaper.unref();
  }

  /** Every open lane. */
  get all(): L[] {
    return [...this.#lanes];
  }

  /** Stops opening lanes and returns the open ones (for the session to close). */
  close(): L[] {
    this.#closed = true;
    clearInterval(this.#reaper);
    return this.all;
  }

  /** Picks a lane matching `pred` and reserves it (synchronously) for grant `id`. */
  reserve(pred: (lane: L) => boolean, id: string): L | null {
    let best: L | null = null;
    for (const lane of this.#lanes) {
      // Prefer lanes that already hold grants: keep empty ones free for blocking waits.
      if (pred(lane) && (!best || lane.grants.size > best.grants.size)) best = lane;
    }
    if (best) {
      best.reservations++;
      best.ids.add(id);
    }
    return best;
  }

  /**
   * A lane matching `pred`, reserved for `id`: an existing one, a new connection within
   * the budget, or (budget exhausted) the first to match once something changes, FIFO.
   * Rejects with `signal.reason` when it aborts first, also while a new connection is
   * opening (which can take the whole connect timeout through a cut): that lane, once
   * open, stays in the pool unreserved.
   */
  async obtain(pred: (lane: L) => boolean, id: string, signal: AbortSignal): Promise<L> {
    for (;;) {
      if (signal.aborted) throw signal.reason;
      this.assertOpen();
      const found = this.reserve(pred, id);
      if (found) return found;
      const opened = await this.openOrNull(id, signal);
      if (opened) return opened;
      await this.#f.budget.changed.wait(signal);
    }
  }

  /**
   * {@link openReserved}, rejecting with `signal.reason` when it aborts first (the lane,
   * once open, then stays in the pool unreserved).
   */
  async openOrNull(id: string, signal: AbortSignal): Promise<L | null> {
    const opening = this.openReserved(id);
    try {
      return await raceSignal(opening, signal);
    } catch (error) {
      if (signal.aborted)
        opening.then(
          (lane) => lane && this.#unreserve(lane, id),
          () => {},
        );
      throw error;
    }
  }

  /** Gives back a reservation its caller no longer wants; waiters for a lane look again. */
  #unreserve(lane: L, id: string): void {
    lane.reservations--;
    lane.ids.delete(id);
    this.#f.budget.changed.notify();
  }

  /** A new lane reserved for `id`, or `null` when the budget has no connection left. */
  async openReserved(id: string): Promise<L | null> {
    if (!this.#f.budget.take()) return null;
    const lane = await this.#openLane();
    lane.reservations++;
    lane.ids.add(id);
    return lane;
  }

  /** Throws a `ClosedError` once the session closed. */
  assertOpen(): void {
    if (this.#closed) throw new ClosedError(`session ${this.#sessionId} is closed`, { backend: this.#f.backend });
  }

  async #openLane(): Promise<L> {
    const { budget } = this.#f;
    let connection: C;
    try {
      connection = await this.#f.connect();
    } catch (error) {
      budget.give();
      throw error;
    }
    connection.onDeath(() => budget.give());
    const lane = this.#f.lane(connection, () => budget.changed.notify());
    connection.onDeath(() => this.#lanes.delete(lane));
    try {
      await this.#f.setup(lane);
    } catch (error) {
      connection.destroy(error as Error);
      throw error;
    }
    if (this.#closed) {
      await lane.close();
      this.assertOpen();
    }
    this.#lanes.add(lane);
    return lane;
  }

  /** Closes lanes that held nothing for a while, giving their connection back. */
  #reap(): void {
    const cutoff = Date.now() - IDLE_LANE_MS;
    for (const lane of this.#lanes) {
      if (lane.empty && lane.idleSince < cutoff) {
        this.#lanes.delete(lane);
        void lane.close();
      }
    }
  }
}
