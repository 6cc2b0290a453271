import type { Socket } from "node:net";
import type { Connection, ConnectionOptions } from "mysql2";
import { BackendUnavailableError, UnsupportedError } from "../../core/errors.js";
import { SqlConnection } from "../sql/connection.js";
import { ConnectionLostError } from "./errors.js";
import { BACKEND } from "./options.js";
import type { MysqlClientConfig } from "./options.js";

/** mysql2's `createConnection`, loaded lazily by the driver. */
export type CreateConnection = (config: ConnectionOptions) => Connection;

/**
 * One MySQL connection (one server thread): its id, its death, and statements with an
 * optional client-side timeout that drops the connection rather than leave it hanging (a
 * silently cut connection never answers). Statements run one at a time, in call order.
 */
export class MyConnection extends SqlConnection {
  readonly #conn: Connection;
  /** `CONNECTION_ID()`, fixed for the connection's life. */
  id = 0;

  private constructor(conn: Connection) {
    super({ server: "MySQL", lost: (message, cause) => new ConnectionLostError(message, cause), events: conn });
    this.#conn = conn;
  }

  /**
   * Connects and tunes the session: READ COMMITTED (the granting rule must see every
   * committed entry), and `wait_timeout` so that the server drops a silent client, and frees
   * its locks, no sooner than `ttlMs` + 2 s after it last heard from it. Refuses a proxy that
   * moves statements between server connections.
   */
  static async open(create: CreateConnection, config: MysqlClientConfig, ttlMs: number): Promise<MyConnection> {
    const conn = create({
      ...config,
      enableKeepAlive: true,
      keepAliveInitialDelay: 1000,
      supportBigNumbers: true,
      bigNumberStrings: true,
      multipleStatements: false,
      charset: "utf8mb4_bin",
    });
    const connection = new MyConnection(conn);
    const timeout = config.connectTimeout;
    try {
      await connection.bounded(
        new Promise<void>((resolve, reject) => conn.connect((error) => (error ? reject(error) : resolve()))),
        timeout,
        () => connection.destroy(new ConnectionLostError("connect timed out")),
      );
      const idle = Math.ceil((ttlMs + 2000) / 1000) + 1;
      await connection.query(
        "SET SESSION wait_timeout = ?, SESSION interactive_timeout = ?, SESSION innodb_lock_wait_timeout = 60, SESSION lock_wait_timeout = 60",
        [idle, idle],
        timeout,
      );
      await connection.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", [], timeout);
      const [row] = await connection.query<{ id: string }>("SELECT CONNECTION_ID() AS id", [], timeout);
      connection.id = Number(row?.id ?? 0);
      if (!connection.id) throw new BackendUnavailableError("connection setup returned nothing", { backend: BACKEND });
      if (conn.threadId !== null && conn.threadId !== connection.id) throw proxyError();
      connection.busy(0);
      return connection;
    } catch (error) {
      connection.destroy(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  /**
   * Runs one statement and resolves with its rows (for a CALL: the rows of its one result
   * set). With `timeoutMs`, a statement without an answer by then drops the connection.
   */
  async query<R>(sql: string, params: readonly unknown[] = [], timeoutMs?: number): Promise<R[]> {
    if (this.death) throw this.death;
    this.busy(1);
    try {
      const pending = this.serial(() => this.#run<R>(sql, params));
      return await (timeoutMs === undefined ? pending : this.bounded(pending, timeoutMs));
    } finally {
      this.busy(-1);
    }
  }

  #run<R>(sql: string, params: readonly unknown[]): Promise<R[]> {
    return new Promise<R[]>((resolve, reject) => {
      // Once mysql2 closed a connection itself (its destroy(), a goodbye that timed out) it
      // drops the callbacks of the statements in flight: without this they would never
      // settle, and a lock wait on a connection cut and then dropped would hang for good.
      const detach = this.onDeath(reject);
      this.#conn.query({ sql, values: params as unknown[] }, (error, result) => {
        detach();
        if (error) {
          // mysql2 hands a fatal error (a reset under a statement) to that statement alone,
          // with no 'error' or 'end' event, and closes the connection: it is dead here too.
          if ((error as { fatal?: boolean }).fatal) {
            this.die(new ConnectionLostError(`connection lost: ${error.message}`, error));
            reject(this.death);
            return;
          }
          reject(error);
          return;
        }
        resolve(rowsOf<R>(result));
      });
    });
  }

  protected socket(): Socket | undefined {
    return (this.#conn as unknown as { stream?: Socket }).stream;
  }

  protected goodbye(): Promise<void> {
    return new Promise<void>((resolve) => this.#conn.end(() => resolve()));
  }

  /**
   * Closes the socket at once (no goodbye). mysql2's own destroy() only half-closes the
   * socket (a FIN a cut peer never answers): the socket is destroyed too, so a dropped
   * connection holds no descriptor.
   */
  protected override drop(): void {
    this.#conn.destroy();
    super.drop();
  }
}

/** The rows of a query or of a CALL's (single) result set. */
function rowsOf<R>(result: unknown): R[] {
  if (!Array.isArray(result)) return [];
  // A CALL answers [rows of each SELECT..., status]; a SELECT answers its rows.
  if (result.length > 0 && Array.isArray(result[0])) {
    const sets = result.filter((part) => Array.isArray(part)) as R[][];
    return sets[sets.length - 1] ?? [];
  }
  return result as R[];
}

/** The error for a connection whose statements do not all run in one server connection. */
export function proxyError(): UnsupportedError {
  return new UnsupportedError(
    "the connection id changed between statements: this looks like a multiplexing proxy (e.g. ProxySQL with multiplexing), where GET_LOCK cannot work. Connect to MySQL directly or disable multiplexing for Baton's user",
    { backend: BACKEND },
  );
}
