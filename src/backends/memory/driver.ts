/**
 * `memory://[name]`: every coordinator of this process that names the same store acts as
 * an independent client of it, with real TTL expiry of sessions. It is **not** shared with
 * other processes: use it for tests and for coordinating tasks inside one process.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type {
  AcquireRequest,
  Driver,
  DriverContext,
  DriverGrant,
  DriverSession,
  ImmediateRequest,
  LockMode,
  QueueKind,
  RecordEntry,
  RecordEvent,
  SessionHooks,
} from "../../core/driver.js";
import { InvalidStateError } from "../../core/errors.js";
import type { QueueEntry } from "../../core/queue-table.js";
import { takeoverApart } from "../cell-calls.js";
import { memoryCells } from "./cells.js";
import { recordCells } from "./records.js";
import { type HolderMeta, type MemoryStore, memoryStore } from "./store.js";

// Names and namespaces cannot hold control characters, so NUL separates them unambiguously.
const SEP = "\u0000";

/**
 * The queue entry is the grant itself: its `token` and `mode` are what a grant reports, and
 * upgrades change them in place (one object per grant, not two).
 */
type MemoryGrant = QueueEntry<HolderMeta> & DriverGrant;

/**
 * A request to the store's table: the core's cancellation, watched without building its
 * AbortSignal (`signal` is read only without one). A class: an object literal with a getter
 * costs V8 about ten times a plain one.
 */
class TableRequest {
  readonly mode: LockMode;
  readonly limit: number;
  readonly wait: boolean;
  readonly meta: HolderMeta;
  readonly cancel: AcquireRequest["cancel"];
  readonly granted: ((entry: MemoryGrant) => void) | undefined;
  readonly #request: AcquireRequest;

  constructor(request: AcquireRequest, meta: HolderMeta, granted: ((entry: MemoryGrant) => void) | undefined) {
    this.mode = request.mode;
    this.limit = request.limit;
    this.wait = request.wait;
    this.meta = meta;
    this.cancel = request.cancel;
    this.granted = granted;
    this.#request = request;
  }

  get signal(): AbortSignal {
    return this.#request.signal;
  }
}

class MemorySession implements DriverSession {
  readonly id: string;
  readonly #store: MemoryStore;
  readonly #context: DriverContext;
  // A memory grant is only lost with its session, which the core already watches.
  readonly #meta: HolderMeta;
  /**
   * The last queue key made, by kind and name: a loop on one name then hands the table the
   * same string each time, whose hash V8 keeps, instead of a new one to build and hash.
   * One entry, so memory does not grow with the names used.
   */
  #lastKey = { kind: "", name: "", key: "" };

  constructor(store: MemoryStore, context: DriverContext, hooks: SessionHooks) {
    this.#store = store;
    this.#context = context;
    this.id = store.openSession(context.memberId, context.ttlMs, hooks.onLost);
    this.#meta = { sessionId: this.id, memberId: context.memberId };
  }

  async keepAlive(): Promise<void> {
    this.#store.keepAlive(this.id);
  }

  #key(kind: QueueKind, name: string): string {
    const last = this.#lastKey;
    if (last.name === name && last.kind === kind) return last.key;
    const key = queueKey(this.#context.namespace, kind, name);
    this.#lastKey = { kind, name, key };
    return key;
  }

  acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    const key = this.#key(request.kind, request.name);
    const { record } = request;
    // The takeover record is taken in the grant's own synchronous step (so atomically).
    const granted =
      record === undefined ? undefined : (entry: MemoryGrant) => this.#record(entry, request.name, record);
    try {
      return this.#store.table.acquire(key, new TableRequest(request, this.#meta, granted));
    } catch (error) {
      // A limit mismatch: a rejection, as from any driver.
      return Promise.reject(error);
    }
  }

  grantNow(request: ImmediateRequest): DriverGrant | null {
    const key = this.#key(request.kind, request.name);
    // A takeover found needs the core's async claim: not at once. (A lock's queue key is
    // its record's cell id.)
    if (request.record !== undefined && this.#store.records.hasStored(key)) return null;
    const entry: MemoryGrant | null = this.#store.table.grantNow(key, {
      mode: request.mode,
      limit: request.limit,
      meta: this.#meta,
    });
    if (entry && request.record !== undefined) {
      entry.recordVersion = this.#store.records.track(key, request.name, entry, request.record);
    }
    return entry;
  }

  async release(grant: DriverGrant): Promise<void> {
    this.releaseNow(grant);
  }

  releaseNow(grant: DriverGrant): void {
    const memoryGrant = grant as MemoryGrant;
    const { records } = this.#store;
    if (grant.recordVersion !== undefined && !records.untrack(memoryGrant.key, memoryGrant)) {
      // Written by the core (a takeover's claim): deleted at the version claimed. Only lock
      // grants have records; the key ends with the lock's name.
      const name = memoryGrant.key.slice(queueKey(this.#context.namespace, "lock", "").length);
      records.write(memoryGrant.key, name, null, { ifVersion: grant.recordVersion });
    }
    this.#store.table.release(memoryGrant);
  }

  /**
   * The takeover record, taken in the same synchronous step as the grant (so atomically):
   * kept live unless a stored record (a lost holding's) is there, which the grant carries.
   */
  #record(grant: MemoryGrant, name: string, record: string): void {
    // Granted as its session ends: the grant goes with it (records.storeSession ran first).
    if (!this.#store.hasSession(this.id)) return;
    const { records } = this.#store;
    const stored = records.hasStored(grant.key) ? records.get(grant.key) : null;
    if (stored) grant.previousRecord = stored;
    else grant.recordVersion = records.track(grant.key, name, grant, record);
  }

  async convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    await this.#store.table.convert(grant as MemoryGrant, mode, signal);
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    if (!this.#store.hasSession(this.id)) throw new InvalidStateError(`memory session ${this.id} has ended`);
    this.#store.putRecord(spaceKey(this.#context.namespace, space), key, value, this.id);
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    this.#store.deleteRecord(spaceKey(this.#context.namespace, space), key, this.id);
  }

  async close(): Promise<void> {
    this.#store.closeSession(this.id);
  }
}

function queueKey(namespace: string, kind: QueueKind, name: string): string {
  return `${namespace}${SEP}${kind}${SEP}${name}`;
}

function spaceKey(namespace: string, space: string): string {
  return `${namespace}${SEP}${space}`;
}

function stripNamespace(namespace: string, key: string): string | null {
  const prefix = `${namespace}${SEP}`;
  return key.startsWith(prefix) ? key.slice(prefix.length) : null;
}

/** Creates a memory driver. */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const store = memoryStore(decodeURIComponent(context.url.host + context.url.pathname.replace(/^\/$/, "")));
  const { namespace } = context;
  return {
    cells: takeoverApart(
      memoryCells(store.cells, namespace, SEP),
      recordCells(store.records, queueKey(namespace, "lock", "")),
    ),
    nativeRecords: true,
    async openSession(hooks) {
      return new MemorySession(store, context, hooks);
    },
    async listRecords(space): Promise<RecordEntry[]> {
      return store.listRecords(spaceKey(namespace, space));
    },
    async watchRecords(space, listener: (event: RecordEvent) => void, signal) {
      const stop = store.watch(spaceKey(namespace, space), listener);
      onAbort(signal, stop);
      return store.listRecords(spaceKey(namespace, space));
    },
    async inspect() {
      const queues = [];
      for (const queue of store.table.snapshot()) {
        const rest = stripNamespace(namespace, queue.key);
        if (rest === null) continue;
        const cut = rest.indexOf(SEP);
        queues.push({
          kind: rest.slice(0, cut) as QueueKind,
          name: rest.slice(cut + 1),
          limit: queue.limit,
          holders: queue.holders.map((h) => ({
            memberId: h.meta.memberId,
            sessionId: h.meta.sessionId,
            mode: h.mode,
            token: h.token,
            since: h.since,
          })),
          waiters: queue.waiters.map((w) => ({
            memberId: w.meta.memberId,
            sessionId: w.meta.sessionId,
            mode: w.mode,
            since: w.since,
          })),
        });
      }
      const records = [];
      for (const { space, entries } of store.recordSpaces()) {
        const rest = stripNamespace(namespace, space);
        if (rest !== null) records.push({ space: rest, entries });
      }
      return { queues, records };
    },
    async namespaces() {
      const keys = [...store.table.snapshot().map((q) => q.key), ...store.recordSpaces().map((r) => r.space)];
      return [...new Set(keys.map((key) => key.slice(0, key.indexOf(SEP))))];
    },
    async revokeSession(sessionId) {
      // As if its lease ran out: its owner is told first, then its grants are freed.
      store.expireSession(sessionId);
    },
    async close() {},
  };
}
