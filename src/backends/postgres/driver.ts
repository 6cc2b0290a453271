/**
 * `postgres://user:password@host:port/database[?schema=baton&maxConnections=8]`: locks on
 * PostgreSQL's own lock manager (session advisory locks on 64-bit keys, waiting
 * server-side), fencing counters and records in tables of the backend's own schema,
 * watches by LISTEN/NOTIFY. A crashed client's locks are freed when its connection drops.
 * Single primary: a failover loses every lock (see docs/backends/postgres.md).
 *
 * Connections per coordinator: one control connection (heartbeats, records, LISTEN,
 * inspection, cancelling waits; never holds a lock) plus lanes that hold locks, at most
 * `maxConnections` in all. See session.ts and lane.ts for how lanes are used.
 *
 * @module
 */
import type { Driver, DriverCells, DriverContext, DriverSession, RecordEntry } from "../../core/driver.js";
import { BackendUnavailableError } from "../../core/errors.js";
import { postgresCells } from "./cells.js";
import type { ClientClass } from "./connection.js";
import { Control, toEntry } from "./control.js";
import { translate } from "./errors.js";
import { BACKEND } from "./options.js";
import { inspect, namespaces } from "./inspect.js";
import { parseSettings } from "./options.js";
import { quoteIdent } from "./schema.js";
import { PgSession, type SessionContext } from "./session.js";
import { ConnectionBudget } from "../sql/budget.js";

/** Creates a postgres driver: connects, migrates the schema if needed, LISTENs. */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const settings = parseSettings(context);
  let Client: ClientClass;
  try {
    const pg = await import("pg");
    Client = (pg.default?.Client ?? (pg as unknown as { Client: ClientClass }).Client) as ClientClass;
  } catch (cause) {
    throw new BackendUnavailableError("the postgres backend needs the pg package: npm install pg", {
      backend: BACKEND,
      cause,
    });
  }
  const control = new Control(Client, settings, context.ttlMs, context.namespace);
  try {
    await control.connection();
  } catch (error) {
    await control.close();
    throw translate(error, `connecting to PostgreSQL at ${settings.target}`);
  }
  const shared: SessionContext = {
    Client,
    settings,
    control,
    budget: new ConnectionBudget(settings.maxConnections - 1),
    namespace: context.namespace,
    memberId: context.memberId,
    ttlMs: context.ttlMs,
  };
  return new PostgresDriver(shared);
}

class PostgresDriver implements Driver {
  readonly #c: SessionContext;
  readonly #q: string;
  readonly cells: DriverCells;
  /**
   * The tracked grant (lock_acquire_tracked, migrations.ts v4 and v5) writes the takeover
   * record; the tracked release (session.ts) turns it into a tombstone, each in its own statement.
   */
  readonly nativeRecords = true;

  constructor(context: SessionContext) {
    this.#c = context;
    this.#q = quoteIdent(context.settings.schema);
    this.cells = postgresCells(context.control, context.settings.schema, context.namespace);
  }

  async openSession(hooks: Parameters<Driver["openSession"]>[0]): Promise<DriverSession> {
    try {
      return await PgSession.open(this.#c, hooks);
    } catch (error) {
      throw translate(error, "opening a session");
    }
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    try {
      const result = await this.#c.control.query<{
        key: string;
        value: string;
        session_id: string;
        created_at: string;
      }>(
        `SELECT key, value, session_id, created_at FROM ${this.#q}.records
         WHERE namespace = $1 AND space = $2 ORDER BY created_at, key`,
        [this.#c.namespace, space],
      );
      return result.rows.map(toEntry);
    } catch (error) {
      throw translate(error, `listing ${space}`);
    }
  }

  async watchRecords(
    space: string,
    listener: Parameters<Driver["watchRecords"]>[1],
    signal: AbortSignal,
  ): Promise<RecordEntry[]> {
    try {
      return await this.#c.control.watch(space, listener, signal);
    } catch (error) {
      throw translate(error, `watching ${space}`);
    }
  }

  async namespaces(): Promise<string[]> {
    try {
      return await namespaces(this.#c.control, this.#c.settings.schema);
    } catch (error) {
      throw translate(error, "listing namespaces");
    }
  }

  async inspect(): ReturnType<Driver["inspect"]> {
    try {
      return await inspect(this.#c.control, this.#c.settings.schema, this.#c.namespace);
    } catch (error) {
      throw translate(error, "inspecting");
    }
  }

  /**
   * Marks the session revoked (its next heartbeat fails: heartbeat() renews only a session
   * that is not) and replies its row's `expires_at - now()`, which the last renewal set no
   * earlier than its client's own deadline. The update is ordered with heartbeats by the
   * row lock, so no renewal follows it.
   */
  async fenceSession(sessionId: string): Promise<number | null> {
    try {
      const result = await this.#c.control.query<{ left_ms: number }>(
        `UPDATE ${this.#q}.sessions SET revoked = true WHERE id = $1
         RETURNING greatest(0, ceil(extract(epoch FROM expires_at - now()) * 1000))::int AS left_ms`,
        [sessionId],
      );
      const row = result.rows[0];
      return row ? Number(row.left_ms) : null;
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  /**
   * Terminates every connection of the session (`pg_terminate_backend`, waiting for each
   * to exit, so its advisory locks are free when this resolves) and deletes its row (its
   * records go with it, and its next heartbeat reports the session expired).
   */
  async revokeSession(sessionId: string): Promise<void> {
    const waitMs = Math.max(100, Math.floor(this.#c.control.timeoutMs / 2));
    try {
      await this.#c.control.query(
        `SELECT pg_terminate_backend(pid, $2::int) FROM ${this.#q}.backends WHERE session_id = $1`,
        [sessionId, waitMs],
      );
      await this.#c.control.query(`DELETE FROM ${this.#q}.sessions WHERE id = $1`, [sessionId]);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  async close(): Promise<void> {
    await this.#c.control.close();
  }
}
