/**
 * `mysql://user:password@host:3306/database` (and `mariadb://`): locks on the server's
 * own lock manager (GET_LOCK holds each request's entry, waits happen server-side in
 * GET_LOCK on the entry ahead), queues, fencing counters, sessions and records in InnoDB
 * tables of the URL's database. A crashed client's locks are freed when its connection
 * drops. Single server: a failover loses every lock, and Galera is refused (see
 * docs/backends/mysql.md).
 *
 * Connections per coordinator: one control connection (heartbeats, records, cells,
 * inspection, interrupting waits; never holds a lock) plus lanes that hold locks, at most
 * `maxConnections` in all. See session.ts and lane.ts.
 *
 * @module
 */
import type { Driver, DriverCells, DriverContext, DriverSession, RecordEntry } from "../../core/driver.js";
import { BackendUnavailableError } from "../../core/errors.js";
import { ConnectionBudget } from "../sql/budget.js";
import { mysqlCells } from "./cells.js";
import { type CreateConnection, MyConnection } from "./connection.js";
import { Control } from "./control.js";
import { ConnectionLostError, translate } from "./errors.js";
import { BACKEND } from "./options.js";
import { fenceSession, inspect, namespaces, revokeSession } from "./inspect.js";
import { parseSettings } from "./options.js";
import { RecordWatches, listRecords } from "./records.js";
import { MySession, type SessionContext } from "./session.js";
import { TakeoverRecords } from "./takeover.js";

/** Creates a mysql driver: connects, refuses Galera, migrates the tables if needed. */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const settings = parseSettings(context);
  let create: CreateConnection;
  try {
    const mysql = await import("mysql2");
    create = (mysql.default?.createConnection ?? mysql.createConnection) as CreateConnection;
  } catch (cause) {
    throw new BackendUnavailableError("the mysql backend needs the mysql2 package: npm install mysql2", {
      backend: BACKEND,
      cause,
    });
  }
  const control = new Control(create, settings, context.ttlMs);
  try {
    await control.connection();
  } catch (error) {
    await control.close();
    const what = `connecting to MySQL at ${settings.target}`;
    // connect() rejects with the documented BackendUnavailableError itself, saying what it
    // was doing, also when the connection died under the set-up (a server that ended it).
    if (error instanceof ConnectionLostError) {
      throw new BackendUnavailableError(`${what}: ${error.message}`, { backend: BACKEND, cause: error });
    }
    throw translate(error, what);
  }
  return new MysqlDriver({
    create,
    settings,
    control,
    budget: new ConnectionBudget(settings.maxConnections - 1),
    namespace: context.namespace,
    memberId: context.memberId,
    ttlMs: context.ttlMs,
    records: new TakeoverRecords(control, settings.prefix, context.namespace),
  });
}

class MysqlDriver implements Driver {
  readonly #c: SessionContext;
  readonly #p: string;
  readonly #watches: RecordWatches;
  readonly cells: DriverCells;
  /**
   * The tracked grant and release procedures write and delete takeover records in the
   * grant's and the release's own call (procedures-v4.ts).
   */
  readonly nativeRecords = true;

  constructor(context: SessionContext) {
    this.#c = context;
    this.#p = context.settings.prefix;
    this.#watches = new RecordWatches(
      () => MyConnection.open(context.create, context.settings.client, context.ttlMs),
      this.#p,
      context.namespace,
    );
    this.cells = mysqlCells(context.control, this.#p, context.namespace);
  }

  async openSession(hooks: Parameters<Driver["openSession"]>[0]): Promise<DriverSession> {
    try {
      return await MySession.open(this.#c, hooks);
    } catch (error) {
      throw translate(error, "opening a session");
    }
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    try {
      return await listRecords(this.#c.control, this.#p, this.#c.namespace, space);
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
      return await this.#watches.watch(space, listener, signal);
    } catch (error) {
      throw translate(error, `watching ${space}`);
    }
  }

  async namespaces(): Promise<string[]> {
    try {
      return await namespaces(this.#c.control, this.#p);
    } catch (error) {
      throw translate(error, "listing namespaces");
    }
  }

  async inspect(): ReturnType<Driver["inspect"]> {
    try {
      return await inspect(this.#c.control, this.#p, this.#c.namespace);
    } catch (error) {
      throw translate(error, "inspecting");
    }
  }

  /**
   * Marks the session revoked so its heartbeats renew nothing (see `Driver.fenceSession`);
   * resolves with what is left of its lease.
   */
  async fenceSession(sessionId: string): Promise<number | null> {
    try {
      return await fenceSession(this.#c.control, this.#p, sessionId);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  /**
   * Kills every connection of the session (its GET_LOCKs, and so its grants and waits, end
   * with them), waits until the server has ended them (bounded), and deletes its records
   * and its row, so its next heartbeat reports the session expired.
   */
  async revokeSession(sessionId: string): Promise<void> {
    try {
      await revokeSession(this.#c.control, this.#p, sessionId);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  async close(): Promise<void> {
    await this.#watches.close();
    await this.#c.control.close();
  }
}
