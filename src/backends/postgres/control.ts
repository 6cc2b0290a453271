import { abortable, onAbort } from "../../core/abortable.js";
import { createHash } from "node:crypto";
import type { Notification, QueryResult, QueryResultRow } from "pg";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import { ControlLink } from "../sql/control-link.js";
import { type ClientClass, PgConnection } from "./connection.js";
import type { PostgresSettings } from "./options.js";
import { migrate, quoteIdent } from "./schema.js";

/**
 * The coordinator's control connection: heartbeats, records, inspection, cancelling waits
 * on other connections, and LISTEN for the namespace's channel. It never holds a lock and
 * never blocks, so it is always free for those. Reconnects on demand; after a reconnect it
 * resynchronises watchers (events sent while it was away are lost) and wakes semaphore
 * queue heads.
 */
export class Control {
  readonly #settings: PostgresSettings;
  readonly #namespace: string;
  readonly #q: string;
  readonly #link: ControlLink<PgConnection>;
  #channel: string | null = null;
  #migrated = false;
  #generation = 0;
  /** Notifications and resyncs are handled one at a time, in arrival order. */
  #chain: Promise<void> = Promise.resolve();
  readonly #watchers = new Set<Watcher>();
  readonly #semaphores = new SemaphoreWakeups();
  /**
   * Cell watchers, called with the changed cell's space and key ('cell' NOTIFY events), or
   * with `null` after a reconnect (anything may have changed meanwhile: read again).
   */
  readonly cellChanges = new Set<(space: string, key: string) => void>();
  readonly cellResyncs = new Set<() => void>();
  /** Live backend pids of this coordinator's connections: two equal ones mean a pooler. */
  readonly pids = new Set<number>();

  constructor(Client: ClientClass, settings: PostgresSettings, ttlMs: number, namespace: string) {
    this.#settings = settings;
    this.#namespace = namespace;
    this.#q = quoteIdent(settings.schema);
    this.#link = new ControlLink<PgConnection>(
      {
        open: () => PgConnection.open(Client, settings.client, ttlMs),
        setup: (connection) => this.#setup(connection),
        adopted: (connection) => this.#adopted(connection),
      },
      ttlMs,
    );
  }

  /** Semaphore wake-ups (NOTIFY 'sem' events), for queue heads. */
  get semaphores(): SemaphoreWakeups {
    return this.#semaphores;
  }

  /** Default timeout of a control statement: a third of the TTL, at least 1 s. */
  get timeoutMs(): number {
    return this.#link.timeoutMs;
  }

  /** The connected control connection, connecting (and migrating, the first time) if needed. */
  connection(): Promise<PgConnection> {
    return this.#link.connection();
  }

  /** Runs a statement on the control connection (reconnecting if needed), with a timeout. */
  async query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    params: readonly unknown[] = [],
    timeoutMs = this.timeoutMs,
  ): Promise<QueryResult<R>> {
    const connection = await this.connection();
    return connection.query<R>(text, params, timeoutMs);
  }

  /**
   * Cancels `pid`'s statement only while it waits for an advisory lock, so a cancel that
   * arrives late cannot hit the statement after it.
   */
  async cancelWait(pid: number): Promise<void> {
    await this.query(
      `SELECT pg_cancel_backend(pid) FROM pg_stat_activity
       WHERE pid = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'`,
      [pid],
      2000,
    );
  }

  /**
   * Starts pushing `space`'s record events to `listener`; resolves with the snapshot. The
   * channel is LISTENed before the snapshot is read, and every event carries its
   * transaction id, so events already in the snapshot are dropped: no gap, no duplicate.
   */
  watch(space: string, listener: (event: RecordEvent) => void, signal: AbortSignal): Promise<RecordEntry[]> {
    return this.#enqueue(async () => {
      if (signal.aborted) return [];
      await this.connection();
      const { snapshot, entries } = await this.#snapshot(space);
      if (signal.aborted) return entries;
      const watcher: Watcher = { space, listener, snapshot, known: new Map(entries.map((e) => [e.key, e])) };
      this.#watchers.add(watcher);
      onAbort(signal, () => this.#watchers.delete(watcher));
      return entries;
    });
  }

  /** Resolves once {@link close} has finished. */
  get closed(): Promise<void> {
    return this.#link.closed;
  }

  /** Closes the connection for good. */
  close(): Promise<void> {
    if (!this.#link.isClosed) this.#watchers.clear();
    return this.#link.close();
  }

  /** Migrates (the first time), learns the namespace's channel and LISTENs on it. */
  async #setup(connection: PgConnection): Promise<void> {
    if (!this.#migrated) {
      await migrate(connection, this.#settings.schema, migrateKey(this.#settings.schema));
      this.#migrated = true;
    }
    if (this.#channel === null) {
      const result = await connection.query<{ channel: string }>(`SELECT ${this.#q}.channel($1) AS channel`, [
        this.#namespace,
      ]);
      this.#channel = result.rows[0]?.channel ?? null;
    }
    connection.client.on("notification", (message) => this.#onNotification(message));
    await connection.query(`LISTEN ${quoteIdent(this.#channel ?? "baton")}`, [], this.timeoutMs);
  }

  #adopted(connection: PgConnection): void {
    this.pids.add(connection.pid);
    connection.onDeath(() => this.pids.delete(connection.pid));
    if (this.#generation++ > 0) {
      // Whatever was notified while we were away is lost: resync and wake queue heads.
      this.#semaphores.wakeAll();
      for (const resync of this.cellResyncs) resync();
      void this.#enqueue(() => this.#resyncAll()).catch(() => {});
    }
  }

  #onNotification(message: Notification): void {
    let event: NotifyPayload;
    try {
      event = JSON.parse(message.payload ?? "") as NotifyPayload;
    } catch {
      return;
    }
    if (event.t === "sem") {
      this.#semaphores.wake(event.k);
      return;
    }
    if (event.t === "cell") {
      if (typeof event.s !== "string" || typeof event.k !== "string") return;
      for (const listener of this.cellChanges) listener(event.s, event.k);
      return;
    }
    void this.#enqueue(() => this.#dispatch(event)).catch(() => {});
  }

  async #dispatch(event: RecordPayload): Promise<void> {
    const watchers = [...this.#watchers].filter((w) => w.space === event.s);
    if (watchers.length === 0) return;
    const xid = BigInt(event.x);
    let entry: RecordEntry | null | undefined;
    for (const watcher of watchers) {
      if (visible(xid, watcher.snapshot)) continue;
      if (event.t === "del") {
        watcher.known.delete(event.k);
        watcher.listener({ type: "delete", key: event.k });
        continue;
      }
      if (entry === undefined) entry = event.big ? await this.#fetch(event.s, event.k) : payloadEntry(event);
      // Too big to notify and already gone: its delete event follows.
      if (entry === null) continue;
      watcher.known.set(entry.key, entry);
      watcher.listener({ type: "put", entry });
    }
  }

  async #resyncAll(): Promise<void> {
    for (const watcher of [...this.#watchers]) {
      const { snapshot, entries } = await this.#snapshot(watcher.space);
      const fresh = new Map(entries.map((e) => [e.key, e]));
      for (const key of [...watcher.known.keys()]) {
        if (!fresh.has(key)) watcher.listener({ type: "delete", key });
      }
      for (const entry of entries) {
        const old = watcher.known.get(entry.key);
        if (
          !old ||
          old.value !== entry.value ||
          old.sessionId !== entry.sessionId ||
          old.createdAt !== entry.createdAt
        ) {
          watcher.listener({ type: "put", entry });
        }
      }
      watcher.known = fresh;
      watcher.snapshot = snapshot;
    }
  }

  async #snapshot(space: string): Promise<{ snapshot: Snapshot; entries: RecordEntry[] }> {
    // One statement, so the rows and the snapshot description come from one snapshot.
    const result = await this.query<{ snap: string; entries: RecordRow[] }>(
      `SELECT txid_current_snapshot()::text AS snap,
         coalesce((SELECT json_agg(json_build_object('key', key, 'value', value, 'session_id', session_id,
           'created_at', created_at) ORDER BY created_at, key)
           FROM ${this.#q}.records WHERE namespace = $1 AND space = $2), '[]'::json) AS entries`,
      [this.#namespace, space],
    );
    const row = result.rows[0];
    if (!row) throw new Error("snapshot query returned nothing");
    return { snapshot: parseSnapshot(row.snap), entries: row.entries.map(toEntry) };
  }

  async #fetch(space: string, key: string): Promise<RecordEntry | null> {
    const result = await this.query<RecordRow>(
      `SELECT key, value, session_id, created_at FROM ${this.#q}.records WHERE namespace = $1 AND space = $2 AND key = $3`,
      [this.#namespace, space, key],
    );
    const row = result.rows[0];
    return row ? toEntry(row) : null;
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(task);
    this.#chain = run.then(
      () => {},
      () => {},
    );
    return run;
  }
}

/** Wakes semaphore queue heads when a permit of their semaphore is freed. */
export class SemaphoreWakeups {
  readonly #interests = new Map<string, { refs: number; version: number; waiters: Set<() => void> }>();

  /**
   * Registers interest in `base` (a head, before its first scan) until `dispose()`:
   * `version()` changes whenever a permit of it may have been freed since.
   */
  interest(base: string): SemaphoreInterest {
    let state = this.#interests.get(base);
    if (!state) {
      state = { refs: 0, version: 0, waiters: new Set() };
      this.#interests.set(base, state);
    }
    state.refs++;
    const current = state;
    let disposed = false;
    return {
      version: () => current.version,
      changed: (seen, signal) => {
        if (current.version !== seen) return Promise.resolve();
        return abortable<void>(signal, (resolve) => {
          const done = () => resolve();
          current.waiters.add(done);
          return () => current.waiters.delete(done);
        });
      },
      dispose: () => {
        if (disposed) return;
        disposed = true;
        if (--current.refs === 0) this.#interests.delete(base);
      },
    };
  }

  wake(base: string): void {
    const state = this.#interests.get(base);
    if (!state) return;
    state.version++;
    for (const done of [...state.waiters]) done();
  }

  wakeAll(): void {
    for (const base of [...this.#interests.keys()]) this.wake(base);
  }
}

/** See {@link SemaphoreWakeups.interest}. */
export interface SemaphoreInterest {
  version(): number;
  /** Resolves once the version differs from `seen`; rejects with `signal.reason` on abort. */
  changed(seen: number, signal: AbortSignal): Promise<void>;
  dispose(): void;
}

interface Watcher {
  readonly space: string;
  readonly listener: (event: RecordEvent) => void;
  snapshot: Snapshot;
  known: Map<string, RecordEntry>;
}

interface Snapshot {
  readonly xmin: bigint;
  readonly xmax: bigint;
  readonly xip: ReadonlySet<bigint>;
}

interface RecordRow {
  key: string;
  value: string;
  session_id: string;
  created_at: string | number;
}

interface RecordPayload {
  t: "put" | "del";
  s: string;
  k: string;
  x: string;
  id?: string;
  c?: number;
  v?: string;
  big?: boolean;
}

type NotifyPayload = RecordPayload | { t: "sem"; k: string } | { t: "cell"; s: unknown; k: unknown };

function parseSnapshot(text: string): Snapshot {
  const [xmin = "0", xmax = "0", xip = ""] = text.split(":");
  return { xmin: BigInt(xmin), xmax: BigInt(xmax), xip: new Set(xip ? xip.split(",").map((x) => BigInt(x)) : []) };
}

/** Whether transaction `xid`'s effects are in `snapshot` (txid_visible_in_snapshot). */
function visible(xid: bigint, snapshot: Snapshot): boolean {
  if (xid < snapshot.xmin) return true;
  if (xid >= snapshot.xmax) return false;
  return !snapshot.xip.has(xid);
}

/** @internal */
export function toEntry(row: RecordRow): RecordEntry {
  return { key: row.key, value: row.value, sessionId: row.session_id, createdAt: Number(row.created_at) };
}

function payloadEntry(event: RecordPayload): RecordEntry {
  return { key: event.k, value: event.v ?? "null", sessionId: event.id ?? "", createdAt: Number(event.c ?? 0) };
}

/** The advisory transaction-lock key that serialises migrations of one schema. */
function migrateKey(schema: string): string {
  return createHash("sha256").update(`baton-migrate\u001f${schema}`).digest().readBigInt64BE(0).toString();
}
