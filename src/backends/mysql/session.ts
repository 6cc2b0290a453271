import { randomBytes, randomUUID } from "node:crypto";
import type { AcquireRequest, DriverGrant, DriverSession, LockMode, SessionHooks } from "../../core/driver.js";
import { ClosedError, SessionExpiredError } from "../../core/errors.js";
import { notHeld } from "../../core/refusals.js";
import type { ConnectionBudget } from "../sql/budget.js";
import type { CreateConnection, MyConnection } from "./connection.js";
import type { Control } from "./control.js";
import { ConnectionLostError, ERRNO, errno, isConnectionError, translate } from "./errors.js";
import { BACKEND } from "./options.js";
import { type Lane, laneFactory, type MyGrant, type WaitRow } from "./lane.js";
import { asPendingUpgrade, askAgain, grantFields, onLane, oneUpgradeAtATime, releaseOnLane } from "../sql/grants.js";
import { LanePool } from "../sql/lane-pool.js";
import type { MysqlSettings } from "./options.js";
import { nameHash } from "./schema.js";
import type { TakeoverRecords, TrackedRecord } from "./takeover.js";

/** What every session of one coordinator shares. */
export interface SessionContext {
  readonly create: CreateConnection;
  readonly settings: MysqlSettings;
  readonly control: Control;
  readonly budget: ConnectionBudget;
  readonly namespace: string;
  readonly memberId: string;
  readonly ttlMs: number;
  readonly records: TakeoverRecords;
}

/**
 * How long one server-side wait lasts before the client asks again. A client that died
 * silently stops asking, so its connection goes idle and `wait_timeout` ends it.
 */
const chunkMs = (ttlMs: number) => Math.max(1000, Math.min(ttlMs, 10_000));

/**
 * How often a semaphore waiter looks again besides its wake-up: a permit freed by a holder
 * other than the one it sleeps on releases nothing it can wait for.
 */
const SEM_POLL_MS = 50;
/**
 * A waiter's poll interval: {@link SEM_POLL_MS} for a semaphore of limit 2 or more, else the
 * whole chunk (no poll). A limit-1 semaphore's waiter is granted only once every live entry
 * ahead of it is gone, so sleeping on the first of them misses nothing, as a lock's does.
 */
const pollMs = (request: AcquireRequest, chunk: number) =>
  request.kind === "semaphore" && request.limit > 1 ? SEM_POLL_MS : chunk;
/**
 * How often a blocking acquisition tries again while every lane holds grants and the
 * connection budget is spent (see #acquireOnce).
 */
const EXHAUSTED_RETRY_MS = 200;

/** Random per process: keys of two processes, or of two runs of one, never meet. */
const KEY_PREFIX = `baton:${randomBytes(12).toString("hex")}:`;
let keys = 0;

/**
 * A fresh GET_LOCK key for one entry, never used before on any server, so it names nothing
 * (42 characters at most; the server allows 64). A counter rather than 16 random bytes per
 * key: those cost a synchronous call into the crypto library on every acquisition.
 */
const entryKey = () => `${KEY_PREFIX}${(++keys).toString(36)}`;

/**
 * One Baton session: a row in `sessions` (lease renewed by keep-alives, bound records)
 * and the lanes (connections) holding its entries. See docs/backends/mysql.md.
 */
export class MySession implements DriverSession {
  readonly id: string;
  readonly #c: SessionContext;
  readonly #hooks: SessionHooks;
  readonly #p: string;
  readonly #pool: LanePool<MyConnection, Lane>;
  #closed = false;

  private constructor(context: SessionContext, hooks: SessionHooks, id: string) {
    this.id = id;
    this.#c = context;
    this.#hooks = hooks;
    this.#p = context.settings.prefix;
    this.#pool = new LanePool(laneFactory(context, id), id);
  }

  /** Creates the session row; its lease starts now, on the server's clock. */
  static async open(context: SessionContext, hooks: SessionHooks): Promise<MySession> {
    const id = randomUUID();
    await context.control.query(
      `INSERT INTO ${context.settings.prefix}sessions (id, namespace, member_id, ttl_ms, expires_at)
       VALUES (?, ?, ?, ?, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) + ?)`,
      [id, context.namespace, context.memberId, context.ttlMs, context.ttlMs],
    );
    return new MySession(context, hooks, id);
  }

  get #quickMs(): number {
    return this.#c.control.timeoutMs;
  }

  /**
   * Renews the lease, ends expired sessions (killing their connections), and proves every
   * lock-holding connection still answers: the server drops a silent one (freeing its
   * locks) no sooner than ttl + 2 s after it last heard from it, so locks on a lane whose
   * ping fails are reported lost before that.
   */
  async keepAlive(): Promise<void> {
    if (this.#closed) throw new SessionExpiredError(`session ${this.id} is closed`, { backend: BACKEND });
    const pings = this.#pool.all
      .filter((lane) => lane.alive && lane.grants.size > 0 && !lane.waiting)
      .map((lane) => lane.query("DO 1", [], this.#quickMs).catch(() => {}));
    const [beat] = await Promise.all([
      this.#c.control.query<{ alive: number | string; conns: string | null }>(`CALL ${this.#p}heartbeat(?, ?)`, [
        this.id,
        this.#c.ttlMs,
      ]),
      ...pings,
    ]);
    const row = beat[0];
    for (const conn of row?.conns?.split(",") ?? [])
      if (/^\d+$/.test(conn)) await this.#c.control.killLane(Number(conn));
    if (Number(row?.alive ?? 0) !== 1) {
      throw new SessionExpiredError(`session ${this.id} expired on the server (no heartbeat within its TTL)`, {
        backend: BACKEND,
      });
    }
  }

  async acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    const what = () => `acquiring ${request.kind} "${request.name}"`;
    return askAgain(request.signal, {
      once: () => this.#acquireOnce(request),
      // A wait whose connection broke (server restart, network) was never granted: ask
      // again on another connection, until the caller or the session gives up.
      // An InnoDB deadlock rolled the request's transaction back, so it holds nothing: ask
      // again (a few times). GET_LOCK waits cannot form a cycle here: they run only on
      // connections that hold nothing else.
      retry: (error, attempt) =>
        !this.#closed && (errno(error) === ERRNO.deadlock ? attempt < 5 : request.wait && isConnectionError(error)),
      fail: (error) => translate(error, what()),
      assertOpen: () => this.#assertOpen(),
      aborted: (signal) => this.#aborted(signal),
      firstDelayMs: 20,
    });
  }

  async release(grant: DriverGrant): Promise<void> {
    const g = grant as MyGrant;
    await releaseOnLane(
      g,
      BACKEND,
      async () => {
        // A tracked holding's record goes in the same call, at the version it claimed.
        if (g.recordVersion === undefined) await g.lane.query(`CALL ${this.#p}withdraw(?)`, [g.key], this.#quickMs);
        else {
          await g.lane.query(
            `CALL ${this.#p}release_tracked(?, ?, ?)`,
            [g.key, g.ckey ?? this.#c.records.key(g.name), String(g.recordVersion)],
            this.#quickMs,
          );
        }
      },
      translate,
    );
  }

  async convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    const g = grant as MyGrant;
    if (g.mode === mode) return;
    if (g.released || !g.lane.grants.has(g)) throw notHeld({ backend: BACKEND });
    if (mode === "shared") {
      await this.#setMode(g, "shared");
      g.mode = "shared";
      return;
    }
    if (signal.aborted) return this.#aborted(signal);
    const queue = `${this.#c.settings.target}\u0000${this.#p}\u0000${this.#c.namespace}\u0000${g.id}`;
    await oneUpgradeAtATime(BACKEND, queue, async () => {
      await this.#setMode(g, "upgrading");
      try {
        await asPendingUpgrade(g, signal, (upgrade) => this.#upgrade(g, upgrade));
      } catch (error) {
        if (error === signal.reason) return this.#aborted(signal);
        throw error;
      }
    });
  }

  async #upgrade(g: MyGrant, signal: AbortSignal): Promise<void> {
    try {
      const waited = await g.lane.wait(
        null,
        `CALL ${this.#p}wait(?, ?, ?)`,
        [g.key, chunkMs(this.#c.ttlMs), SEM_POLL_MS],
        signal,
      );
      if (waited.outcome === "gone") throw new ConnectionLostError("the lock's entry vanished during the upgrade");
      g.token = waited.token;
      g.mode = "exclusive";
      if (signal.aborted) throw signal.reason;
    } catch (error) {
      // Back to exactly shared, as cancellation promises (also when granted as it arrived).
      if (g.lane.connection.alive) {
        await this.#setMode(g, "shared").catch((e: unknown) => g.lane.connection.destroy(e as Error));
      }
      g.mode = "shared";
      throw error === signal.reason ? error : translate(error, `upgrading lock "${g.name}"`);
    }
  }

  /** Changes a granted entry's mode under a new key (which wakes whoever waited on the old one). */
  async #setMode(g: MyGrant, mode: "shared" | "upgrading"): Promise<void> {
    const next = entryKey();
    try {
      await g.lane.query(`CALL ${this.#p}mode(?, ?, ?)`, [g.key, next, mode], this.#quickMs);
    } catch (error) {
      throw translate(error, `changing lock "${g.name}" to ${mode}`);
    }
    g.key = next;
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    this.#assertOpen();
    const ns = this.#c.namespace;
    try {
      await this.#c.control.query(
        `INSERT INTO ${this.#p}records (rkey, sp, namespace, space, rname, value, session_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000))
         ON DUPLICATE KEY UPDATE value = VALUES(value),
           created_at = IF(session_id = VALUES(session_id), created_at, VALUES(created_at)),
           session_id = VALUES(session_id)`,
        [nameHash(ns, space, key), nameHash(ns, space), ns, space, key, value, this.id],
      );
    } catch (error) {
      const translated = translate(error, `storing ${space}/${key}`);
      if (translated instanceof SessionExpiredError) this.#hooks.onLost(translated);
      throw translated;
    }
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    await this.#c.control.query(`DELETE FROM ${this.#p}records WHERE rkey = ? AND session_id = ?`, [
      nameHash(this.#c.namespace, space, key),
      this.id,
    ]);
  }

  /**
   * Ends the session: closes its lanes (the server frees their locks at once) and deletes
   * its records and its row.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lanes = this.#pool.close();
    // A connection blocked in a wait does not read its socket: end it from the server side.
    const waiting = lanes.filter((lane) => lane.alive && lane.waiting).map((lane) => lane.connection.id);
    for (const lane of lanes) lane.closing = true;
    await Promise.allSettled([
      ...waiting.map((id) => this.#c.control.kill(id)),
      ...lanes.map((lane) => lane.close()),
      // Records first and explicitly: a foreign-key cascade would not log their deletion.
      this.#c.control
        .query(`DELETE FROM ${this.#p}records WHERE session_id = ?`, [this.id])
        .then(() => this.#c.control.query(`DELETE FROM ${this.#p}sessions WHERE id = ?`, [this.id])),
    ]);
  }

  /** Rejects with the abort reason (a coordinator's close waits for acquisitions to end: core.ts). */
  async #aborted(signal: AbortSignal): Promise<never> {
    throw signal.reason;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(`session ${this.id} is closed`, { backend: BACKEND });
  }

  async #acquireOnce(request: AcquireRequest): Promise<MyGrant | null> {
    const id = `${request.kind}\u0000${request.name}`;
    const fits = (l: Lane) => l.usable && !l.ids.has(id);
    if (!request.wait) return this.#acquireOn(await this.#pool.obtain(fits, id, request.signal), request, id, false);
    // A wait runs only on a lane that holds nothing: a connection that holds a lock while
    // it waits in GET_LOCK is an edge in the server's deadlock graph that the application
    // never asked for. So: an empty lane (its call tries first, one round trip); else a try
    // on a lane that holds grants (a connection holds any number of locks); else a new
    // lane within the budget. With every connection holding something, the tries are made
    // again whenever a lane changes, and at least every EXHAUSTED_RETRY_MS (a release in
    // another process tells this one nothing): the one case that polls, and only until a
    // lane empties. Without that, a coordinator holding a lock on each of its lanes could
    // not take one more, not even a free one.
    const tried = new Set<Lane>();
    for (;;) {
      if (request.signal.aborted) throw request.signal.reason;
      this.#assertOpen();
      const empty = this.#pool.reserve((l) => l.empty && !l.ids.has(id), id);
      if (empty) return this.#acquireOn(empty, request, id, true);
      const busy = this.#pool.reserve((l) => fits(l) && !tried.has(l), id);
      if (busy) {
        tried.add(busy);
        const grant = await this.#acquireOn(busy, request, id, false);
        if (grant) return grant;
        continue;
      }
      const opened = await this.#pool.openOrNull(id, request.signal);
      if (opened) return this.#acquireOn(opened, request, id, true);
      const step = AbortSignal.any([request.signal, AbortSignal.timeout(EXHAUSTED_RETRY_MS)]);
      await this.#c.budget.changed.wait(step).catch(() => {
        if (request.signal.aborted) throw request.signal.reason;
      });
      tried.clear();
    }
  }

  /** One acquisition's call on a lane reserved for it: a try, or a wait (`wait`). */
  async #acquireOn(lane: Lane, request: AcquireRequest, id: string, wait: boolean): Promise<MyGrant | null> {
    let grant: MyGrant | null = null;
    const key = entryKey();
    const ns = this.#c.namespace;
    // A tracked request: the _tracked procedures write its record with the grant.
    const tracked = this.#c.records.of(request);
    const [suffix, more, marks] = tracked ? ["_tracked", this.#c.records.params(tracked), ", ?, ?, ?"] : ["", [], ""];
    // A tracked request's connection, dropped (a statement timed out, a wait that would not
    // end), stays open until its record is dropped (#withdraw), for the first delete's bound
    // and a second more at most.
    const hold = tracked ? lane.connection.hold(this.#quickMs + 1000) : undefined;
    const params = [
      nameHash(ns, request.kind, request.name),
      ns,
      request.kind,
      request.name,
      request.mode,
      request.limit,
      key,
      this.id,
      this.#c.memberId,
    ];
    try {
      if (!wait) {
        const [row] = await lane.connection.query<WaitRow>(
          `CALL ${this.#p}acquire${suffix}(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0${marks})`,
          [...params, ...more],
          this.#quickMs,
        );
        if (row?.token) grant = this.#grant(lane, request, id, key, BigInt(row.token), tracked, row);
        return grant;
      }
      const chunk = chunkMs(this.#c.ttlMs);
      const waited = await lane.wait(
        {
          sql: `CALL ${this.#p}acquire${suffix}(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?${marks})`,
          params: [...params, chunk, pollMs(request, chunk), ...more],
        },
        `CALL ${this.#p}wait${suffix}(?, ?, ?${marks})`,
        [key, chunk, pollMs(request, chunk), ...more],
        request.signal,
      );
      if (waited.outcome === "gone") throw new ConnectionLostError("the request's entry vanished while it waited");
      grant = this.#grant(lane, request, id, key, waited.token, tracked, waited.row);
      // Granted as the cancel arrived: withdrawn below, as the signal asks.
      if (request.signal.aborted) throw request.signal.reason;
      return grant;
    } catch (error) {
      await this.#withdraw(lane, key, grant, tracked, hold);
      grant = null;
      throw error;
    } finally {
      hold?.();
      lane.reservations--;
      if (!grant) lane.ids.delete(id);
      if (lane.usable) lane.changed();
    }
  }

  /**
   * After a failed or withdrawn acquisition: frees whatever the request left on the server.
   * A tracked request's grant that was never handed out was not lost either: the record it
   * may have written goes too (a lost holder's it found stays). A tracked request's dropped
   * connection is still open (`hold`, let go by dropOrphan once the record is gone): while
   * it holds the grant nobody else is granted the lock, so nobody reads the record.
   */
  async #withdraw(
    lane: Lane,
    key: string,
    grant: MyGrant | null,
    tracked: TrackedRecord | undefined,
    hold: (() => void) | undefined,
  ): Promise<void> {
    if (grant) {
      grant.released = true;
      lane.grants.delete(grant);
    }
    const end = hold ?? (() => {});
    if (!lane.connection.alive) {
      if (tracked) await this.#c.records.dropOrphan(key, tracked.ckey, lane.connection.id, end);
      return;
    }
    try {
      // A failed statement may have left its transaction (and the queue row's lock) open.
      await lane.connection.query("ROLLBACK", [], this.#quickMs);
      if (tracked) {
        await lane.connection.query(`CALL ${this.#p}release_tracked(?, ?, NULL)`, [key, tracked.ckey], this.#quickMs);
      } else await lane.connection.query(`CALL ${this.#p}withdraw(?)`, [key], this.#quickMs);
    } catch (error) {
      // Cannot tell what is held: dropping the connection frees it all.
      lane.connection.destroy(error as Error);
      if (tracked) await this.#c.records.dropOrphan(key, tracked.ckey, lane.connection.id, end);
    }
  }

  #grant(
    lane: Lane,
    request: AcquireRequest,
    id: string,
    key: string,
    token: bigint,
    tracked: TrackedRecord | undefined,
    row: WaitRow,
  ): MyGrant {
    const grant: MyGrant = { ...grantFields(lane, request, id, token), key };
    if (tracked) {
      grant.ckey = tracked.ckey;
      this.#c.records.apply(grant, row);
    }
    return onLane(grant, () => new ConnectionLostError("the MySQL connection was lost just after the grant"));
  }
}
