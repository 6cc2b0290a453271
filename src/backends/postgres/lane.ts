import type { QueryResult, QueryResultRow } from "pg";
import { onAbort, sleep } from "../../core/abortable.js";
import type { SqlGrant } from "../sql/grants.js";
import type { LaneFactory } from "../sql/lane-pool.js";
import { PgConnection, poolingError } from "./connection.js";
import type { Control } from "./control.js";
import { ConnectionLostError, SQLSTATE, sqlState } from "./errors.js";
import { BACKEND } from "./options.js";
import { quoteIdent } from "./schema.js";
import type { SessionContext } from "./session.js";

/** A grant as the postgres driver keeps it: which advisory key, on which connection. */
export interface PgGrant extends SqlGrant<Lane> {
  /** The advisory key held (the permit's key for a semaphore), as decimal text. */
  readonly key: string;
  /** Semaphores: the base key and the turnstile key. */
  readonly sem: string | null;
  readonly turnstile: string | null;
}

/** How a blocking statement ended. */
export type WaitOutcome<R extends QueryResultRow> =
  | { readonly outcome: "done"; readonly result: QueryResult<R> }
  | { readonly outcome: "aborted" | "preempted" };

interface LongStatement {
  readonly preemptible: boolean;
  request(kind: "abort" | "preempt"): void;
}

/**
 * A lock-holding connection of one session. Session advisory locks belong to the
 * connection, so every grant stays on the lane that got it. A blocking wait occupies its
 * lane: plain waits run only on lanes that hold nothing (so every grant-holding lane can
 * be pinged by keep-alives and released at any time); an upgrade must wait on its own
 * lane, so it is preemptible: any other statement for the lane cancels it, runs, and the
 * upgrade is asked again (PostgreSQL queues a holder's request ahead of other waiters, so
 * it keeps its place).
 */
export class Lane {
  readonly connection: PgConnection;
  readonly grants = new Set<PgGrant>();
  /** Grant ids held or being acquired here. */
  readonly ids = new Set<string>();
  /** Picked for a blocking statement that has not started yet. */
  reservations = 0;
  /** Semaphore queue heads parked here (they hold the turnstile, not a grant). */
  heads = 0;
  closing = false;
  idleSince = Date.now();
  /** Token prefix of the server this connection reached (its timeline), set up by lane_setup. */
  epoch = "";
  readonly #control: Control;
  readonly #onChange: () => void;
  #long: LongStatement | null = null;

  constructor(connection: PgConnection, control: Control, onChange: () => void) {
    this.connection = connection;
    this.#control = control;
    this.#onChange = onChange;
    connection.onDeath((error) => {
      const lost = [...this.grants];
      this.grants.clear();
      if (!this.closing) {
        for (const grant of lost) grant.onLost(lostError(error));
      }
      this.#onChange();
    });
  }

  get pid(): number {
    return this.connection.pid;
  }

  get alive(): boolean {
    return this.connection.alive && !this.closing;
  }

  /** Free for a statement right now (not in a blocking wait). */
  get usable(): boolean {
    return this.alive && this.#long === null;
  }

  /** Holds and awaits nothing: may host a blocking wait, or be closed when idle. */
  get empty(): boolean {
    return this.usable && this.grants.size === 0 && this.ids.size === 0 && this.reservations === 0 && this.heads === 0;
  }

  /** A quick statement. Preempts a pending upgrade on this lane. */
  async query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    params: readonly unknown[],
    timeoutMs: number,
    prepareAs?: string,
  ): Promise<QueryResult<R>> {
    if (this.#long?.preemptible) this.#long.request("preempt");
    return this.connection.query<R>(text, params, timeoutMs, prepareAs);
  }

  /**
   * A blocking statement (a server-side lock wait). When `signal` aborts, or when another
   * statement needs a `preemptible` lane, it is cancelled from the control connection; a
   * cancel that lost the race with the grant yields `done`. A wait that cannot be
   * cancelled within a few seconds (control unreachable) drops the connection.
   */
  async wait<R extends QueryResultRow = QueryResultRow>(
    text: string,
    params: readonly unknown[],
    signal: AbortSignal,
    preemptible: boolean,
    prepareAs?: string,
  ): Promise<WaitOutcome<R>> {
    let settled = false;
    let requested: "abort" | "preempt" | null = null;
    let cancelling = false;
    const cancelLoop = async () => {
      const started = Date.now();
      let delay = 5;
      while (!settled) {
        // Cancels only while the backend waits for an advisory lock; retried because the
        // statement may not have reached its wait yet.
        await this.#control.cancelWait(this.pid).catch(() => {});
        if (settled) return;
        await sleep(delay);
        delay = Math.min(delay * 2, 100);
        if (!settled && Date.now() - started > 5000) {
          this.connection.destroy(new ConnectionLostError("a lock wait could not be cancelled; connection dropped"));
          return;
        }
      }
    };
    const long: LongStatement = {
      preemptible,
      request: (kind) => {
        if (requested !== "abort") requested = kind;
        if (!cancelling) {
          cancelling = true;
          void cancelLoop();
        }
      },
    };
    this.#long = long;
    const detach = onAbort(signal, () => long.request("abort"));
    try {
      const result = await this.connection.query<R>(text, params, undefined, prepareAs);
      return { outcome: "done", result };
    } catch (error) {
      if (
        requested &&
        (sqlState(error) === SQLSTATE.queryCanceled || (requested === "abort" && !this.connection.alive))
      ) {
        return { outcome: requested === "abort" ? "aborted" : "preempted" };
      }
      throw error;
    } finally {
      settled = true;
      detach();
      this.#long = null;
      this.changed();
    }
  }

  /** Checks that a statement ran in this lane's backend (see poolingError). */
  checkPid(pid: number | undefined): void {
    if (pid === this.pid) return;
    const error = poolingError();
    this.connection.destroy(error);
    throw error;
  }

  /** Something about this lane changed: waiters for a lane may look again. */
  changed(): void {
    if (this.empty) this.idleSince = Date.now();
    this.#onChange();
  }

  /** Closes the connection: the server frees whatever it still holds. */
  async close(): Promise<void> {
    this.closing = true;
    this.grants.clear();
    await this.connection.end();
  }
}

function lostError(cause: Error): Error {
  return new ConnectionLostError(
    `the PostgreSQL connection holding it was lost (${cause.message}); the server released its locks`,
    cause,
  );
}

/**
 * How a PostgreSQL session's lane pool opens lanes: a connection of its own (refused when
 * its backend pid is already one of ours: a pooler between us and the server), set up by
 * `lane_setup` under the session, which also hands out the lane's token prefix.
 */
export function laneFactory(context: SessionContext, sessionId: string): LaneFactory<PgConnection, Lane> {
  const q = quoteIdent(context.settings.schema);
  return {
    backend: BACKEND,
    budget: context.budget,
    connect: async () => {
      const connection = await PgConnection.open(context.Client, context.settings.client, context.ttlMs);
      const { pid } = connection;
      const pids = context.control.pids;
      connection.onDeath(() => pids.delete(pid));
      if (pids.has(pid)) {
        const error = poolingError();
        connection.destroy(error);
        throw error;
      }
      pids.add(pid);
      return connection;
    },
    lane: (connection, changed) => new Lane(connection, context.control, changed),
    setup: async (lane) => {
      const setup = await lane.connection.query<{ o_pid: number; o_epoch: string }>(
        `SELECT * FROM ${q}.lane_setup($1, $2)`,
        [sessionId, context.memberId],
        context.control.timeoutMs,
      );
      lane.checkPid(setup.rows[0]?.o_pid);
      lane.epoch = setup.rows[0]?.o_epoch ?? "";
      if (!lane.epoch) throw new Error("lane_setup returned no token prefix");
    },
  };
}
