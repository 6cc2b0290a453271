/**
 * Records (group members, election leaders) and their watches. MySQL has no LISTEN/NOTIFY,
 * so a watch reads the records' change log every {@link POLL_MS}: the backend declares
 * `pushEvents: false`. One reader per space per coordinator, however many watches share it.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { MyConnection } from "./connection.js";
import type { Control } from "./control.js";
import { nameHash } from "./schema.js";

/** How often a watched space is read again. */
export const POLL_MS = 100;

interface RecordRow {
  rname: string;
  value: string;
  session_id: string;
  created_at: string | number;
}

/** The live records of `space` (of sessions whose lease has not run out), oldest first. */
export function listRecords(
  control: Control,
  prefix: string,
  namespace: string,
  space: string,
): Promise<RecordEntry[]> {
  return control.connection().then((connection) => listRecordsOn(connection, prefix, namespace, space));
}

async function listRecordsOn(
  connection: MyConnection,
  prefix: string,
  namespace: string,
  space: string,
): Promise<RecordEntry[]> {
  const rows = await connection.query<RecordRow>(
    `SELECT r.rname, r.value, r.session_id, r.created_at FROM ${prefix}records r
     JOIN ${prefix}sessions s ON s.id = r.session_id AND s.expires_at >= ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000)
     WHERE r.sp = ? ORDER BY r.created_at, r.rname`,
    [nameHash(namespace, space)],
  );
  return rows.map((row) => ({
    key: row.rname,
    value: row.value,
    sessionId: row.session_id,
    createdAt: Number(row.created_at),
  }));
}

interface EventRow {
  seq: string | number;
  op: string;
  rname: string;
  value: string | null;
  session_id: string | null;
  created_at: string | number | null;
  at: string | number;
}

interface SpaceReader {
  readonly listeners: Set<(event: RecordEvent) => void>;
  known: Map<string, RecordEntry>;
  /** Events at or below this seq were all applied (or were in the snapshot). */
  floor: number;
  /** Seqs above `floor` already applied, with when they were read. */
  readonly seen: Map<number, number>;
  timer: NodeJS.Timeout | null;
  /** Settles once the snapshot is read (every watch starts from it). */
  ready: Promise<void>;
}

/**
 * Events are numbered when written but may commit out of number order (two writers of one
 * space at once): each read looks back this far behind the newest event it has seen.
 */
const LATE_COMMIT_MS = 2000;

/**
 * Watches of record spaces: a snapshot, then the change log (`record_events`, written by
 * triggers) read every {@link POLL_MS} on a connection of their own, shared per space.
 */
export class RecordWatches {
  readonly #open: () => Promise<MyConnection>;
  readonly #prefix: string;
  readonly #namespace: string;
  readonly #spaces = new Map<string, SpaceReader>();
  #connection: Promise<MyConnection> | null = null;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(open: () => Promise<MyConnection>, prefix: string, namespace: string) {
    this.#open = open;
    this.#prefix = prefix;
    this.#namespace = namespace;
  }

  /** Starts pushing `space`'s changes to `listener`; resolves with the records now. */
  async watch(space: string, listener: (event: RecordEvent) => void, signal: AbortSignal): Promise<RecordEntry[]> {
    let reader = this.#spaces.get(space);
    if (!reader) {
      const fresh: SpaceReader = {
        listeners: new Set(),
        known: new Map(),
        floor: 0,
        seen: new Map(),
        timer: null,
        ready: Promise.resolve(),
      };
      fresh.ready = this.#serial(() => this.#snapshot(space, fresh)).then(
        () => this.#schedule(space, fresh),
        (error: unknown) => {
          if (this.#spaces.get(space) === fresh) this.#spaces.delete(space);
          throw error;
        },
      );
      reader = fresh;
      this.#spaces.set(space, fresh);
    }
    await reader.ready;
    const current = reader;
    const detach = () => {
      current.listeners.delete(listener);
      if (current.listeners.size === 0 && this.#spaces.get(space) === current) {
        if (current.timer) clearTimeout(current.timer);
        this.#spaces.delete(space);
      }
    };
    if (signal.aborted) {
      detach();
      return [...current.known.values()];
    }
    current.listeners.add(listener);
    onAbort(signal, detach);
    // Every listener starts from the reader's state, so its first event follows it without a gap.
    return [...current.known.values()];
  }

  /** Stops every watch and closes the connection. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const reader of this.#spaces.values()) if (reader.timer) clearTimeout(reader.timer);
    this.#spaces.clear();
    const connection = await this.#connection?.catch(() => null);
    await connection?.end();
  }

  /** One statement sequence at a time on the watch connection (snapshots are transactions). */
  #serial<T>(fn: (connection: MyConnection) => Promise<T>): Promise<T> {
    const run = this.#tail.then(async () => fn(await this.#conn()));
    this.#tail = run.catch(() => {});
    return run;
  }

  async #conn(): Promise<MyConnection> {
    if (this.#closed) throw new Error("the coordinator is closed");
    const existing = await this.#connection?.catch(() => null);
    if (existing?.alive) return existing;
    this.#connection = this.#open();
    return this.#connection;
  }

  /** The records and the log position, read in one consistent snapshot. */
  async #snapshot(space: string, reader: SpaceReader): Promise<void> {
    const connection = await this.#conn();
    const sp = nameHash(this.#namespace, space);
    await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    await connection.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
    try {
      const recent = await connection.query<{ seq: string | number }>(
        `SELECT seq FROM ${this.#prefix}record_events WHERE sp = ? AND at >= ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) - ?`,
        [sp, LATE_COMMIT_MS],
      );
      const [top] = await connection.query<{ seq: string | number | null }>(
        `SELECT MAX(seq) AS seq FROM ${this.#prefix}record_events`,
      );
      const entries = await listRecordsOn(connection, this.#prefix, this.#namespace, space);
      const now = Date.now();
      const seqs = recent.map((r) => Number(r.seq));
      reader.floor = seqs.length > 0 ? Math.min(...seqs) - 1 : Number(top?.seq ?? 0);
      for (const seq of seqs) reader.seen.set(seq, now);
      reader.known = new Map(entries.map((e) => [e.key, e]));
    } finally {
      await connection.query("COMMIT").catch(() => {});
    }
  }

  #schedule(space: string, reader: SpaceReader): void {
    reader.timer = setTimeout(() => void this.#poll(space, reader), POLL_MS);
    reader.timer.unref();
  }

  async #poll(space: string, reader: SpaceReader): Promise<void> {
    if (this.#spaces.get(space) !== reader) return;
    try {
      const rows = await this.#serial((connection) =>
        connection.query<EventRow>(
          `SELECT seq, op, rname, value, session_id, created_at, at FROM ${this.#prefix}record_events
           WHERE sp = ? AND seq > ? ORDER BY seq`,
          [nameHash(this.#namespace, space), reader.floor],
          10_000,
        ),
      );
      const now = Date.now();
      for (const row of rows) {
        const seq = Number(row.seq);
        if (reader.seen.has(seq)) continue;
        reader.seen.set(seq, now);
        const event = this.#apply(reader, row);
        if (event) for (const listener of [...reader.listeners]) listener(event);
      }
      // Seqs read long enough ago can no longer be overtaken by a late commit.
      for (const [seq, readAt] of reader.seen) {
        if (now - readAt > LATE_COMMIT_MS && seq <= Math.min(...reader.seen.keys())) {
          reader.floor = Math.max(reader.floor, seq);
          reader.seen.delete(seq);
        }
      }
    } catch {
      // The watch connection is down: the next poll reconnects and reads on.
    }
    if (this.#spaces.get(space) === reader) this.#schedule(space, reader);
  }

  #apply(reader: SpaceReader, row: EventRow): RecordEvent | null {
    if (row.op === "del") {
      if (!reader.known.delete(row.rname)) return null;
      return { type: "delete", key: row.rname };
    }
    const entry: RecordEntry = {
      key: row.rname,
      value: row.value ?? "null",
      sessionId: row.session_id ?? "",
      createdAt: Number(row.created_at ?? row.at),
    };
    reader.known.set(entry.key, entry);
    return { type: "put", entry };
  }
}
