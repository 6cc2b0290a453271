import { ClosedError } from "../../core/errors.js";
import type { ConnectionBudget } from "../postgres/slots.js";
import { type CreateConnection, MyConnection } from "./connection.js";
import type { Control } from "./control.js";
import { Lane } from "./lane.js";
import type { MysqlSettings } from "./options.js";

/** Lanes holding nothing are closed after this long unused. */
const IDLE_LANE_MS = 3000;

/** What a session's lanes need. */
export interface LaneContext {
  readonly create: CreateConnection;
  readonly settings: MysqlSettings;
  readonly control: Control;
  readonly budget: ConnectionBudget;
  readonly ttlMs: number;
}

/**
 * The lanes (lock-holding connections) of one session, within the coordinator's
 * connection budget: picking one for a statement, opening one (registered in `lanes` so an
 * expired session's connections can be killed), and closing those idle for a while.
 */
export class LanePool {
  readonly #c: LaneContext;
  readonly #sessionId: string;
  readonly #lanes = new Set<Lane>();
  readonly #reaper: NodeJS.Timeout;
  #closed = false;

  constructor(context: LaneContext, sessionId: string) {
    this.#c = context;
    this.#sessionId = sessionId;
    this.#reaper = setInterval(() => this.#reap(), 1000);
    this.#reaper.unref();
  }

  /** Every open lane. */
  get all(): Lane[] {
    return [...this.#lanes];
  }

  /** Stops opening lanes and returns the open ones (for the session to close). */
  close(): Lane[] {
    this.#closed = true;
    clearInterval(this.#reaper);
    return this.all;
  }

  /** Picks a lane matching `pred` and reserves it (synchronously) for grant `id`. */
  reserve(pred: (lane: Lane) => boolean, id: string): Lane | null {
    let best: Lane | null = null;
    for (const lane of this.#lanes) {
      // Prefer lanes that already hold grants: keep empty ones free for waits.
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
   * the budget, or (budget exhausted) the first to match once something changes.
   */
  async obtain(pred: (lane: Lane) => boolean, id: string, signal: AbortSignal): Promise<Lane> {
    for (;;) {
      if (signal.aborted) throw signal.reason;
      this.#assertOpen();
      const found = this.reserve(pred, id);
      if (found) return found;
      if (this.#c.budget.take()) {
        const lane = await this.#openLane();
        lane.reservations++;
        lane.ids.add(id);
        return lane;
      }
      await this.#c.budget.changed.wait(signal);
    }
  }

  async #openLane(): Promise<Lane> {
    let connection: MyConnection;
    try {
      connection = await MyConnection.open(this.#c.create, this.#c.settings.client, this.#c.ttlMs);
    } catch (error) {
      this.#c.budget.give();
      throw error;
    }
    connection.onDeath(() => this.#c.budget.give());
    const lane = new Lane(connection, this.#c.control, () => this.#c.budget.changed.notify());
    connection.onDeath(() => this.#lanes.delete(lane));
    try {
      await connection.query(
        `INSERT INTO ${this.#c.settings.prefix}lanes (conn, session_id) VALUES (?, ?) ON DUPLICATE KEY UPDATE session_id = VALUES(session_id)`,
        [connection.id, this.#sessionId],
        this.#c.control.timeoutMs,
      );
    } catch (error) {
      connection.destroy(error as Error);
      throw error;
    }
    if (this.#closed) {
      await lane.close();
      this.#assertOpen();
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

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(`session ${this.#sessionId} is closed`, { backend: "mysql" });
  }
}
