/**
 * What PostgreSQL's and MySQL's connection wrappers share: a connection's death (and who
 * to tell), statements one at a time in call order, the socket ref'd only while a
 * statement is in flight, and a client-side bound that drops a connection that stopped
 * answering (a silently cut connection never does).
 *
 * @module
 */
import type { Socket } from "node:net";

/** How a backend's connection is built on {@link SqlConnection}. */
export interface SqlConnectionParts {
  /** The server's name in messages: "PostgreSQL", "MySQL". */
  readonly server: string;
  /** The backend's own connection-lost error (its `backend` field and `instanceof` checks). */
  readonly lost: (message: string, cause?: unknown) => Error;
  /** The client library's connection: its `error` and `end` events mean it died. */
  readonly events: { on(event: "error" | "end", listener: (error?: Error) => void): unknown };
}

/** The base of `PgConnection` and `MyConnection`: everything but the wire protocol. */
export abstract class SqlConnection {
  readonly #parts: SqlConnectionParts;
  #death: Error | null = null;
  #tail: Promise<void> = Promise.resolve();
  #inFlight = 0;
  /** Holds keeping the socket open through a drop (see hold()): how many, their bound, the drop due. */
  #holds = 0;
  #holdMs = 0;
  #heldDrop: NodeJS.Timeout | null = null;
  readonly #deathListeners = new Set<(error: Error) => void>();

  protected constructor(parts: SqlConnectionParts) {
    this.#parts = parts;
    // An 'error' event without a listener would crash the process.
    parts.events.on("error", (error) =>
      this.die(parts.lost(`connection lost: ${error?.message ?? "unknown error"}`, error)),
    );
    parts.events.on("end", () => this.die(parts.lost("connection closed")));
  }

  /** The client library's socket, once connected. */
  protected abstract socket(): Socket | undefined;

  /** Asks the server to end the connection (the polite way). */
  protected abstract goodbye(): Promise<void>;

  /** Whether the connection is still usable. */
  get alive(): boolean {
    return this.#death === null;
  }

  /** Why it died, once dead. */
  get death(): Error | null {
    return this.#death;
  }

  /** Calls `listener` once when the connection dies (at once if it already has). */
  onDeath(listener: (error: Error) => void): () => void {
    if (this.#death) {
      listener(this.#death);
      return () => {};
    }
    this.#deathListeners.add(listener);
    return () => this.#deathListeners.delete(listener);
  }

  /**
   * Drops the connection at once (no goodbye), e.g. when it stopped answering. While it is
   * {@link hold held}, it dies here (its statements reject, nothing more is sent) but its
   * socket closes only when the last hold is let go, or the holds' bound has passed.
   */
  destroy(error: Error): void {
    this.die(error);
    if (this.#holds === 0) this.drop();
    else if (!this.#heldDrop) {
      this.#heldDrop = setTimeout(() => this.#dropHeld(), this.#holdMs);
      this.#heldDrop.unref?.();
    }
  }

  /**
   * Keeps the socket open through a {@link destroy} until the returned function is called
   * (idempotent; the caller calls it also on failure), for at most `maxMs` after the
   * destroy: the server keeps the session, and whatever it holds, meanwhile. For a caller
   * that must clean up over another connection before the drop frees what this one holds
   * (an orphan grant's takeover record: a waiter granted by the drop would read it).
   */
  hold(maxMs: number): () => void {
    this.#holds++;
    this.#holdMs = Math.max(this.#holdMs, maxMs);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.#holds > 0) return;
      if (this.#heldDrop) this.#dropHeld();
      this.#holdMs = 0;
    };
  }

  /** Whether a {@link hold} is outstanding. */
  protected get held(): boolean {
    return this.#holds > 0;
  }

  #dropHeld(): void {
    clearTimeout(this.#heldDrop ?? undefined);
    this.#heldDrop = null;
    this.#holdMs = 0;
    this.drop();
  }

  /** Closes the socket at once. */
  protected drop(): void {
    this.socket()?.destroy();
  }

  /** Ends the connection politely, dropping it if that takes longer than `timeoutMs`. */
  async end(timeoutMs = 2000): Promise<void> {
    const reason = this.#parts.lost("connection closed by Baton");
    if (this.#death) {
      this.destroy(reason);
      return;
    }
    this.die(reason);
    try {
      await this.bounded(this.goodbye(), timeoutMs, () => this.destroy(reason));
    } catch {
      this.destroy(reason);
    }
  }

  /** Marks the connection dead with `error` (the first one counts) and tells the listeners. */
  protected die(error: Error): void {
    if (this.#death) return;
    this.#death = error;
    for (const listener of [...this.#deathListeners]) listener(error);
    this.#deathListeners.clear();
  }

  /**
   * Runs `statement` once every statement sent before it has settled: one at a time, in
   * call order. Rejects with the death reason if the connection died meanwhile.
   */
  protected serial<T>(statement: () => Promise<T>): Promise<T> {
    const pending = this.#tail.then(() => {
      if (this.#death) throw this.#death;
      return statement();
    });
    this.#tail = pending.then(
      () => {},
      () => {},
    );
    return pending;
  }

  /**
   * Refs the socket while a statement is in flight and unrefs it when idle: an idle
   * connection must not keep a process that forgot `close()` alive, while a statement
   * (a lock wait included) the program awaits must.
   */
  protected busy(delta: number): void {
    this.#inFlight += delta;
    const socket = this.socket();
    if (this.#inFlight === 0) socket?.unref?.();
    else if (delta > 0 && this.#inFlight === 1) socket?.ref?.();
  }

  /**
   * `promise`, or a rejection after `ms` (a connection-lost error saying the server did
   * not answer), running `onTimeout` first: by default, dropping the connection.
   */
  protected bounded<T>(promise: Promise<T>, ms: number, onTimeout?: () => void): Promise<T> {
    const message = `${this.#parts.server} did not answer within ${ms} ms; connection dropped`;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if (onTimeout) onTimeout();
        else this.destroy(this.#parts.lost(message));
        reject(this.#parts.lost(message));
      }, ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }
}
