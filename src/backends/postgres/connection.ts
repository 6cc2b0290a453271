import type { Socket } from "node:net";
import type { Client, ClientConfig, QueryResult, QueryResultRow } from "pg";
import { BackendUnavailableError, UnsupportedError } from "../../core/errors.js";
import { SqlConnection } from "../sql/connection.js";
import { ConnectionLostError } from "./errors.js";
import { BACKEND } from "./options.js";

/** The node-postgres `Client` constructor, loaded lazily by the driver. */
export type ClientClass = new (config: ClientConfig) => Client;

/**
 * One PostgreSQL connection (one backend process): its pid, its death, and statements with
 * an optional client-side timeout that drops the connection rather than leave it hanging
 * (a silently cut connection never answers).
 */
export class PgConnection extends SqlConnection {
  readonly client: Client;
  /** Backend process id, fixed for the connection's life. */
  pid = 0;
  /** `server_version_num`. */
  serverVersion = 0;

  private constructor(client: Client) {
    super({ server: "PostgreSQL", lost: (message, cause) => new ConnectionLostError(message, cause), events: client });
    this.client = client;
  }

  /**
   * Connects and tunes the session so that the server notices a silently lost client no
   * sooner than `ttlMs` after it last heard from it (TCP keepalives and user timeout), and
   * a dead waiter's queued lock request is dropped quickly (client_connection_check_interval).
   * Refuses standbys, transaction-pooling proxies and databases not encoded in UTF8.
   */
  static async open(ClientImpl: ClientClass, config: ClientConfig, ttlMs: number): Promise<PgConnection> {
    const client = new ClientImpl({
      ...config,
      keepAlive: true,
      keepAliveInitialDelayMillis: 1000,
      application_name: "baton",
    });
    const connection = new PgConnection(client);
    const timeout = config.connectionTimeoutMillis ?? 10_000;
    try {
      await connection.bounded(client.connect(), timeout, () =>
        connection.destroy(new ConnectionLostError("connect timed out")),
      );
      const probes = Math.ceil(ttlMs / 1000) + 2;
      const first = await connection.query<{ pid: number; version: number; standby: boolean; encoding: string }>(
        `SELECT pg_backend_pid() AS pid, current_setting('server_version_num')::int AS version,
           pg_is_in_recovery() AS standby, current_setting('server_encoding') AS encoding,
           set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
           set_config('idle_in_transaction_session_timeout', '0', false),
           set_config('tcp_keepalives_idle', '1', false), set_config('tcp_keepalives_interval', '1', false),
           set_config('tcp_keepalives_count', $1, false),
           CASE WHEN current_setting('synchronous_commit') = 'off'
             THEN set_config('synchronous_commit', 'local', false) END`,
        [String(probes)],
        timeout,
      );
      const row = first.rows[0];
      if (!row) throw new BackendUnavailableError("connection setup returned nothing", { backend: BACKEND });
      connection.pid = row.pid;
      connection.serverVersion = row.version;
      if (row.standby) {
        throw new BackendUnavailableError(
          "the server is a standby (in recovery); Baton needs the primary (writable) server",
          { backend: BACKEND },
        );
      }
      if (row.version < 120000) {
        throw new UnsupportedError(`PostgreSQL ${row.version} is too old; the postgres backend needs 12 or later`, {
          backend: BACKEND,
        });
      }
      // A second statement must run in the same backend: behind a transaction-pooling proxy
      // (PgBouncer pool_mode=transaction) session advisory locks would be meaningless.
      const settings = [`set_config('tcp_user_timeout', $1, false)`];
      if (row.version >= 140000) settings.push(`set_config('client_connection_check_interval', '1000', false)`);
      const second = await connection
        .query<{ pid: number }>(
          `SELECT pg_backend_pid() AS pid, ${settings.join(", ")}`,
          [String(ttlMs + 2000)],
          timeout,
        )
        .catch(async (error: unknown) => {
          // Platforms without TCP_USER_TIMEOUT refuse the setting; keepalive probes still bound it.
          if (!connection.alive) throw error;
          return connection.query<{ pid: number }>("SELECT pg_backend_pid() AS pid", [], timeout);
        });
      if (second.rows[0]?.pid !== connection.pid) throw poolingError();
      const refused = encodingError(row.encoding);
      if (refused) throw refused;
      return connection;
    } catch (error) {
      connection.destroy(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  /**
   * Runs one statement. With `timeoutMs`, a statement without an answer by then drops the
   * connection (and rejects with {@link ConnectionLostError}).
   */
  async query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    params: readonly unknown[] = [],
    timeoutMs?: number,
    /** Prepares the statement under this name, once per connection (hot paths). */
    prepareAs?: string,
  ): Promise<QueryResult<R>> {
    if (this.death) throw this.death;
    this.busy(1);
    try {
      return await this.#run<R>(text, params, timeoutMs, prepareAs);
    } finally {
      this.busy(-1);
    }
  }

  protected socket(): Socket | undefined {
    return (this.client as unknown as { connection?: { stream?: Socket } }).connection?.stream;
  }

  protected goodbye(): Promise<void> {
    return this.client.end();
  }

  async #run<R extends QueryResultRow>(
    text: string,
    params: readonly unknown[],
    timeoutMs: number | undefined,
    prepareAs: string | undefined,
  ): Promise<QueryResult<R>> {
    // One statement at a time, in call order (node-postgres' own queue is deprecated).
    const pending = this.serial(() => {
      if (prepareAs) return this.client.query<R>({ name: prepareAs, text, values: params as unknown[] });
      return this.client.query<R>(text, params as unknown[]);
    });
    const answered = this.held ? this.#orDeath(pending) : pending;
    return this.#settle(timeoutMs === undefined ? answered : this.bounded(answered, timeoutMs));
  }

  /**
   * A connection dropped while held open (SqlConnection.hold) keeps its socket, and
   * node-postgres its statements: they reject with the drop, as they do once it is closed.
   */
  #orDeath<T>(pending: Promise<T>): Promise<T> {
    let detach = () => {};
    const dropped = new Promise<never>((_, reject) => {
      detach = this.onDeath(reject);
    });
    return Promise.race([pending, dropped]).finally(() => detach());
  }

  async #settle<R extends QueryResultRow>(pending: Promise<QueryResult<R>>): Promise<QueryResult<R>> {
    try {
      return await pending;
    } catch (error) {
      // After a drop, node-postgres reports "Connection terminated": say why it was dropped.
      if (this.death && !(error as { code?: string }).code) throw this.death;
      throw error;
    }
  }
}

/** The error for a connection whose statements do not all run in one server process. */
export function poolingError(): UnsupportedError {
  return new UnsupportedError(
    "consecutive statements on one connection ran in different PostgreSQL backends: this looks like a transaction-pooling proxy (e.g. PgBouncer with pool_mode=transaction), where session advisory locks cannot work. Connect to PostgreSQL directly or through a session-pooling proxy",
    { backend: BACKEND },
  );
}

/**
 * The error for a database whose encoding is not UTF8 (`null` for UTF8). Names, member ids
 * and fence info are any Unicode text: a LATIN1 (or other single-language) database
 * refuses most of it with a conversion error, and SQL_ASCII stores the bytes it is sent
 * without checking or converting them, so what reads back depends on each client's
 * encoding and character functions count bytes. Both are refused at connect time.
 */
export function encodingError(encoding: string | undefined): UnsupportedError | null {
  if (encoding === "UTF8") return null;
  return new UnsupportedError(
    `the database's encoding is ${encoding ?? "unknown"}; Baton needs a UTF8 database (lock names, member ids and fence info are any Unicode text${encoding === "SQL_ASCII" ? ", and SQL_ASCII stores bytes unchecked and unconverted" : ""}). Create one with CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0`,
    { backend: BACKEND },
  );
}
