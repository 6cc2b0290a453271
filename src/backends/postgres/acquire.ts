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
  /** lock_acquire_tracked: the takeover record written, or the live one found. */
  o_version?: string | null;
  o_found_value?: string | null;
  o_found_version?: string | null;
  o_found_fence?: string | null;
}

/** What the tracked grant statement did with the takeover record. */
function withRecord(grant: PgGrant, row: AcquireRow): PgGrant {
  if (row.o_version) grant.recordVersion = BigInt(row.o_version);
  else if (row.o_found_value && row.o_found_version) {
    grant.previousRecord = {
      key: grant.name,
      value: row.o_found_value,
      version: BigInt(row.o_found_version),
      fence: BigInt(row.o_found_fence ?? "0"),
    };
  }
  return grant;
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
    const hold = this.#hold(lane, request);
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
        const [sql, params, name] = this.#lockAcquire(key, request, lane, false);
        const result = await lane.query<AcquireRow>(sql, params, this.#quickMs, name);
        const row = result.rows[0];
        lane.checkPid(row?.o_pid);
        if (row?.o_token) grant = withRecord(this.#grant(lane, request, id, key, row.o_token, null), row);
      }
      return grant;
    } catch (error) {
      await this.#cleanup(lane, request, hold);
      throw error;
    } finally {
      hold?.();
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
    const hold = this.#hold(lane, request);
    try {
      if (request.kind === "semaphore") {
        grant = await this.#blockingSemaphore(lane, request, id, preemptible);
        if (!grant) await this.#cleanup(lane, request);
        return grant;
      }
      const key = this.#lockKey(request.kind, request.name);
      const [sql, params, name] = this.#lockAcquire(key, request, lane, true);
      const waited = await lane.wait<AcquireRow>(sql, params, signal, preemptible, name);
      if (waited.outcome === "preempted" && !signal.aborted) {
        await this.#cleanup(lane, request, hold);
        return null;
      }
      // Withdrawn (the catch below gives back a grant that won the race with the cancel,
      // after its takeover record: it was never handed out, so it was not lost either).
      if (waited.outcome !== "done" || signal.aborted) throw signal.reason;
      const row = waited.result.rows[0];
      lane.checkPid(row?.o_pid);
      if (!row?.o_token) throw new Error("lock_acquire returned no token");
      grant = withRecord(this.#grant(lane, request, id, key, row.o_token, null), row);
      return grant;
    } catch (error) {
      if (!grant) await this.#cleanup(lane, request, hold);
      throw error;
    } finally {
      hold?.();
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

  /**
   * The statement of a lock or election grant: with a takeover record, the tracked
   * variant, which writes it in the same statement (migrations.ts v4).
   */
  #lockAcquire(key: string, request: AcquireRequest, lane: Lane, wait: boolean): [string, unknown[], string] {
    const { schema } = this.#c.settings;
    const base = [key, this.#c.namespace, request.kind, request.name];
    if (request.record !== undefined) {
      return [
        `SELECT * FROM ${this.#q}.lock_acquire_tracked($1, $2, $3, $4, ${wait}, $5, $6)`,
        [...base, lane.epoch, request.record],
        `baton_${wait ? "acquire" : "try"}_tracked_${schema}`,
      ];
    }
    return [
      `SELECT * FROM ${this.#q}.lock_acquire($1, $2, $3, $4, $5, ${wait}, $6)`,
      [...base, request.mode === "shared", lane.epoch],
      `baton_${wait ? "acquire" : "try"}_${schema}`,
    ];
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

  /**
   * A tracked lock request's hold on its lane's socket (SqlConnection.hold): a connection
   * dropped under it (a statement timed out, a wait that would not end) stays open until
   * its orphan record is deleted (#dropOrphanRecord), for the first delete's bound and a
   * second more at most. `undefined` for other requests.
   */
  #hold(lane: Lane, request: AcquireRequest): (() => void) | undefined {
    if (request.record === undefined || request.kind === "semaphore") return undefined;
    return lane.connection.hold(this.#quickMs + 1000);
  }

  /**
   * After a failed or withdrawn acquisition: frees whatever the statement may have left
   * held. A tracked grant the statement may have made (its answer lost or too late) was
   * never handed out, so it was not lost either: its takeover record goes first. `hold`:
   * the request's hold on the lane's socket, let go once a dropped lane's record is gone.
   */
  async #cleanup(lane: Lane, request: AcquireRequest, hold?: () => void): Promise<void> {
    const orphan = this.#mayOrphan(lane, request);
    const end = hold ?? (() => {});
    if (!lane.connection.alive) {
      if (orphan) await this.#dropOrphanRecord(lane, request, end);
      return;
    }
    try {
      if (request.kind === "semaphore") {
        await lane.query(
          `SELECT ${this.#q}.sem_abort($1, $2)`,
          [this.#key("semaphore", request.name, 0), this.#key("semaphore", request.name, -1)],
          this.#quickMs,
        );
      } else {
        const key = this.#lockKey(request.kind, request.name);
        if (orphan) {
          await lane.query(
            this.#orphanRecordSql("pg_backend_pid()"),
            [this.#c.namespace, request.name, key, request.kind],
            this.#quickMs,
          );
        }
        await lane.query(`SELECT ${this.#q}.unlock_key($1)`, [key], this.#quickMs);
      }
    } catch (error) {
      // Cannot tell what is held: dropping the connection frees it all.
      lane.connection.destroy(error as Error);
      if (orphan) await this.#dropOrphanRecord(lane, request, end);
    }
  }

  /** Whether a failed tracked acquisition may have left a record: no grant of its key here. */
  #mayOrphan(lane: Lane, request: AcquireRequest): boolean {
    if (request.record === undefined || request.kind === "semaphore") return false;
    const key = this.#lockKey(request.kind, request.name);
    for (const grant of lane.grants) if (grant.key === key && grant.kind === request.kind) return false;
    return true;
  }

  /**
   * The record of a grant made to the lane's backend `pid`: the holders row names the token
   * of its last grant of the key, and a later grant (to another backend) moves the row on,
   * in the same transaction as its own record.
   */
  #orphanRecordSql(pid: string): string {
    return `DELETE FROM ${this.#q}.cells c USING ${this.#q}.holders h
      WHERE c.namespace = $1 AND c.space = 'takeover' AND c.key = $2
        AND h.key = $3 AND h.namespace = $1 AND h.kind = $4 AND h.name = $2 AND h.part = 0
        AND h.pid = ${pid} AND c.fence = h.token`;
  }

  /**
   * For a dropped lane, whose socket the caller keeps open until `end` (always called):
   * deletes the record of its grant over the control connection while its backend still
   * holds the lock (the server frees it the moment the backend ends, and a waiter granted
   * then would read the record as a lost holding's: a takeover of a grant nobody was
   * handed), then ends the connection (`end`, and from the server side: a dropped client is
   * noticed only when the backend next talks to it, so a wait could still be granted and
   * write a record), then deletes again, for a wait granted in between. Each statement is
   * bounded by the control timeout. A failure keeps the record: the next holder then
   * reports a takeover of a grant never handed out.
   */
  async #dropOrphanRecord(lane: Lane, request: AcquireRequest, end: () => void): Promise<void> {
    const key = this.#lockKey(request.kind, request.name);
    const drop = () =>
      this.#c.control.query(this.#orphanRecordSql("$5"), [
        this.#c.namespace,
        request.name,
        key,
        request.kind,
        lane.pid,
      ]);
    try {
      if (!lane.pid) return;
      try {
        await drop();
      } finally {
        end();
      }
      await this.#c.control.query("SELECT pg_terminate_backend($1, $2)", [lane.pid, Math.floor(this.#quickMs / 2)]);
      await drop();
    } catch {
      // Kept, as said above.
    } finally {
      end();
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
