/**
 * The acquisition statements a PostgreSQL session runs on one of its reserved lanes: a
 * try, a blocking (server-side queued) acquisition, the semaphore turnstile, and the
 * clean-up after a failed or withdrawn one. Which lane runs them is the session's choice
 * (session.ts); see docs/backends/postgres.md.
 *
 * @module
 */
import type { AcquireRequest } from "../../core/driver.js";
import { grantFields, onLane } from "../sql/grants.js";
import { ConnectionLostError } from "./errors.js";
import { advisoryKey } from "./keys.js";
import type { Lane, PgGrant } from "./lane.js";
import { quoteIdent } from "./schema.js";
import type { SessionContext } from "./session.js";

/** Advisory keys of recently used lock and election names (see LaneAcquisitions.#lockKey). */
const lockKeys = new Map<string, string>();
const LOCK_KEY_CACHE = 10_000;

interface AcquireRow {
  o_token: string | null;
  o_pid: number;
}

interface SemRow {
  o_base: string;
  o_turnstile: string;
  o_slot: string | null;
  o_token: string | null;
  o_pid: number;
  o_head: boolean;
}

/** Acquisitions on the lanes of the sessions of one coordinator. */
export class LaneAcquisitions {
  readonly #c: SessionContext;
  readonly #q: string;

  constructor(context: SessionContext) {
    this.#c = context;
    this.#q = quoteIdent(context.settings.schema);
  }

  get #quickMs(): number {
    return this.#c.control.timeoutMs;
  }

  /** One non-blocking attempt on a reserved lane; `null` when busy. Unreserves the lane. */
  async trying(lane: Lane, request: AcquireRequest, id: string): Promise<PgGrant | null> {
    let grant: PgGrant | null = null;
    try {
      if (request.kind === "semaphore") {
        const result = await lane.query<SemRow>(
          `SELECT * FROM ${this.#q}.sem_acquire($1, $2, $3, 'try', $4)`,
          [this.#c.namespace, request.name, request.limit, Date.now()],
          this.#quickMs,
        );
        const row = result.rows[0];
        lane.checkPid(row?.o_pid);
        if (row?.o_slot && row.o_token) grant = this.#grant(lane, request, id, row.o_slot, row.o_token, row);
      } else {
        const key = this.#lockKey(request.kind, request.name);
        const result = await lane.query<AcquireRow>(
          `SELECT * FROM ${this.#q}.lock_acquire($1, $2, $3, $4, $5, false, $6)`,
          [key, this.#c.namespace, request.kind, request.name, request.mode === "shared", lane.epoch],
          this.#quickMs,
          `baton_try_${this.#c.settings.schema}`,
        );
        const row = result.rows[0];
        lane.checkPid(row?.o_pid);
        if (row?.o_token) grant = this.#grant(lane, request, id, key, row.o_token, null);
      }
      return grant;
    } catch (error) {
      await this.#cleanup(lane, request);
      throw error;
    } finally {
      this.#unreserve(lane, id, grant);
    }
  }

  /**
   * A blocking acquisition on a reserved lane: the server queues it. On an empty lane it
   * runs to the end; on a lane holding grants it is `preemptible` and resolves `null` when
   * another statement for the lane preempted it.
   */
  async blocking(lane: Lane, request: AcquireRequest, id: string, preemptible = false): Promise<PgGrant | null> {
    const { signal } = request;
    let grant: PgGrant | null = null;
    try {
      if (request.kind === "semaphore") {
        grant = await this.#blockingSemaphore(lane, request, id, preemptible);
        if (!grant) await this.#cleanup(lane, request);
        return grant;
      }
      const key = this.#lockKey(request.kind, request.name);
      const waited = await lane.wait<AcquireRow>(
        `SELECT * FROM ${this.#q}.lock_acquire($1, $2, $3, $4, $5, true, $6)`,
        [key, this.#c.namespace, request.kind, request.name, request.mode === "shared", lane.epoch],
        signal,
        preemptible,
        `baton_acquire_${this.#c.settings.schema}`,
      );
      if (waited.outcome === "preempted" && !signal.aborted) {
        await this.#cleanup(lane, request);
        return null;
      }
      // Withdrawn (the catch below gives back a grant that won the race with the cancel).
      if (waited.outcome !== "done" || signal.aborted) throw signal.reason;
      const row = waited.result.rows[0];
      lane.checkPid(row?.o_pid);
      if (!row?.o_token) throw new Error("lock_acquire returned no token");
      grant = this.#grant(lane, request, id, key, row.o_token, null);
      return grant;
    } catch (error) {
      if (!grant) await this.#cleanup(lane, request);
      throw error;
    } finally {
      this.#unreserve(lane, id, grant);
    }
  }

  /**
   * Queues on the semaphore's turnstile (FIFO, server-side); the head of the queue holds
   * the turnstile and scans the permits again whenever one is freed (NOTIFY).
   */
  async #blockingSemaphore(
    lane: Lane,
    request: AcquireRequest,
    id: string,
    preemptible: boolean,
  ): Promise<PgGrant | null> {
    const { signal } = request;
    const base = this.#key("semaphore", request.name, 0);
    const interest = this.#c.control.semaphores.interest(base);
    let head = false;
    try {
      let seen = interest.version();
      const waited = await lane.wait<SemRow>(
        `SELECT * FROM ${this.#q}.sem_acquire($1, $2, $3, 'wait', $4)`,
        [this.#c.namespace, request.name, request.limit, Date.now()],
        signal,
        preemptible,
      );
      if (waited.outcome === "preempted" && !signal.aborted) return null;
      if (waited.outcome !== "done") throw signal.reason;
      let row = waited.result.rows[0];
      lane.checkPid(row?.o_pid);
      while (row?.o_head) {
        if (!head) {
          head = true;
          lane.heads++;
        }
        await interest.changed(seen, signal);
        seen = interest.version();
        const result = await lane.query<SemRow>(
          `SELECT * FROM ${this.#q}.sem_acquire($1, $2, $3, 'scan', $4)`,
          [this.#c.namespace, request.name, request.limit, Date.now()],
          this.#quickMs,
        );
        row = result.rows[0];
        lane.checkPid(row?.o_pid);
      }
      if (!row?.o_slot || !row.o_token) throw new Error("sem_acquire returned no permit");
      if (signal.aborted) throw signal.reason;
      return this.#grant(lane, request, id, row.o_slot, row.o_token, row);
    } finally {
      interest.dispose();
      if (head) lane.heads--;
    }
  }

  #grant(
    lane: Lane,
    request: AcquireRequest,
    id: string,
    key: string,
    token: string,
    sem: { o_base: string; o_turnstile: string } | null,
  ): PgGrant {
    const grant: PgGrant = {
      ...grantFields(lane, request, id, BigInt(token)),
      key,
      sem: sem?.o_base ?? null,
      turnstile: sem?.o_turnstile ?? null,
    };
    return onLane(grant, () => new ConnectionLostError("the PostgreSQL connection was lost just after the grant"));
  }

  #unreserve(lane: Lane, id: string, grant: PgGrant | null): void {
    lane.reservations--;
    if (!grant) lane.ids.delete(id);
    // Only a lane that became free is news for waiters: waking them after every failed
    // try would have them take turns trying forever.
    if (lane.empty) lane.changed();
  }

  /** After a failed or withdrawn acquisition: frees whatever the statement may have left held. */
  async #cleanup(lane: Lane, request: AcquireRequest): Promise<void> {
    if (!lane.connection.alive) return;
    try {
      if (request.kind === "semaphore") {
        await lane.query(
          `SELECT ${this.#q}.sem_abort($1, $2)`,
          [this.#key("semaphore", request.name, 0), this.#key("semaphore", request.name, -1)],
          this.#quickMs,
        );
      } else {
        await lane.query(
          `SELECT ${this.#q}.unlock_key($1)`,
          [this.#lockKey(request.kind, request.name)],
          this.#quickMs,
        );
      }
    } catch (error) {
      // Cannot tell what is held: dropping the connection frees it all.
      lane.connection.destroy(error as Error);
    }
  }

  #key(kind: string, name: string, part: number): string {
    return advisoryKey(this.#c.settings.schema, this.#c.namespace, kind, name, part);
  }

  /** The advisory key of a lock or election (part 0), cached: every acquisition needs it. */
  #lockKey(kind: string, name: string): string {
    const id = `${this.#c.settings.schema}\u0000${this.#c.namespace}\u0000${kind}\u0000${name}`;
    let key = lockKeys.get(id);
    if (key === undefined) {
      if (lockKeys.size >= LOCK_KEY_CACHE) lockKeys.clear();
      key = this.#key(kind, name, 0);
      lockKeys.set(id, key);
    }
    return key;
  }
}
