import { onAbort } from "../../core/abortable.js";
import type { SqlGrant } from "../sql/grants.js";
import type { LaneFactory } from "../sql/lane-pool.js";
import { MyConnection } from "./connection.js";
import type { Control } from "./control.js";
import { ConnectionLostError, ERRNO, errno } from "./errors.js";
import { BACKEND } from "./options.js";
import type { SessionContext } from "./session.js";
import type { RecordAnswer } from "./takeover.js";

/** A grant as the mysql driver keeps it: which entry key, on which connection. */
export interface MyGrant extends SqlGrant<Lane> {
  /** The GET_LOCK key of the grant's entry (changes when its mode changes). */
  key: string;
  /** A tracked grant's takeover record's cell key (takeover.ts). */
  ckey?: Buffer | undefined;
}

/**
 * How long an interrupted wait may take to end (the KILL QUERY's round trip, then the
 * wait's answer) before its connection counts as gone. Bounds how far past its timeout
 * a cancelled acquisition can run.
 */
const SETTLE_MS = 2000;

/** What the wait procedures answer (the tracked ones add the takeover record's columns). */
export interface WaitRow extends Partial<RecordAnswer> {
  token: string | null;
  gone: number | string;
  interrupted: number | string;
}

/** How a wait ended (`row`: the granting answer, record columns included). */
export type WaitOutcome =
  | { readonly outcome: "granted"; readonly token: bigint; readonly row: WaitRow }
  | { readonly outcome: "gone" };

/**
 * A lock-holding connection of one session: its GET_LOCKs hold the session's entries, so
 * every grant stays on the lane that got it. A wait occupies its lane server-side; any
 * other statement for the lane (a release, a keep-alive ping) preempts it: the wait is
 * interrupted (KILL QUERY from the control connection), the statement runs, and the wait
 * is asked again, keeping its entry and so its place in the queue.
 */
export class Lane {
  readonly connection: MyConnection;
  readonly grants = new Set<MyGrant>();
  /** Grant ids held or being acquired here. */
  readonly ids = new Set<string>();
  /** Picked for a statement that has not started yet. */
  reservations = 0;
  closing = false;
  idleSince = Date.now();
  readonly #control: Control;
  readonly #changed: () => void;
  /** The wait in flight, if any: interrupting it, and its settling. */
  #wait: { interrupt: () => Promise<void>; settled: Promise<unknown> } | null = null;
  /** Statements waiting for the wait to step aside. */
  #preempting = 0;

  constructor(connection: MyConnection, control: Control, changed: () => void) {
    this.connection = connection;
    this.#control = control;
    this.#changed = changed;
    connection.onDeath((error) => {
      for (const grant of [...this.grants]) {
        this.grants.delete(grant);
        if (!grant.released) grant.onLost(error);
      }
      this.ids.clear();
      this.#changed();
    });
  }

  get alive(): boolean {
    return this.connection.alive && !this.closing;
  }

  /** Alive and not occupied by a wait. */
  get usable(): boolean {
    return this.alive && this.#wait === null && this.reservations === 0;
  }

  /** Usable and holding nothing. */
  get empty(): boolean {
    return this.usable && this.grants.size === 0;
  }

  get waiting(): boolean {
    return this.#wait !== null;
  }

  /** The lane's state changed (a grant left, a wait ended): waiters for lanes look again. */
  changed(): void {
    if (this.grants.size === 0) this.idleSince = Date.now();
    this.#changed();
  }

  /** Runs a statement on the lane, first making a wait in flight step aside. */
  async query<R>(sql: string, params: readonly unknown[], timeoutMs: number): Promise<R[]> {
    while (this.#wait) {
      this.#preempting++;
      try {
        const wait = this.#wait;
        await wait.interrupt();
        await wait.settled;
      } finally {
        this.#preempting--;
      }
    }
    return this.connection.query<R>(sql, params, timeoutMs);
  }

  /**
   * Waits server-side (the `@pwait` procedure, in chunks of `chunkMs`) until entry `key` is
   * granted or gone. `first` is the statement that starts the wait (an enqueue). When
   * `signal` aborts, the wait is interrupted and rejects with `signal.reason`, leaving the
   * entry for the caller to withdraw.
   */
  async wait(
    first: { sql: string; params: readonly unknown[] } | null,
    waitSql: string,
    waitParams: readonly unknown[],
    signal: AbortSignal,
  ): Promise<WaitOutcome> {
    let statement = first ?? { sql: waitSql, params: waitParams };
    for (;;) {
      if (signal.aborted) throw signal.reason;
      // Let a preempting statement run first (it is queued behind the wait otherwise).
      while (this.#preempting > 0) await Promise.resolve();
      let interrupted = false;
      let killing: Promise<void> | null = null;
      const interrupt = () => {
        if (!interrupted) {
          interrupted = true;
          killing = this.#interrupt(running);
        }
        return killing ?? Promise.resolve();
      };
      const running = this.connection.query<WaitRow>(statement.sql, statement.params);
      const settled = running.then(
        () => killing,
        () => killing,
      );
      this.#wait = { interrupt, settled: settled.catch(() => {}) };
      const detach = onAbort(signal, () => void interrupt().catch(() => {}));
      let row: WaitRow | undefined;
      try {
        [row] = await running;
      } catch (error) {
        if (errno(error) !== ERRNO.interrupted || !interrupted) throw error;
        row = { token: null, gone: 0, interrupted: 1 };
      } finally {
        detach();
        // Nothing else is sent on this connection before a KILL QUERY sent for it is done.
        await settled.catch(() => {});
        // An interrupted procedure may leave its transaction (and the queue row lock) open.
        if (interrupted && this.connection.alive)
          await this.connection.query("ROLLBACK", [], SETTLE_MS).catch(() => {});
        this.#wait = null;
      }
      statement = { sql: waitSql, params: waitParams };
      if (row?.token !== null && row?.token !== undefined) return { outcome: "granted", token: BigInt(row.token), row };
      if (Number(row?.gone ?? 0) === 1) return { outcome: "gone" };
      // Interrupted (cancelled: the loop throws; preempted: it asks again) or a chunk ended.
    }
  }

  /**
   * Interrupts the wait `running` (KILL QUERY from the control connection). A wait still
   * running {@link SETTLE_MS} after that, or whose interrupt failed, is on a connection
   * that no longer answers (a cut): it is dropped, which ends the wait (and frees the
   * lane's entries and GET_LOCKs once the server notices). Resolves once the KILL QUERY
   * is done or the connection is gone (nothing more is sent on it then); never rejects.
   */
  #interrupt(running: Promise<unknown>): Promise<void> {
    const drop = (why: string, cause?: unknown) => {
      if (this.connection.alive) this.connection.destroy(new ConnectionLostError(`${why}; connection dropped`, cause));
    };
    const timer = setTimeout(() => drop(`a cancelled lock wait did not end within ${SETTLE_MS} ms`), SETTLE_MS);
    const settled = () => clearTimeout(timer);
    running.then(settled, settled);
    return new Promise<void>((resolve) => {
      const undo = this.connection.onDeath(() => resolve());
      this.#control
        .interrupt(this.connection.id)
        .catch((error: unknown) => {
          settled();
          drop("a lock wait could not be interrupted", error);
        })
        .then(() => {
          undo();
          resolve();
        });
    });
  }

  /**
   * Ends the connection, first freeing its GET_LOCKs and entries while it still answers:
   * the server frees them on disconnect too, but only once it has read the goodbye, and
   * `close()` promises they are free when it resolves.
   */
  async close(): Promise<void> {
    this.closing = true;
    if (this.connection.alive && !this.waiting && this.grants.size > 0) {
      await this.connection.query("DO RELEASE_ALL_LOCKS()", [], 2000).catch(() => {});
    }
    await this.connection.end();
  }
}

/**
 * How a MySQL session's lane pool opens lanes: a connection of its own, recorded in
 * `lanes` under the session so that an expired session's connections can be killed.
 */
export function laneFactory(context: SessionContext, sessionId: string): LaneFactory<MyConnection, Lane> {
  return {
    backend: BACKEND,
    budget: context.budget,
    connect: () => MyConnection.open(context.create, context.settings.client, context.ttlMs),
    lane: (connection, changed) => new Lane(connection, context.control, changed),
    setup: async (lane) => {
      await lane.connection.query(
        `INSERT INTO ${context.settings.prefix}lanes (conn, session_id) VALUES (?, ?) ON DUPLICATE KEY UPDATE session_id = VALUES(session_id)`,
        [lane.connection.id, sessionId],
        context.control.timeoutMs,
      );
    },
  };
}
