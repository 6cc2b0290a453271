/**
 * The backend seam. A backend is a {@link BackendDefinition} (data: name, URL schemes,
 * guarantees, the client library it loads) whose `load()` lazily imports a module that
 * makes a {@link Driver}. Everything user-facing (validation, handles, signals, timeouts,
 * sessions kept alive, groups, election, the partitioner, inspection) is written once in
 * `src/core/`; a driver only answers "grant this / free this / store this record / tell me
 * when records change", using its engine's native strength. See docs/architecture.md.
 *
 * @module
 */
import type { CancelWatch } from "./abortable.js";
import type { Guarantees } from "./guarantees.js";

/** Lock modes. Semaphores and elections always use `"exclusive"`. */
export type LockMode = "exclusive" | "shared";

/**
 * Which family a queue belongs to. The driver keeps the families apart, so a lock named
 * "x", a semaphore named "x" and an election named "x" never interfere.
 */
export type QueueKind = "lock" | "semaphore" | "election";

/** A request to be granted a lock, a semaphore permit or an election's leadership. */
export interface AcquireRequest {
  readonly kind: QueueKind;
  /** The user's name, already validated. The driver applies its namespace. */
  readonly name: string;
  /** Always `"exclusive"` unless `kind` is `"lock"`. */
  readonly mode: LockMode;
  /** Holders allowed at once: 1 for locks and elections, the limit for semaphores. */
  readonly limit: number;
  /** `false`: try once and resolve `null` when it is not free right now. */
  readonly wait: boolean;
  /**
   * Aborted on timeout, caller cancellation, session loss or close. The driver must then
   * withdraw the waiter completely (no trace in `inspect()`) and reject with `signal.reason`.
   */
  readonly signal: AbortSignal;
  /**
   * The same cancellation as `signal` (same moment, same reason), as a subscription: a
   * driver that waits in this process (memory) watches it instead of reading `signal`,
   * which builds an `AbortController` (microseconds on Node 20). Absent: use `signal`.
   */
  readonly cancel?: CancelWatch | undefined;
  /**
   * The driver calls this, at most once, when a grant it made is lost without `release()`
   * (e.g. its connection dropped). It must be called before the driver could let anyone
   * else be granted the same thing whenever the driver can know that in advance.
   */
  readonly onLost: (error: Error) => void;
  /**
   * Only for exclusive lock grants tracked for takeover, and only on a driver with
   * {@link Driver.nativeRecords}: this holding's takeover record (src/core/takeover.ts),
   * JSON text of an object, to be written atomically WITH the grant, in the same round
   * trip, into the cell `name` of the takeover space (as `cells.put` would store it, with
   * the same version and fence rules), sealed with the token and grant time by
   * {@link sealRecord}'s rule. Written only if that cell holds no live record, and fenced
   * by the new token; the grant then carries `recordVersion`. If a live record is there,
   * it is left as it is and the grant carries it as `previousRecord`. A waiter that is not
   * granted writes nothing.
   */
  readonly record?: string | undefined;
}

/**
 * The rule by which a driver seals a takeover record with its grant's token and the epoch
 * ms of the grant: the object's closing brace is replaced by `,"t":"<token>","at":<ms>}`.
 * Drivers that write the record inside their engine (Lua, SQL) apply the same string rule.
 */
export function sealRecord(record: string, token: bigint, at: number): string {
  return `${record.slice(0, -1)},"t":"${token}","at":${at}}`;
}

/** A request to {@link DriverSession.grantNow}: it never waits, so it has no `wait` or `signal`. */
export type ImmediateRequest = Omit<AcquireRequest, "wait" | "signal">;

/** What a driver returns for a grant. Drivers may extend it with their own fields. */
export interface DriverGrant {
  /** Fencing token: strictly increasing per (namespace, kind, name). */
  token: bigint;
  mode: LockMode;
  /**
   * Set by a driver with {@link Driver.nativeRecords} when it wrote `request.record` with
   * this grant: the record's cell version. The core updates it when it rewrites the record
   * and clears it for a holding that was lost; {@link DriverSession.release} then deletes
   * the record atomically with the release, only if it is still at this version (a
   * successor's record stays).
   */
  recordVersion?: bigint | undefined;
  /**
   * Set by a driver with {@link Driver.nativeRecords} when `request.record` was not written
   * because a live record was there: that record, read atomically with the grant.
   */
  previousRecord?: CellEntry | undefined;
}

/** A stored record: group members and election leaders are records bound to a session. */
export interface RecordEntry {
  readonly key: string;
  /** JSON text. */
  readonly value: string;
  readonly sessionId: string;
  /** Epoch ms when the key was first put by this session. */
  readonly createdAt: number;
}

/** A change to a record space, pushed by the driver. */
export type RecordEvent =
  | { readonly type: "put"; readonly entry: RecordEntry }
  | { readonly type: "delete"; readonly key: string };

/** Hooks the core gives a driver session. */
export interface SessionHooks {
  /** The driver learnt the session is gone (lease revoked, connection closed, ...). */
  readonly onLost: (error: Error) => void;
}

/**
 * One session (lease) of one coordinator. Everything it holds or stores is released when
 * it ends, by `close()` promptly or by the backend when the holder dies.
 */
export interface DriverSession {
  readonly id: string;
  /**
   * Renews the lease once, for TTL-bound sessions; omitted where the backend ties the
   * session to a process or connection. Rejects with `SessionExpiredError` when the
   * backend no longer knows the session; other rejections are treated as transient.
   */
  keepAlive?(): Promise<void>;
  acquire(request: AcquireRequest): Promise<DriverGrant | null>;
  /**
   * Optional fast path, for drivers that decide locally (memory, the file backend's
   * try-lock): grants `request` synchronously when that needs no wait and no round trip,
   * exactly as `acquire()` would have granted it at once. `null` means "not at once": it
   * must leave no trace, and the core then calls `acquire()`, which decides again. A throw
   * is treated like `null`.
   */
  grantNow?(request: ImmediateRequest): DriverGrant | null;
  /**
   * Frees a grant. May throw when the backend is unreachable; the core reports it. On a
   * driver with {@link Driver.nativeRecords}, also deletes the takeover record at
   * `grant.recordVersion` when that is set, in the same atomic step.
   */
  release(grant: DriverGrant): Promise<void>;
  /**
   * Optional synchronous `release()`, for drivers whose release is a local step that
   * cannot hang (so the core arms no bounding timer for it). A throw is reported like a
   * rejected `release()`.
   */
  releaseNow?(grant: DriverGrant): void;
  /**
   * Changes a lock grant's mode. To `"exclusive"` (upgrade) it waits for the other shared
   * holders to leave, ahead of every queued waiter, and updates `grant.token` and
   * `grant.mode`; a second concurrent upgrade of the same lock is refused with
   * `DeadlockError`. To `"shared"` (downgrade) it never waits. Cancellation via `signal`
   * leaves the grant as it was.
   */
  convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void>;
  /** Stores or replaces a record bound to this session. */
  putRecord(space: string, key: string, value: string): Promise<void>;
  /** Deletes this session's record; no-op if absent. */
  deleteRecord(space: string, key: string): Promise<void>;
  /** Ends the session and frees everything it holds, without waiting for a TTL. */
  close(): Promise<void>;
}

/** Snapshot of one queue, as a driver sees it. */
export interface QueueSnapshot {
  readonly kind: QueueKind;
  readonly name: string;
  readonly limit: number;
  readonly holders: readonly {
    readonly memberId: string;
    readonly sessionId: string;
    readonly mode: LockMode;
    readonly token: bigint;
    readonly since: number;
  }[];
  readonly waiters: readonly {
    readonly memberId: string;
    readonly sessionId: string;
    readonly mode: LockMode;
    readonly since: number;
  }[];
}

/** Everything a driver can see in its namespace. */
export interface DriverSnapshot {
  readonly queues: readonly QueueSnapshot[];
  readonly records: readonly { readonly space: string; readonly entries: readonly RecordEntry[] }[];
}

/**
 * A durable versioned key, as a driver stores it: a cell (`coord.cell()`), and any other
 * durable record a recipe needs (the takeover recipe's records use the same seam in their
 * own space). Unlike {@link RecordEntry} it is bound to no session: it outlives the
 * session, the process and the client that wrote it.
 */
export interface CellEntry {
  readonly key: string;
  /** JSON text; `null` for a deleted cell whose version (and fence) the driver still keeps. */
  readonly value: string | null;
  /**
   * Version of the last write (put or delete), >= 1. Strictly increases per (space, key)
   * with every write, including across delete and re-create, and across restarts.
   */
  readonly version: bigint;
  /** Highest fence any write to this key carried (0 if none); survives delete. */
  readonly fence: bigint;
}

/** Conditions of a cell write; all given ones must hold, checked atomically with the write. */
export interface CellCondition {
  /** `0n`: only if the key is absent (or deleted); `n`: only if its current version is `n`. */
  readonly ifVersion?: bigint | undefined;
  /** Only if the current value is exactly this JSON text (absent never matches). */
  readonly ifValue?: string | undefined;
  /** Refused (`fenced`) if a higher fence was already stored; the stored fence becomes this. */
  readonly fence?: bigint | undefined;
  /**
   * Deletes only, and not a condition: the delete may leave no tombstone (the key's fence
   * goes, and a key created again may start its versions again). For keys that one writer
   * at a time owns (takeover records: their lock's holder); a driver may ignore it.
   */
  readonly forget?: boolean | undefined;
}

/**
 * What a cell write did. A refusal carries the key's state as read after the refusal
 * (so a caller can show the winner's value): `conflict` when `ifVersion`/`ifValue` did
 * not hold, `fenced` when a higher fence was stored (checked first).
 */
export type CellWriteResult =
  | { readonly ok: true; readonly version: bigint }
  | { readonly ok: false; readonly reason: "conflict" | "fenced"; readonly current: CellEntry | null };

/**
 * Durable versioned keys with compare-and-set, in spaces of their own (apart from queues
 * and records). Every write is one atomic step on the backend (an etcd transaction, one SQL
 * statement, one locked file rewrite), durable once it resolves. A rejection means the
 * write's outcome is unknown (e.g. the connection dropped while it was in flight).
 */
export interface DriverCells {
  /** The key's state, including a deleted key's tombstone (`value: null`); `null` if never written. */
  get(space: string, key: string): Promise<CellEntry | null>;
  /** Writes `value` (JSON text) if `condition` holds. */
  put(space: string, key: string, value: string, condition: CellCondition): Promise<CellWriteResult>;
  /**
   * Deletes the key if `condition` holds; its version still increases (the delete's
   * version). Deleting an absent or deleted key without `ifVersion` succeeds with version
   * `0n` and writes nothing. A delete with `forget` may answer `0n` too: the key is gone,
   * with no version to report (ZooKeeper).
   */
  delete(space: string, key: string, condition: CellCondition): Promise<CellWriteResult>;
  /** Live (not deleted) keys of `space`. */
  list(space: string): Promise<CellEntry[]>;
  /**
   * Calls `listener` after changes of the key, until `signal` aborts, and resolves with the
   * state when watching began. Events may repeat or skip versions (after a reconnect, a
   * compaction or between polls) but the latest state is always delivered; the core drops
   * any version not above the last one it yielded.
   */
  watch(
    space: string,
    key: string,
    listener: (entry: CellEntry) => void,
    signal: AbortSignal,
  ): Promise<CellEntry | null>;
}

/** A connected backend. */
export interface Driver {
  /**
   * Durable versioned keys; absent on a backend that does not implement them yet. Takeover
   * (fence info, `handle.takeover`, `onTakeover`, lock delay; src/core/takeover.ts) is built
   * on them with no further driver code: a backend gets it by implementing `cells`.
   */
  readonly cells?: DriverCells;
  /**
   * The driver writes a tracked grant's takeover record with the grant (`AcquireRequest.record`,
   * also in `grantNow`, which must then answer `null` while a live record is there) and
   * deletes it with the release (`DriverGrant.recordVersion`), each in the grant's or
   * release's own atomic step. Needs `cells` (the record is the cell `name` of the takeover
   * space). Without it the core writes and deletes the record with `cells` calls of its own,
   * one more round trip each.
   */
  readonly nativeRecords?: boolean;
  openSession(hooks: SessionHooks): Promise<DriverSession>;
  listRecords(space: string): Promise<RecordEntry[]>;
  /**
   * Starts pushing changes of `space` to `listener` and resolves with the records present
   * when the watch began, with no gap between that snapshot and the first event. Stops when
   * `signal` aborts. A driver whose watch can end for good after it began (the backend
   * refused the credentials on reconnecting) calls `failed` with why; no event comes after.
   */
  watchRecords(
    space: string,
    listener: (event: RecordEvent) => void,
    signal: AbortSignal,
    failed?: (error: Error) => void,
  ): Promise<RecordEntry[]>;
  inspect(): Promise<DriverSnapshot>;
  /**
   * Every namespace in which something is live on this backend (a holder, a waiter or a
   * record), in any order; for operators (`baton status`). Optional: a driver without it
   * cannot tell, and the coordinator says so.
   */
  namespaces?(): Promise<string[]>;
  /**
   * First step of an operator's revoke (src/core/revoke.ts): marks another client's session
   * (one `inspect()` listed) revoked at the backend, atomically with respect to its
   * renewals, so that every keep-alive (or ping) it sends from now on fails, and frees
   * nothing. Its client then learns the loss (its signals fire) at its next renewal or, if
   * it cannot hear the backend, at its own local deadline, which the core's session rule
   * (session.ts) bounds by the lease the backend last granted it.
   *
   * Resolves with the milliseconds, counted from when this resolves, after which that local
   * deadline has certainly passed (Redis: the session key's PTTL read in the marking
   * script; PostgreSQL: the row's `expires_at - now()` read in the marking statement; etcd:
   * the lease's granted TTL, since its keep-alive reads the marker before renewing), or
   * `null` when the session is already gone. The core waits that long, or until the
   * session has left `inspect()` (its client closed it on learning the loss), and only then
   * calls {@link Driver.revokeSession}: so the holder's signal fires before anyone else can
   * be granted what it held. A driver that implements `revokeSession` must implement this
   * too, unless its `revokeSession` itself tells the holder before freeing (memory: one
   * process). A driver for a new backend (MySQL: e.g. a `revoked` column its heartbeat
   * checks) follows the same rule: the mark and the renewal must be ordered by the server.
   */
  fenceSession?(sessionId: string): Promise<number | null>;
  /**
   * Ends another client's session (one `inspect()` listed) at the backend, as if its
   * process had died: everything it holds is freed and its waiters withdrawn. Called by
   * the core after {@link Driver.fenceSession}'s wait (or at once for `revoke(name, {
   * immediate: true })`); it must not be relied on to tell the holder first. Resolves once
   * the backend has freed the holdings, or when the session is already gone; also removes
   * any revoke marker `fenceSession` left. A backend that cannot take a holding from a live
   * holder throws `CannotRevokeError` naming the holder (pid and host where it knows them).
   * Optional: without it `coord.revoke()` is `UnsupportedError`. For operators
   * (`coord.revoke()`, `baton unlock`); the takeover record the revoked holder wrote stays,
   * so the next holder is handed a takeover (src/core/revoke.ts, docs/takeover.md).
   */
  revokeSession?(sessionId: string): Promise<void>;
  /** Frees the driver's connections. Sessions are closed before this is called. */
  close(): Promise<void>;
}

/** What a driver factory is given. */
export interface DriverContext {
  /** The URL the user gave, parsed. Options already taken out of the query string. */
  readonly url: URL;
  /**
   * The URL exactly as the user wrote it, for what parsing loses (WHATWG parsing turns
   * `file:rel/dir` into `file:///rel/dir`).
   */
  readonly href: string;
  readonly memberId: string;
  readonly namespace: string;
  readonly ttlMs: number;
  /** Backend-specific options: query-string values (strings) overlaid by explicit ones. */
  readonly options: Readonly<Record<string, unknown>>;
}

/** The module a backend's `load()` resolves to. */
export interface DriverModule {
  createDriver(context: DriverContext): Promise<Driver>;
}

/** A backend, declared as data. */
export interface BackendDefinition {
  /** Short name: `memory`, `file`, `etcd`, ... */
  readonly name: string;
  /** URL schemes, without the colon. */
  readonly schemes: readonly string[];
  /** URL form, for documentation and error messages. */
  readonly urlForm: string;
  /** One line: what it is, and its main caveat. */
  readonly summary: string;
  readonly guarantees: Guarantees;
  /** npm package(s) loaded lazily when the backend is used. */
  readonly clientLibraries: readonly string[];
  /** Backend-specific option names accepted in the query string or options object. */
  readonly optionNames: readonly string[];
  /**
   * The URL may name several hosts (`scheme://h1:p1,h2:p2/...`, which the WHATWG URL parser
   * refuses): `connect()` then keeps the first in the URL and passes the others as the
   * `endpoints` option, which such a backend must accept. Other backends refuse a host list.
   */
  readonly hostLists?: true;
  readonly load: () => Promise<DriverModule>;
}
