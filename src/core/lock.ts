import { blockingGrant, tryGrant } from "./acquire.js";
import { cancellation } from "./cancel.js";
import type { DriverGrant, LockMode, QueueKind } from "./driver.js";
import { InvalidStateError, LockLostError, UnsupportedError } from "./errors.js";
import type { LiveSession } from "./session.js";
import type { CoordinatorCore } from "./core.js";
import { checkTakeover, type Takeover, type TakeoverClaim, type TakeoverOptions, unclaim } from "./takeover.js";
import { checkDuration, checkMode, checkOptions, checkSignal } from "./validate.js";

export type { LockMode } from "./driver.js";

/**
 * Options of a blocking acquire. The takeover options (`fenceInfo`, `onTakeover`,
 * `lockDelayMs`, `takeover`) are described in {@link TakeoverOptions}; a lock delay counts
 * against `timeoutMs`, and cancellation during the delay or the hook releases the lock.
 */
export interface AcquireOptions extends TakeoverOptions {
  /** `"exclusive"` (default) or `"shared"`. Locks only. */
  mode?: LockMode | undefined;
  /**
   * Give up after this many milliseconds with a {@link TimeoutError}. `0` tries once and
   * fails at once if busy. Omitted: wait until granted or cancelled. At most
   * `MAX_TIMER_MS` (2^31-1); more is an `InvalidArgumentError`.
   */
  timeoutMs?: number | undefined;
  /**
   * Cancels the wait: the call rejects with an `AbortError` (name `"AbortError"`, cause
   * the signal's reason), the waiter is withdrawn with no trace, and nothing is held.
   * Aborting after the grant does nothing to the grant.
   */
  signal?: AbortSignal | undefined;
}

/**
 * Options of a non-blocking try. With takeover options, a lock under a lock delay answers
 * `null` like a held one; an `onTakeover` hook is awaited before the try resolves.
 */
export interface TryAcquireOptions extends TakeoverOptions {
  /** `"exclusive"` (default) or `"shared"`. Locks only. */
  mode?: LockMode | undefined;
}

/** Options of an upgrade. */
export interface UpgradeOptions {
  /** Give up after this many milliseconds; the shared lock is still held then. */
  timeoutMs?: number | undefined;
  /** Cancels the wait; the shared lock is still held then. */
  signal?: AbortSignal | undefined;
}

/** What `release()` did. It never throws. */
export interface ReleaseResult {
  /**
   * - `released`: the backend confirmed the release.
   * - `already-released`: an earlier `release()` (or `close()`) already did it.
   * - `lost`: the lock had been lost before (its `signal` aborted); nothing to do.
   * - `unconfirmed`: the backend could not be reached; the session's expiry frees it.
   */
  readonly status: "released" | "already-released" | "lost" | "unconfirmed";
  /** The backend's error, for `unconfirmed`. */
  readonly error?: unknown;
}

const RELEASED: ReleaseResult = Object.freeze({ status: "released" });

/**
 * A granted lock, semaphore permit or leadership. Holds until `release()`, the coordinator's
 * `close()`, or loss (its `signal` aborts). Use with `await using` to release on scope exit.
 */
export class LockHandle implements AsyncDisposable {
  /** The lock (semaphore, election) name. */
  readonly name: string;
  /** What was acquired. */
  readonly kind: QueueKind;
  /** Epoch ms of the grant. */
  readonly acquiredAt: number;
  readonly #core: CoordinatorCore;
  readonly #session: LiveSession;
  readonly #grant: DriverGrant;
  // Made on first use of `signal`: most handles are released without anyone reading it.
  #controller: AbortController | null = null;
  #lostReason: LockLostError | null = null;
  #state: "held" | "released" | "lost" = "held";
  #busy = false;
  #claim: TakeoverClaim | null = null;
  #takeover: Takeover | null = null;

  private constructor(core: CoordinatorCore, session: LiveSession, kind: QueueKind, name: string, grant: DriverGrant) {
    this.#core = core;
    this.#session = session;
    this.kind = kind;
    this.name = name;
    this.#grant = grant;
    this.acquiredAt = Date.now();
    session.dependents.add(this);
    core.telemetry.holdStarted(kind, name, grant.token);
  }

  /** @internal Use the acquisition calls. */
  static create(
    core: CoordinatorCore,
    session: LiveSession,
    kind: QueueKind,
    name: string,
    grant: DriverGrant,
  ): LockHandle {
    return new LockHandle(core, session, kind, name, grant);
  }

  /**
   * Fencing token: strictly increases per name across all holders of all clients on a
   * backend whose guarantees include `fencing`. Pass it to the resource you protect and
   * have the resource reject any token lower than the highest it has seen. A new token is
   * issued on upgrade; downgrade keeps it.
   */
  get token(): bigint {
    return this.#grant.token;
  }

  /**
   * The previous holding, when it ended without a release (lost, died, cut off, revoked)
   * and was tracked (every exclusive acquisition is, unless `takeover: false`; a holding
   * acquired shared and then upgraded is not, nor one downgraded): see
   * {@link TakeoverOptions}. `null` when the lock was free or cleanly released before this
   * grant, and always `null` for an untracked acquisition (shared, or `takeover: false`).
   */
  get takeover(): Takeover | null {
    return this.#takeover;
  }

  /** @internal Marks the grant as tracked for takeover (acquire.ts). */
  claimed(claim: TakeoverClaim, takeover: Takeover | null): void {
    this.#claim = claim;
    this.#takeover = takeover;
    // A driver with native records deletes it with the release, at the version claimed.
    if (this.#core.driver.nativeRecords) this.#grant.recordVersion = claim.version;
    if (this.#state === "held") this.#core.claimed.add(this);
  }

  /** Current mode. */
  get mode(): LockMode {
    return this.#grant.mode;
  }

  /**
   * Aborts when the grant is lost without `release()`: the session expired or its local
   * deadline passed, the connection dropped, or the coordinator closed. It fires before any
   * other client can be granted the same lock whenever the backend's guarantees allow
   * (see the backend's docs); `reason` is a {@link LockLostError}. A plain `release()` does
   * not abort it.
   */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#lostReason) this.#controller.abort(this.#lostReason);
    }
    return this.#controller.signal;
  }

  /** Whether the grant is still held, as far as this client knows. */
  get held(): boolean {
    return this.#state === "held";
  }

  /** @internal Called by the session (or the driver) when the grant is gone. */
  lose(error: Error): void {
    if (this.#state !== "held") return;
    this.#state = "lost";
    // A lost holding keeps its record, for the next holder to fence.
    this.#grant.recordVersion = undefined;
    this.#session.dependents.delete(this);
    if (this.#claim) this.#core.claimed.delete(this);
    this.#core.telemetry.holdEnded(this.kind, this.name, Date.now() - this.acquiredAt, error);
    this.#lostReason = new LockLostError(`${this.kind} "${this.name}" was lost: ${error.message}`, {
      backend: this.#core.backend,
      cause: error,
    });
    this.#controller?.abort(this.#lostReason);
  }

  /**
   * Releases the grant. Idempotent and never throws: the result says what happened. When
   * the backend cannot be reached within the session TTL, the result is `unconfirmed` and
   * the lease's expiry frees the lock.
   */
  async release(): Promise<ReleaseResult> {
    if (this.#state === "released") return { status: "already-released" };
    // Past the local deadline (paused, or its timer not run yet): the backend may have
    // freed it and a successor may hold it, so it is lost, and its record must stay.
    if (this.#state === "held" && this.#session.pastDeadline) this.#session.loseAtDeadline();
    const wasLost = this.#state === "lost";
    const { telemetry } = this.#core;
    if (!wasLost && telemetry.recording) telemetry.holdEnded(this.kind, this.name, Date.now() - this.acquiredAt);
    this.#state = "released";
    this.#session.dependents.delete(this);
    // Only a claimed handle is in the set (claimed()): most releases skip the lookup.
    if (this.#claim) this.#core.claimed.delete(this);
    // A lost session took its grants with it (and may be closed, so unable to answer).
    if (wasLost && this.#session.lost) return { status: "lost" };
    const { driver } = this.#session;
    const native = this.#core.driver.nativeRecords === true;
    if (!wasLost && (native || !this.#claim) && driver.releaseNow) {
      // A local, synchronous release cannot hang: no bounding timer, no promise race.
      try {
        driver.releaseNow(this.#grant);
        return RELEASED;
      } catch (error) {
        return { status: "unconfirmed", error };
      }
    }
    try {
      // The record goes first: once the grant is freed, the next holder reads it. A lost
      // holding keeps its record, for the next holder to fence.
      if (this.#claim && !wasLost && !native) {
        await this.#core.bounded(unclaim(this.name, this.#claim), this.#session.ttlMs);
      }
    } catch (error) {
      // The backend did not answer: the release still goes out, but unawaited, as a second
      // call deadline would double the caller's wait. The record stays, so the next holder
      // is handed a takeover of this holding, which may indeed be lost.
      this.#core.bounded(this.#session.driver.release(this.#grant), this.#session.ttlMs).catch(() => {});
      return { status: "unconfirmed", error };
    }
    try {
      await this.#core.bounded(this.#session.driver.release(this.#grant), this.#session.ttlMs);
      return wasLost ? { status: "lost" } : { status: "released" };
    } catch (error) {
      return wasLost ? { status: "lost" } : { status: "unconfirmed", error };
    }
  }

  /**
   * Turns a shared lock into an exclusive one, waiting for the other shared holders to
   * leave; it goes ahead of queued waiters. If another shared holder is already upgrading,
   * rejects at once with `DeadlockError`. A new fencing token is issued. On timeout,
   * cancellation or deadlock the shared lock is still held. The exclusive holding it makes
   * is not tracked for takeover (no record: its loss is not reported to the next holder).
   */
  async upgrade(options?: UpgradeOptions): Promise<void> {
    const { timeoutMs, signal } = checkOptions("upgrade options", options);
    const timeout = checkDuration("timeoutMs", timeoutMs);
    const userSignal = checkSignal("signal", signal);
    this.#checkConvertible("upgrade");
    if (this.#grant.mode === "exclusive") {
      throw new InvalidStateError(`cannot upgrade "${this.name}": it is already held exclusively`);
    }
    await this.#convert("exclusive", timeout, userSignal);
  }

  /**
   * Turns an exclusive lock into a shared one at once; waiting readers may then enter. A lock
   * tracked for takeover by default then deletes its record (a shared holding is
   * untracked); if the convert fails the record stays (the holding is still exclusive, or
   * lost), and if only the delete fails the record stays until the release deletes it. One
   * acquired with takeover options or `takeover: true` cannot be downgraded
   * (`InvalidStateError`).
   */
  async downgrade(): Promise<void> {
    this.#checkConvertible("downgrade");
    if (this.#grant.mode === "shared") {
      throw new InvalidStateError(`cannot downgrade "${this.name}": it is already held shared`);
    }
    // Converted first: a crash or failure in between leaves a record of a holding that is
    // shared (reported as a takeover: the cautious side), never an exclusive one untracked.
    await this.#convert("shared", undefined, undefined);
    await this.#untrack();
  }

  /** Releases the grant (for `await using`); does nothing after an explicit `release()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  #checkConvertible(op: string): void {
    this.#core.assertOpen();
    if (this.kind !== "lock") throw new InvalidStateError(`cannot ${op} a ${this.kind}; only locks have modes`);
    if (!this.#core.guarantees.sharedLocks) {
      throw new UnsupportedError(`backend "${this.#core.backend}" has no shared locks, so no ${op}`, {
        backend: this.#core.backend,
      });
    }
    if (this.#state !== "held") {
      throw new InvalidStateError(`cannot ${op} "${this.name}": it is ${this.#state === "lost" ? "lost" : "released"}`);
    }
    if (this.#busy) throw new InvalidStateError(`cannot ${op} "${this.name}": an upgrade or downgrade is under way`);
    if (this.#claim?.explicit) {
      // Its takeover record names one exclusive holder; shared holders would share it.
      throw new InvalidStateError(`cannot ${op} "${this.name}": it is tracked for takeover (exclusive only)`);
    }
  }

  /**
   * Ends the default tracking of a holding that stops being exclusive: its record goes, as
   * with a clean release, so a shared holding leaves no takeover.
   */
  async #untrack(): Promise<void> {
    const claim = this.#claim;
    if (!claim || this.#state !== "held") return;
    try {
      await this.#core.bounded(unclaim(this.name, claim), this.#session.ttlMs);
    } catch {
      // The downgrade is done; the claim stays, for the release to delete the record.
      return;
    }
    this.#forget();
  }

  /** @internal For `close()`: deletes the record of a held grant, which then ends untracked. */
  async dropRecord(): Promise<void> {
    const claim = this.#claim;
    if (!claim || this.#state !== "held") return;
    try {
      await this.#core.bounded(unclaim(this.name, claim), this.#session.ttlMs);
    } finally {
      this.#forget();
    }
  }

  #forget(): void {
    this.#claim = null;
    this.#grant.recordVersion = undefined;
    this.#core.claimed.delete(this);
  }

  async #convert(mode: LockMode, timeoutMs: number | undefined, signal: AbortSignal | undefined): Promise<void> {
    const cancel = cancellation({
      what: `${mode === "exclusive" ? "upgrading" : "downgrading"} lock "${this.name}"`,
      backend: this.#core.backend,
      timeoutMs,
      signal,
      internal: [this.signal, this.#core.closedSignal],
    });
    this.#busy = true;
    try {
      await this.#session.driver.convert(this.#grant, mode, cancel.signal);
    } catch (error) {
      throw this.#core.translate(error);
    } finally {
      this.#busy = false;
      cancel.dispose();
    }
  }
}

/**
 * A named lock: exclusive or shared (reader/writer), with fencing tokens. Obtain with
 * `coordinator.lock(name)`. The object itself holds nothing; each acquisition returns a
 * {@link LockHandle}. Locks are not re-entrant: acquiring a lock this coordinator already
 * holds waits like any other client.
 */
export class Lock {
  /** The lock's name. */
  readonly name: string;
  readonly #core: CoordinatorCore;

  private constructor(core: CoordinatorCore, name: string) {
    this.#core = core;
    this.name = name;
  }

  /** @internal Use `coordinator.lock(name)`. */
  static create(core: CoordinatorCore, name: string): Lock {
    return new Lock(core, name);
  }

  /**
   * Waits until the lock is granted in the requested mode. Waiters are served in arrival
   * order where the backend declares `fifo`; shared requests wait only for exclusive
   * holders and earlier exclusive waiters.
   *
   * Cancellation: `timeoutMs` rejects with {@link TimeoutError}; `signal` rejects with an
   * `AbortError`; `close()` rejects with `ClosedError`. In every case the waiter is
   * withdrawn and nothing is held. It settles by then even if the backend stops answering:
   * the takeover steps after a grant end with it, giving back a grant it could not hand out
   * adds at most a second (the release goes on in the background, bounded by the TTL), and
   * a driver that has not withdrawn its waiter within the TTL is not waited for.
   *
   * Session loss does not end the wait: a waiter holds nothing, so when its session is lost
   * (e.g. the process was paused past its TTL) it queues again on a fresh session and goes
   * on waiting until granted or until its own `timeoutMs`, counted from this call. Its old
   * place in the queue went with the old session: it queues again at the back, behind
   * everyone who queued meanwhile. Only a failure to open the fresh session
   * (`BackendUnavailableError`) ends the wait.
   *
   * Nor does a takeover claim that fails for a reason that says nothing about the lock (the
   * record's write failed with `BackendUnavailableError`, e.g. a connection dropped by a
   * server restart, or the grant was lost with its connection before it was handed out):
   * that grant goes back and the wait queues again after a pause (25 ms, doubling up to
   * 1 s), so `onTakeover` may run once per grant. Claims failing for longer than the TTL end
   * the wait with the last error; a failing `onTakeover` (`FenceFailedError`) ends it at
   * once. A write whose answer was lost may have landed, naming a grant this wait gave
   * back: the next grant reports (and `onTakeover` fences) the holding that grant found,
   * never the caller's own abandoned grant.
   */
  acquire(options?: AcquireOptions): Promise<LockHandle> {
    // Not async: the wait's own promise is handed back as it is, not wrapped in another one
    // (two ticks more between a release and the next holder's grant). Errors still reject.
    try {
      const checked = checkOptions("acquire options", options);
      const mode = this.#checkMode(checked.mode);
      const takeover = checkTakeover(this.#core, checked, mode);
      const granted = blockingGrant(this.#core, { kind: "lock", name: this.name, limit: 1, mode, takeover }, checked);
      return granted instanceof LockHandle ? Promise.resolve(granted) : granted;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Takes the lock only if it is free right now (and nobody waits for it); else `null`. */
  async tryAcquire(options?: TryAcquireOptions): Promise<LockHandle | null> {
    const checked = checkOptions("tryAcquire options", options);
    const mode = this.#checkMode(checked.mode);
    const takeover = checkTakeover(this.#core, checked, mode);
    return tryGrant(this.#core, { kind: "lock", name: this.name, limit: 1, mode, takeover });
  }

  #checkMode(mode: unknown): LockMode {
    const checked = checkMode(mode);
    if (checked === "shared" && !this.#core.guarantees.sharedLocks) {
      throw new UnsupportedError(`backend "${this.#core.backend}" has no shared locks`, {
        backend: this.#core.backend,
      });
    }
    return checked;
  }
}

/** Options of a semaphore acquire. */
export interface SemaphoreAcquireOptions {
  /** As for locks: `0` tries once; omitted waits until granted or cancelled. */
  timeoutMs?: number | undefined;
  /** Cancels the wait; nothing is held then. */
  signal?: AbortSignal | undefined;
}

/**
 * A counting semaphore: at most `limit` permits held at once across all clients. Every
 * user of one semaphore must give the same limit while it is in use (a mismatch is an
 * `InvalidArgumentError`). Each permit has its own fencing token.
 */
export class Semaphore {
  /** The semaphore's name. */
  readonly name: string;
  /** Permits available in all. */
  readonly limit: number;
  readonly #core: CoordinatorCore;

  private constructor(core: CoordinatorCore, name: string, limit: number) {
    this.#core = core;
    this.name = name;
    this.limit = limit;
  }

  /** @internal Use `coordinator.semaphore(name, { limit })`. */
  static create(core: CoordinatorCore, name: string, limit: number): Semaphore {
    return new Semaphore(core, name, limit);
  }

  /** Waits for a permit. Cancellation and session loss as for {@link Lock.acquire}. */
  async acquire(options?: SemaphoreAcquireOptions): Promise<LockHandle> {
    const checked = checkOptions("acquire options", options);
    return blockingGrant(
      this.#core,
      { kind: "semaphore", name: this.name, limit: this.limit, mode: "exclusive" },
      checked,
    );
  }

  /** Takes a permit only if one is free right now; else `null`. */
  async tryAcquire(): Promise<LockHandle | null> {
    return tryGrant(this.#core, { kind: "semaphore", name: this.name, limit: this.limit, mode: "exclusive" });
  }
}
