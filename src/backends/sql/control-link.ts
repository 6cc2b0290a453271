/**
 * The life of a SQL coordinator's control connection, shared by PostgreSQL and MySQL: one
 * connection opened on demand, set up (migrations, LISTEN) before anyone gets it, opened
 * again after it died, and closed for good once.
 *
 * @module
 */
import type { SqlConnection } from "./connection.js";

/** How a backend opens and prepares its control connection. */
export interface ControlParts<C extends SqlConnection> {
  /** Opens a new connection. */
  open(): Promise<C>;
  /** Prepares it before first use; a rejection drops it. */
  setup(connection: C): Promise<void>;
  /** It was set up and is now the control connection (never called once closed). */
  adopted?(connection: C): void;
}

/** One reconnecting control connection. */
export class ControlLink<C extends SqlConnection> {
  readonly #parts: ControlParts<C>;
  readonly #ttlMs: number;
  #connection: C | null = null;
  #connecting: Promise<C> | null = null;
  #closed = false;
  #resolveClosed: () => void = () => {};
  readonly #closedPromise = new Promise<void>((resolve) => {
    this.#resolveClosed = resolve;
  });

  constructor(parts: ControlParts<C>, ttlMs: number) {
    this.#parts = parts;
    this.#ttlMs = ttlMs;
  }

  /** Default timeout of a control statement: a third of the TTL, at least 1 s. */
  get timeoutMs(): number {
    return Math.max(1000, Math.floor(this.#ttlMs / 3));
  }

  /** Whether {@link close} was called. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** The connected control connection, connecting (and setting it up) if needed. */
  connection(): Promise<C> {
    if (this.#closed) return Promise.reject(new Error("the coordinator is closed"));
    if (this.#connection?.alive) return Promise.resolve(this.#connection);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  /** Resolves once {@link close} has finished. */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Closes the connection for good (waiting for one being opened). */
  async close(): Promise<void> {
    if (this.#closed) return this.closed;
    this.#closed = true;
    try {
      const connection = this.#connection ?? (await this.#connecting?.catch(() => null)) ?? null;
      this.#connection = null;
      await connection?.end();
    } finally {
      this.#resolveClosed();
    }
  }

  async #connect(): Promise<C> {
    const connection = await this.#parts.open();
    try {
      await this.#parts.setup(connection);
    } catch (error) {
      connection.destroy(error as Error);
      throw error;
    }
    if (this.#closed) {
      await connection.end();
      throw new Error("the coordinator is closed");
    }
    this.#connection = connection;
    this.#parts.adopted?.(connection);
    return connection;
  }
}
