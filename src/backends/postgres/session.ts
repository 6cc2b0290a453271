import { randomUUID } from "node:crypto";
import type { AcquireRequest, DriverGrant, DriverSession, LockMode, SessionHooks } from "../../core/driver.js";
import { ClosedError, DeadlockError, InvalidStateError, SessionExpiredError } from "../../core/errors.js";
import { notHeld, upgradeDeadlock } from "../../core/refusals.js";
import { asPendingUpgrade, askAgain, oneUpgradeAtATime, releaseOnLane } from "../sql/grants.js";
import { LanePool } from "../sql/lane-pool.js";
import type { ClientClass, PgConnection } from "./connection.js";
import type { Control } from "./control.js";
import { ConnectionLostError, isConnectionError, SQLSTATE, sqlState, translate } from "./errors.js";
import { BACKEND } from "./options.js";
import { LaneAcquisitions } from "./acquire.js";
import { type Lane, laneFactory, type PgGrant } from "./lane.js";
import type { PostgresSettings } from "./options.js";
import { quoteIdent } from "./schema.js";
import type { ConnectionBudget } from "../sql/budget.js";

/** What every session of one coordinator shares. */
export interface SessionContext {
  readonly Client: ClientClass;
  readonly settings: PostgresSettings;
  readonly control: Control;
  readonly budget: ConnectionBudget;
  readonly namespace: string;
  readonly memberId: string;
  readonly ttlMs: number;
}

/**
 * One Baton session: a row in `sessions` (lease renewed by keep-alives, bound records)
 * and the lanes (connections) holding its locks. See docs/backends/postgres.md.
 */
export class PgSession implements DriverSession {
  readonly id: string;
  readonly #c: SessionContext;
  readonly #hooks: SessionHooks;
  readonly #q: string;
  readonly #pool: LanePool<PgConnection, Lane>;
  readonly #lanes: LaneAcquisitions;
  /**
   * The release of a tracked exclusive grant, one plain statement (a plpgsql call costs the
   * server more): its record becomes a tombstone if still at the version it claimed, then
   * the lock is freed (the aggregate reads the update to its end first, so a waiter granted
   * by the unlock finds the tombstone, once this commits). Committed asynchronously, as the
   * grant's record (docs/takeover.md, durability).
   */
  readonly #releaseTracked: string;
  #closed = false;

  private constructor(context: SessionContext, hooks: SessionHooks, id: string) {
    this.id = id;
    this.#c = context;
    this.#hooks = hooks;
    this.#q = quoteIdent(context.settings.schema);
    this.#releaseTracked = `WITH cleared AS (UPDATE ${this.#q}.cells SET value = NULL, version = nextval('${this.#q}.cell_versions')
        WHERE namespace = $2 AND space = 'takeover' AND key = $3 AND version = $4 RETURNING 1)
      SELECT pg_advisory_unlock($1) AS o_released, pg_backend_pid() AS o_pid,
        set_config('synchronous_commit', 'off', true) AS o_commit
      FROM (SELECT count(*) FROM cleared) AS c`;
    this.#pool = new LanePool(laneFactory(context, id), id);
    this.#lanes = new LaneAcquisitions(context);
  }

  /** Creates the session row; its lease starts now, on the server's clock. */
  static async open(context: SessionContext, hooks: SessionHooks): Promise<PgSession> {
    const id = randomUUID();
    const q = quoteIdent(context.settings.schema);
    await context.control.query(
      `INSERT INTO ${q}.sessions (id, namespace, member_id, ttl_ms, expires_at)
       VALUES ($1, $2, $3, $4::int, now() + $4::int * interval '1 millisecond')`,
      [id, context.namespace, context.memberId, context.ttlMs],
    );
    return new PgSession(context, hooks, id);
  }

  get #quickMs(): number {
    return this.#c.control.timeoutMs;
  }

  /**
   * Renews the lease and proves every lock-holding connection still answers: the server
   * drops a silent connection (and frees its locks) no sooner than ttl + 2 s after it last
   * heard from it, so locks on a lane whose ping fails are reported lost before that.
   */
  async keepAlive(): Promise<void> {
    if (this.#closed) throw new SessionExpiredError(`session ${this.id} is closed`, { backend: BACKEND });
    const lanes = this.#pool.all.filter((lane) => lane.alive);
    const pings = lanes
      .filter((lane) => lane.grants.size > 0)
      .map((lane) => lane.query("SELECT 1", [], this.#quickMs).catch(() => {}));
    const [beat] = await Promise.all([
      this.#c.control.query<{ o_alive: boolean; o_lanes: number[] }>(`SELECT * FROM ${this.#q}.heartbeat($1, $2, $3)`, [
        this.id,
        this.#c.ttlMs,
        lanes.map((lane) => lane.pid),
      ]),
      ...pings,
    ]);
    const row = beat.rows[0];
    if (!row?.o_alive) {
      throw new SessionExpiredError(`session ${this.id} expired on the server (no heartbeat within its TTL)`, {
        backend: BACKEND,
      });
    }
    const serverPids = new Set(row.o_lanes);
    for (const lane of lanes) {
      if (lane.alive && !serverPids.has(lane.pid)) {
        lane.connection.destroy(new ConnectionLostError("the server no longer has this connection"));
      }
    }
  }

  async acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    const what = () => `acquiring ${request.kind} "${request.name}"`;
    if (request.kind !== "semaphore" && !this.#closed) {
      // The uncontended path: one try on a lane that already holds grants (or any usable
      // one), without touching `request.signal` (building it costs more than the try's own
      // client-side work). A contended wait then asks again below, server-side.
      const id = `${request.kind}\u0000${request.name}`;
      const lane = this.#pool.reserve((l) => l.usable && !l.ids.has(id), id);
      if (lane) {
        try {
          const grant = await this.#lanes.trying(lane, request, id);
          if (grant || !request.wait) return grant;
        } catch (error) {
          if (!request.wait || this.#closed || !isConnectionError(error)) throw translate(error, what());
        }
      }
    }
    return askAgain(request.signal, {
      once: () => this.#acquireOnce(request),
      // A wait whose connection broke (server restart, network) was never granted: ask
      // again on another connection, until the caller or the session gives up.
      retry: (error) => request.wait && !this.#closed && isConnectionError(error),
      fail: (error) => translate(error, what()),
      assertOpen: () => this.#assertOpen(),
      aborted: (signal) => this.#aborted(signal),
      firstDelayMs: 50,
    });
  }

  async release(grant: DriverGrant): Promise<void> {
    const g = grant as PgGrant;
    await releaseOnLane(g, BACKEND, () => this.#releaseStatement(g), translate);
  }

  async #releaseStatement(g: PgGrant): Promise<void> {
    const lane = g.lane;
    // An exclusive lock has no grant row: a bare unlock, prepared, is all it takes (and its
    // takeover record's tombstone, in the same statement, when it is tracked).
    const result =
      g.mode === "exclusive" && g.sem === null && g.recordVersion !== undefined
        ? await lane.query<{ o_pid: number }>(
            this.#releaseTracked,
            [g.key, this.#c.namespace, g.name, String(g.recordVersion)],
            this.#quickMs,
            `baton_untrack_${this.#c.settings.schema}`,
          )
        : g.mode === "exclusive" && g.sem === null
          ? await lane.query<{ o_pid: number }>(
              "SELECT pg_advisory_unlock($1) AS o_released, pg_backend_pid() AS o_pid",
              [g.key],
              this.#quickMs,
              "baton_unlock",
            )
          : await lane.query<{ o_pid: number }>(
              `SELECT * FROM ${this.#q}.release($1, $2, $3, $4, $5)`,
              [g.key, g.mode === "shared", this.#c.namespace, g.sem, g.turnstile],
              this.#quickMs,
            );
    lane.checkPid(result.rows[0]?.o_pid);
  }

  async convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    const g = grant as PgGrant;
    if (g.mode === mode) return;
    const lane = g.lane;
    if (g.released || !lane.grants.has(g)) throw notHeld({ backend: BACKEND });
    if (mode === "shared") {
      const result = await lane.query<{ o_pid: number }>(
        `SELECT * FROM ${this.#q}.downgrade($1)`,
        [g.key],
        this.#quickMs,
      );
      lane.checkPid(result.rows[0]?.o_pid);
      g.mode = "shared";
      return;
    }
    if (signal.aborted) return this.#aborted(signal);
    // The server's intent lock would refuse a second upgrader too, but later.
    await oneUpgradeAtATime(BACKEND, this.#queueName(g.id), () => this.#upgradeFrom(g, signal));
  }

  async #upgradeFrom(g: PgGrant, signal: AbortSignal): Promise<void> {
    const lane = g.lane;
    const begin = await lane.query<{ o_intent: string; o_ok: boolean; o_pid: number }>(
      `SELECT * FROM ${this.#q}.upgrade_begin($1, $2)`,
      [this.#c.namespace, g.name],
      this.#quickMs,
    );
    const started = begin.rows[0];
    lane.checkPid(started?.o_pid);
    if (!started?.o_ok) throw upgradeDeadlock({ backend: BACKEND });
    if (g.released) {
      await lane.query(`SELECT ${this.#q}.unlock_key($1)`, [started.o_intent], this.#quickMs);
      throw new InvalidStateError("the lock was released while its upgrade was starting");
    }
    try {
      await asPendingUpgrade(g, signal, (upgrade) => this.#upgrade(g, started.o_intent, upgrade));
    } catch (error) {
      if (error === signal.reason) return this.#aborted(signal);
      throw error;
    }
  }

  async #upgrade(g: PgGrant, intent: string, signal: AbortSignal): Promise<void> {
    const lane = g.lane;
    const abort = (keepIntent: boolean) =>
      lane.query(`SELECT * FROM ${this.#q}.upgrade_abort($1, $2, $3)`, [g.key, intent, keepIntent], this.#quickMs);
    for (;;) {
      let waited: Awaited<ReturnType<Lane["wait"]>>;
      try {
        waited = await lane.wait<{ o_token: string; o_pid: number }>(
          `SELECT * FROM ${this.#q}.upgrade_wait($1, $2, $3)`,
          [g.key, intent, lane.epoch],
          signal,
          true,
        );
      } catch (error) {
        if (lane.connection.alive) await abort(false).catch((e: unknown) => lane.connection.destroy(e as Error));
        throw sqlState(error) === SQLSTATE.deadlock
          ? new DeadlockError(`upgrading lock "${g.name}": PostgreSQL detected a deadlock`, {
              backend: BACKEND,
              cause: error,
            })
          : translate(error, `upgrading lock "${g.name}"`);
      }
      if (waited.outcome === "done") {
        const row = waited.result.rows[0] as { o_token: string; o_pid: number } | undefined;
        lane.checkPid(row?.o_pid);
        g.token = BigInt(row?.o_token ?? "0");
        g.mode = "exclusive";
        if (signal.aborted) {
          // Granted as the cancel arrived: back to shared, as cancellation promises.
          await lane.query(`SELECT * FROM ${this.#q}.downgrade($1)`, [g.key], this.#quickMs);
          g.mode = "shared";
          throw signal.reason;
        }
        return;
      }
      try {
        await abort(waited.outcome === "preempted");
      } catch (error) {
        lane.connection.destroy(error as Error);
        throw translate(error, `upgrading lock "${g.name}"`);
      }
      if (waited.outcome === "aborted") throw signal.reason;
      // Preempted by another statement for this lane: ask again (still ahead of waiters).
    }
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    this.#assertOpen();
    try {
      await this.#c.control.query(
        `INSERT INTO ${this.#q}.records AS r (namespace, space, key, value, session_id, created_at)
         VALUES ($1, $2, $3, $4, $5, ${this.#q}.now_ms())
         ON CONFLICT (namespace, space, key) DO UPDATE SET value = excluded.value, session_id = excluded.session_id,
           created_at = CASE WHEN r.session_id = excluded.session_id THEN r.created_at ELSE excluded.created_at END`,
        [this.#c.namespace, space, key, value, this.id],
      );
    } catch (error) {
      const translated = translate(error, `storing ${space}/${key}`);
      if (translated instanceof SessionExpiredError) this.#hooks.onLost(translated);
      throw translated;
    }
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    await this.#c.control.query(
      `DELETE FROM ${this.#q}.records WHERE namespace = $1 AND space = $2 AND key = $3 AND session_id = $4`,
      [this.#c.namespace, space, key, this.id],
    );
  }

  /**
   * Ends the session: closes its lanes (the server frees their locks at once) and deletes
   * its row (and with it its records, which notifies watchers).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lanes = this.#pool.close();
    // A backend blocked in a lock wait does not read its socket: end it from the server side.
    const waiting = lanes.filter((lane) => lane.alive && !lane.usable).map((lane) => lane.pid);
    for (const lane of lanes) lane.closing = true;
    await Promise.allSettled([
      waiting.length > 0
        ? this.#c.control.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [waiting], 2000)
        : null,
      ...lanes.map((lane) => lane.close()),
      this.#c.control.query(`DELETE FROM ${this.#q}.sessions WHERE id = $1`, [this.id]),
    ]);
  }

  /** Rejects with the abort reason (a coordinator's close waits for acquisitions to end: core.ts). */
  async #aborted(signal: AbortSignal): Promise<never> {
    throw signal.reason;
  }

  /** A queue's name, unique in this process across servers, schemas and namespaces. */
  #queueName(id: string): string {
    return `${this.#c.settings.target}\u0000${this.#c.settings.schema}\u0000${this.#c.namespace}\u0000${id}`;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(`session ${this.id} is closed`, { backend: BACKEND });
  }

  async #acquireOnce(request: AcquireRequest): Promise<PgGrant | null> {
    const id = `${request.kind}\u0000${request.name}`;
    const fast = (lane: Lane) => lane.usable && !lane.ids.has(id);
    if (!request.wait) {
      const lane = this.#pool.reserve(fast, id) ?? (await this.#pool.obtain(fast, id, request.signal));
      return this.#lanes.trying(lane, request, id);
    }
    const tried = new Set<Lane>();
    for (;;) {
      if (request.signal.aborted) throw request.signal.reason;
      this.#assertOpen();
      // One round trip when a lane is free for a blocking acquisition (it tries first).
      const empty = this.#pool.reserve((lane) => lane.empty, id);
      if (empty) return this.#lanes.blocking(empty, request, id);
      // Else try where it costs no connection; once per lane per change, so that a wait
      // queued here (connections exhausted) still notices the lock has become free.
      const other = this.#pool.reserve((lane) => fast(lane) && !tried.has(lane), id);
      if (other) {
        tried.add(other);
        const grant = await this.#lanes.trying(other, request, id);
        if (grant) return grant;
        continue;
      }
      const opened = await this.#pool.openReserved(id);
      if (opened) return this.#lanes.blocking(opened, request, id);
      // Connections exhausted: wait server-side on a lane that holds grants, preemptibly, so
      // that its pings and releases are never held up (the wait then asks again).
      const busy = this.#pool.reserve(fast, id);
      if (busy) {
        const grant = await this.#lanes.blocking(busy, request, id, true);
        if (grant) return grant;
        continue;
      }
      await this.#c.budget.changed.wait(request.signal);
      tried.clear();
    }
  }
}
