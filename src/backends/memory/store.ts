import { SessionExpiredError } from "../../core/errors.js";
import { QueueTable } from "../../core/queue-table.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import { CellTable } from "./cells.js";
import { LiveRecords } from "./records.js";
import { BACKEND } from "./definition.js";

/** Who a queue entry belongs to. */
export interface HolderMeta {
  readonly sessionId: string;
  readonly memberId: string;
}

interface StoredSession {
  readonly id: string;
  readonly memberId: string;
  readonly ttlMs: number;
  expiresAt: number;
  timer: NodeJS.Timeout | null;
  readonly onLost: (error: Error) => void;
}

/**
 * The state one `memory://name` URL shares among the coordinators of this process: queues,
 * fencing counters, records and sessions with real TTL expiry. Exported for tests, which
 * may expire a session at will through {@link MemoryStore.expireSession}.
 */
export class MemoryStore {
  readonly name: string;
  // A holder per key, bumped in place: one map lookup per grant, not a lookup and a set.
  readonly #counters = new Map<string, { last: bigint }>();
  readonly table = new QueueTable<HolderMeta>((key) => {
    let counter = this.#counters.get(key);
    if (!counter) this.#counters.set(key, (counter = { last: 0n }));
    counter.last += 1n;
    return counter.last;
  });
  /** Durable (for the process's life) versioned keys, bound to no session. */
  readonly cells = new CellTable();
  /** Takeover records, live with their holdings or stored in `cells` (records.ts). */
  readonly records = new LiveRecords(this.cells, this.table);
  readonly #sessions = new Map<string, StoredSession>();
  readonly #records = new Map<string, Map<string, RecordEntry>>();
  readonly #watchers = new Map<string, Set<(event: RecordEvent) => void>>();
  #nextSession = 0;

  constructor(name: string) {
    this.name = name;
  }

  openSession(memberId: string, ttlMs: number, onLost: (error: Error) => void): string {
    const id = `${this.name || "default"}-${++this.#nextSession}`;
    const session: StoredSession = { id, memberId, ttlMs, expiresAt: 0, timer: null, onLost };
    this.#sessions.set(id, session);
    this.keepAlive(id);
    return id;
  }

  /** Extends the session's lease by its TTL. Throws if it already expired. */
  keepAlive(id: string): void {
    const session = this.#sessions.get(id);
    if (!session) throw new SessionExpiredError(`memory session ${id} has expired`, { backend: BACKEND });
    session.expiresAt = Date.now() + session.ttlMs;
    if (session.timer) clearTimeout(session.timer);
    // Unref'd: a lease's expiry must not keep the process alive by itself.
    session.timer = setTimeout(() => this.expireSession(id), session.ttlMs);
    session.timer.unref();
  }

  hasSession(id: string): boolean {
    return this.#sessions.has(id);
  }

  /**
   * Ends a session as if its lease ran out: first tells its owner (so its handles' signals
   * fire), then frees everything it held or stored, then grants waiters. Test hook.
   */
  expireSession(id: string): void {
    const session = this.#sessions.get(id);
    if (!session) return;
    const error = new SessionExpiredError(`memory session ${id} expired after ${session.ttlMs} ms without keep-alive`, {
      backend: BACKEND,
    });
    session.onLost(error);
    this.#endSession(session, error);
  }

  /** Ends a session cleanly (close): frees everything at once. */
  closeSession(id: string): void {
    const session = this.#sessions.get(id);
    if (session) this.#endSession(session, new SessionExpiredError(`memory session ${id} was closed`));
  }

  #endSession(session: StoredSession, error: Error): void {
    if (session.timer) clearTimeout(session.timer);
    this.#sessions.delete(session.id);
    // Before its locks are freed (and granted on): a successor must find the records.
    this.records.storeSession(session.id);
    this.table.removeWhere((meta) => meta.sessionId === session.id, error);
    for (const [space, entries] of this.#records) {
      for (const entry of [...entries.values()]) {
        if (entry.sessionId === session.id) this.deleteRecord(space, entry.key, session.id);
      }
    }
  }

  putRecord(space: string, key: string, value: string, sessionId: string): void {
    let entries = this.#records.get(space);
    if (!entries) {
      entries = new Map();
      this.#records.set(space, entries);
    }
    const previous = entries.get(key);
    const createdAt = previous?.sessionId === sessionId ? previous.createdAt : Date.now();
    const entry: RecordEntry = { key, value, sessionId, createdAt };
    entries.set(key, entry);
    this.#emit(space, { type: "put", entry });
  }

  deleteRecord(space: string, key: string, sessionId: string): void {
    const entries = this.#records.get(space);
    const entry = entries?.get(key);
    if (!entries || entry?.sessionId !== sessionId) return;
    entries.delete(key);
    if (entries.size === 0) this.#records.delete(space);
    this.#emit(space, { type: "delete", key });
  }

  listRecords(space: string): RecordEntry[] {
    return [...(this.#records.get(space)?.values() ?? [])];
  }

  recordSpaces(): { space: string; entries: RecordEntry[] }[] {
    return [...this.#records].map(([space, entries]) => ({ space, entries: [...entries.values()] }));
  }

  watch(space: string, listener: (event: RecordEvent) => void): () => void {
    let set = this.#watchers.get(space);
    if (!set) {
      set = new Set();
      this.#watchers.set(space, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#watchers.delete(space);
    };
  }

  #emit(space: string, event: RecordEvent): void {
    for (const listener of this.#watchers.get(space) ?? []) listener(event);
  }
}

const stores = new Map<string, MemoryStore>();

/** The process-wide store for `memory://name` (`""` for `memory://`). */
export function memoryStore(name: string): MemoryStore {
  let store = stores.get(name);
  if (!store) {
    store = new MemoryStore(name);
    stores.set(name, store);
  }
  return store;
}
