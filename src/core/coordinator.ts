import { CELL_SPACE, Cell } from "./cell.js";
import type { CoordinatorCore } from "./core.js";
import type { CellEntry, LockMode } from "./driver.js";
import { Election, type Leader, toLeader } from "./election.js";
import { UnsupportedError } from "./errors.js";
import { Group, type Member, toMembers } from "./group.js";
import type { Guarantees } from "./guarantees.js";
import { type AcquireOptions, Lock, type LockHandle, Semaphore } from "./lock.js";
import { acquireLocks, type MultiLockHandle, type MultiLockOptions } from "./multi-lock.js";
import { Partitioner, type PartitionerOptions } from "./partitioner.js";
import { type RevokedHolder, type RevokeOptions, revoke } from "./revoke.js";
import type { Session } from "./session.js";
import { parseTakeover, TAKEOVER_SPACE, type TakeoverOptions, tracksByDefault } from "./takeover.js";
import { type InspectionJson, inspectionToJson } from "../status/json.js";
import { checkName, checkOptions, checkPositiveInt } from "./validate.js";
import { spaceOwner } from "./record-spaces.js";

/** A holder of a lock or semaphore, as `inspect()` reports it. */
export interface HolderInfo {
  readonly memberId: string;
  readonly sessionId: string;
  readonly mode: LockMode;
  readonly token: bigint;
  /** Epoch ms of the grant. */
  readonly since: number;
  readonly heldMs: number;
}

/** A waiter, as `inspect()` reports it. */
export interface WaiterInfo {
  readonly memberId: string;
  readonly sessionId: string;
  readonly mode: LockMode;
  /** Epoch ms when it started waiting. */
  readonly since: number;
  readonly waitingMs: number;
}

/** A lock or semaphore with its holders and waiters (in queue order). */
export interface LockInfo {
  readonly name: string;
  /** 1 for locks. */
  readonly limit: number;
  readonly holders: readonly HolderInfo[];
  readonly waiters: readonly WaiterInfo[];
}

/**
 * What `inspect()` returns: everything live in the coordinator's namespace. Tokens are
 * `bigint` here; `JSON.stringify(inspection)` works as it is, through {@link toJSON}.
 */
export interface Inspection {
  readonly backend: string;
  readonly namespace: string;
  /** Epoch ms of the snapshot. */
  readonly at: number;
  readonly locks: readonly LockInfo[];
  readonly semaphores: readonly LockInfo[];
  readonly groups: readonly { readonly id: string; readonly members: readonly Member[] }[];
  readonly elections: readonly {
    readonly id: string;
    readonly leader: Leader | null;
    readonly candidates: readonly WaiterInfo[];
  }[];
  /** Live cells, by name; absent on a backend without cells. */
  readonly cells?: readonly { readonly name: string; readonly value: unknown; readonly version: bigint }[];
  /** Takeover records of locks, by name; absent on a backend without cells. */
  readonly takeovers?: readonly TakeoverRecordInfo[];
  /**
   * The stable JSON form (what `baton status --json` prints): tokens as decimal strings,
   * times in epoch ms. Called by `JSON.stringify`; not enumerable, so spreading or
   * comparing inspections ignores it.
   */
  toJSON(): InspectionJson;
}

/**
 * A lock's takeover record, as `inspect()` reports it: the tracked holding that holds it
 * (`state: "held"`), or one that ended without a release and will be handed to the next
 * holder as its `takeover` (`state: "lost"`), with the lock delay it imposes.
 */
export interface TakeoverRecordInfo {
  /** The lock's name. */
  readonly name: string;
  /** `held`: a holder with this token holds the lock; `lost`: it ended without a release. */
  readonly state: "held" | "lost";
  /** Member id of the holding's coordinator. */
  readonly memberId: string;
  /** Its session id. */
  readonly sessionId: string;
  /** Its fencing token. */
  readonly token: bigint;
  /** Epoch ms of the grant. */
  readonly since: number;
  /** The fence info it acquired with (`null` if none). */
  readonly fenceInfo: unknown;
  /** The lock delay it acquired with. */
  readonly lockDelayMs: number;
  /** Epoch ms until which nobody is handed the lock (a lost holding's delay, once begun). */
  readonly delayedUntil: number | null;
}

/** Options of {@link Coordinator.semaphore}. */
export interface SemaphoreOptions {
  /** Permits in all: an integer from 1 to 1,000,000. */
  limit: number;
}

/**
 * A client of one backend: one member id, one namespace, one session at a time. Made by
 * `connect()`. Everything it acquires is bound to its session: when the session is lost,
 * their signals abort; the coordinator then opens a new session for later calls by itself.
 * `close()` (or `await using`) releases everything promptly. A forgotten `close()` does
 * not keep the process alive by itself (background renewal is unref'd); a pending wait does.
 */
export class Coordinator implements AsyncDisposable {
  readonly #core: CoordinatorCore;
  readonly #groups = new Map<string, Group>();

  private constructor(core: CoordinatorCore) {
    this.#core = core;
  }

  /** @internal Use `connect()`. */
  static create(core: CoordinatorCore): Coordinator {
    return new Coordinator(core);
  }

  /** The backend's name (`memory`, `file`, `etcd`, `postgres`, ...). */
  get backend(): string {
    return this.#core.backend;
  }

  /** What the backend guarantees. */
  get guarantees(): Guarantees {
    return this.#core.guarantees;
  }

  /** This client's member id (shown in `inspect()` and group membership). */
  get memberId(): string {
    return this.#core.memberId;
  }

  /** Key prefix isolating this application's names from others on the same backend. */
  get namespace(): string {
    return this.#core.namespace;
  }

  /** Session TTL in milliseconds. */
  get ttlMs(): number {
    return this.#core.ttlMs;
  }

  /** The current session, or `null` before the first call that needs one or after a loss. */
  get session(): Session | null {
    return this.#core.currentSession;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#core.closed;
  }

  /**
   * Opens the session now (it is otherwise opened by the first call that needs it) and
   * returns it. Rejects with `BackendUnavailableError` if the backend cannot be reached.
   */
  async openSession(): Promise<Session> {
    return this.#core.liveSession();
  }

  /** A named lock (no I/O until acquired). See {@link Lock}. */
  lock(name: string): Lock {
    this.#core.assertOpen();
    return Lock.create(this.#core, checkName("lock name", name));
  }

  /**
   * Several locks taken as one, all or nothing, in one canonical order (sorted names), so
   * that callers asking for overlapping sets in any order never deadlock. On timeout or
   * abort nothing stays held. See {@link MultiLockHandle}.
   */
  locks(names: readonly string[], options?: MultiLockOptions): Promise<MultiLockHandle> {
    return acquireLocks(this.#core, names, options);
  }

  /**
   * A named durable cell (no I/O until used): a versioned JSON value with compare-and-set,
   * bound to no session. `UnsupportedError` on a backend without cells (see
   * {@link cellsSupported}). See {@link Cell}.
   */
  cell<T = unknown>(name: string): Cell<T> {
    this.#core.assertOpen();
    return Cell.create<T>(this.#core, checkName("cell name", name));
  }

  /** Whether this backend implements {@link cell}. */
  get cellsSupported(): boolean {
    return this.#core.driver.cells !== undefined;
  }

  /**
   * Whether a plain exclusive `acquire()` (no takeover option) is tracked for takeover on
   * this backend: where its driver writes the record in the grant's own step. Elsewhere a
   * holding is tracked only when asked (`takeover: true` or any takeover option). See
   * {@link TakeoverOptions.takeover}.
   */
  get takeoverByDefault(): boolean {
    return tracksByDefault(this.#core.driver);
  }

  /** A named counting semaphore. See {@link Semaphore}. */
  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    this.#core.assertOpen();
    const { limit } = checkOptions("semaphore options", options);
    return Semaphore.create(this.#core, checkName("semaphore name", name), checkPositiveInt("limit", limit));
  }

  /**
   * A named group. The same object is returned for the same id. `Caps` types the
   * capabilities this application joins with and reads back (a promise the application
   * makes, not a check: other members may store anything JSON). See {@link Group}.
   */
  group<Caps = unknown>(id: string): Group<Caps> {
    this.#core.assertOpen();
    checkName("group id", id);
    let group = this.#groups.get(id);
    if (!group) {
      group = Group.create<unknown>(this.#core, id);
      this.#groups.set(id, group);
    }
    return group as Group<Caps>;
  }

  /**
   * A named election. `Value` types the values campaigned with and observed (a promise
   * the application makes, as for {@link group}). See {@link Election}.
   */
  election<Value = unknown>(id: string): Election<Value> {
    this.#core.assertOpen();
    return Election.create<Value>(this.#core, checkName("election id", id));
  }

  /**
   * Joins group `groupId` and returns a partitioner over its members, once it has loaded
   * the current membership. See {@link Partitioner}.
   */
  async partitioner(groupId: string, options?: PartitionerOptions): Promise<Partitioner> {
    const checked = checkOptions("partitioner options", options);
    return Partitioner.create(this.#core, this.group(groupId), checked).start();
  }

  /**
   * Runs `fn` while holding lock `name`, then releases it whatever happens. `fn` gets the
   * handle's `signal` (aborts if the lock is lost) and the handle. Acquisition options and
   * cancellation as for {@link Lock.acquire}.
   */
  async withLock<T>(
    name: string,
    fn: (signal: AbortSignal, handle: LockHandle) => Promise<T> | T,
    options?: AcquireOptions,
  ): Promise<T> {
    const handle = await this.lock(name).acquire(options);
    try {
      return await fn(handle.signal, handle);
    } finally {
      await handle.release();
    }
  }

  /**
   * Every namespace on this backend in which something is live (a holder, a waiter or a
   * record), this one included if it is, sorted. For operators: `inspect()` sees one
   * namespace, and this tells where else to look. Rejects with `UnsupportedError` on a
   * backend that cannot tell. Not a consistent snapshot: a namespace may fill or empty
   * while it is read.
   */
  async namespaces(): Promise<string[]> {
    this.#core.assertOpen();
    const driver = this.#core.driver;
    if (!driver.namespaces) {
      throw new UnsupportedError(`the ${this.backend} backend cannot list namespaces`, { backend: this.backend });
    }
    try {
      return (await driver.namespaces()).sort();
    } catch (error) {
      throw this.#core.translate(error);
    }
  }

  /** A snapshot of every lock, semaphore, group and election in this namespace. */
  async inspect(): Promise<Inspection> {
    this.#core.assertOpen();
    let snapshot: Awaited<ReturnType<CoordinatorCore["driver"]["inspect"]>>;
    let cells: CellEntry[] | undefined;
    let records: CellEntry[] | undefined;
    try {
      [snapshot, cells, records] = await Promise.all([
        this.#core.driver.inspect(),
        this.#core.driver.cells?.list(CELL_SPACE),
        this.#core.driver.cells?.list(TAKEOVER_SPACE),
      ]);
    } catch (error) {
      throw this.#core.translate(error);
    }
    const at = Date.now();
    const info = (q: (typeof snapshot.queues)[number]): LockInfo => ({
      name: q.name,
      limit: q.limit,
      holders: q.holders.map((h) => ({ ...h, heldMs: Math.max(0, at - h.since) })),
      waiters: q.waiters.map((w) => ({ ...w, waitingMs: Math.max(0, at - w.since) })),
    });
    const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const locks = snapshot.queues
      .filter((q) => q.kind === "lock")
      .map(info)
      .sort(byName);
    const semaphores = snapshot.queues
      .filter((q) => q.kind === "semaphore")
      .map(info)
      .sort(byName);
    const groups = [];
    const elections = new Map<string, { id: string; leader: Leader | null; candidates: WaiterInfo[] }>();
    for (const { space, entries } of snapshot.records) {
      const owner = spaceOwner(space);
      if (owner?.kind === "group") {
        groups.push({ id: owner.id, members: toMembers(entries) });
      } else if (owner?.kind === "election") {
        const { id } = owner;
        elections.set(id, { id, leader: toLeader(entries.find((e) => e.key === "leader")), candidates: [] });
      }
    }
    for (const q of snapshot.queues) {
      if (q.kind !== "election") continue;
      const election = elections.get(q.name) ?? { id: q.name, leader: null, candidates: [] };
      election.candidates = info(q).waiters.slice();
      elections.set(q.name, election);
    }
    groups.sort((a, b) => (a.id < b.id ? -1 : 1));
    const inspection = {
      backend: this.backend,
      namespace: this.namespace,
      at,
      locks,
      semaphores,
      groups,
      elections: [...elections.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
      ...(cells
        ? {
            cells: cells
              .map((c) => ({ name: c.key, value: JSON.parse(c.value ?? "null") as unknown, version: c.version }))
              .sort(byName),
          }
        : {}),
      ...(records ? { takeovers: takeoverInfo(records, locks) } : {}),
    } as Omit<Inspection, "toJSON"> as Inspection;
    Object.defineProperty(inspection, "toJSON", { value: () => inspectionToJson(inspection) });
    return inspection;
  }

  /**
   * Ends the holding of a stuck holder, for operators: revokes the backend session of every
   * holder of lock `name` (or of the semaphore or election, by `kind`), or only of
   * `memberId`'s. Everything those sessions hold is lost, not only `name`: a session is the
   * unit the backend can end (etcd: its lease is revoked; PostgreSQL: its connections are
   * terminated; memory: its session expires). Their clients' signals fire, and a tracked
   * holding's record stays, so the next holder is handed a `takeover`.
   *
   * Never faster than the holder's own deadline: the session is first marked revoked so
   * its renewals fail, and its holdings are freed only once its client closed it on
   * learning the loss or its deadline must have passed; so the revoked holder's signal
   * fires before anyone else is granted its lock, and this call takes up to the holder's
   * TTL (about a third of it for a live holder). `{ immediate: true }` frees at once
   * (safe only where resources check fencing tokens). `timeoutMs` and `signal` bound the
   * call (`TimeoutError`, `AbortError`), as does `close()`; sessions already marked revoked
   * stay so, and their holders lose their holdings at their own deadline.
   * Resolves with the holders revoked (empty if nobody held it). The file backend throws
   * `CannotRevokeError` with the holder's pid and host: only its death frees its lock.
   * `UnsupportedError` on a backend without revoke.
   */
  async revoke(name: string, options?: RevokeOptions): Promise<RevokedHolder[]> {
    return revoke(this.#core, name, options);
  }

  /**
   * Releases everything this coordinator holds (locks, permits, memberships, leadership)
   * without waiting for TTLs, ends pending waits with `ClosedError`, and frees connections.
   * Handles' signals abort (reason: `LockLostError` caused by `ClosedError`). Idempotent;
   * never throws.
   */
  async close(): Promise<void> {
    await this.#core.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal Test hooks; see `baton/testing`. */
  get _core(): CoordinatorCore {
    return this.#core;
  }
}

function takeoverInfo(records: readonly CellEntry[], locks: readonly LockInfo[]): TakeoverRecordInfo[] {
  const list: TakeoverRecordInfo[] = [];
  for (const entry of records) {
    const record = parseTakeover(entry);
    if (!record) continue;
    const lock = locks.find((l) => l.name === entry.key);
    const held = lock?.holders.some((h) => h.token === record.token) ?? false;
    list.push({ name: entry.key, state: held ? "held" : "lost", ...record });
  }
  return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
