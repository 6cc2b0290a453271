/**
 * Baton's error tree. Every error Baton throws is a {@link BatonError} with a stable
 * `code`, the backend it came from and, where one exists, the underlying `cause`.
 * Backends translate their client library's errors into this tree in one place each.
 *
 * @module
 */

/** Stable machine-readable error codes. */
export type BatonErrorCode =
  | "TIMEOUT"
  | "ABORTED"
  | "LOCK_LOST"
  | "SESSION_EXPIRED"
  | "DEADLOCK"
  | "INVALID_ARGUMENT"
  | "INVALID_STATE"
  | "UNSUPPORTED"
  | "BACKEND_UNAVAILABLE"
  | "MISSING_GUARANTEE"
  | "CLOSED"
  | "CONFLICT"
  | "FENCED"
  | "FENCE_FAILED"
  | "CANNOT_REVOKE";

/** Options common to every Baton error. */
export interface BatonErrorOptions {
  /** Backend name (`memory`, `file`, `etcd`, ...), when the error concerns one. */
  backend?: string | undefined;
  /** The underlying error, e.g. the client library's. */
  cause?: unknown;
}

/** Root of every error Baton throws. Check `code` rather than the message. */
export class BatonError extends Error {
  /** Stable code; see {@link BatonErrorCode}. */
  readonly code: BatonErrorCode;
  /** Backend the error concerns, when there is one. */
  readonly backend: string | undefined;

  constructor(code: BatonErrorCode, message: string, options: BatonErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.backend = options.backend;
  }
}

/** A blocking call ran out of its `timeoutMs` before it could be granted. Nothing is held. */
export class TimeoutError extends BatonError {
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;
  constructor(message: string, timeoutMs: number, options?: BatonErrorOptions) {
    super("TIMEOUT", message, options);
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A blocking call was cancelled through its `AbortSignal`. Nothing is held and no trace of
 * the waiter is left. `name` is `"AbortError"` like the platform's own cancellations, and
 * `cause` is the signal's `reason`.
 */
export class AbortError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("ABORTED", message, options);
    this.name = "AbortError";
  }
}

/**
 * The same class as {@link AbortError}, under its first name (`instanceof` either works).
 * @deprecated Use {@link AbortError}, whose class name agrees with its `name`.
 */
export const AbortedError = AbortError;
/** @deprecated Use {@link AbortError}. */
export type AbortedError = AbortError;

/** A held lock, permit or leadership was lost (session expired, connection dropped, ...). */
export class LockLostError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("LOCK_LOST", message, options);
  }
}

/** The coordinator's session (lease) ended: everything it held is gone. */
export class SessionExpiredError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("SESSION_EXPIRED", message, options);
  }
}

/**
 * Granting the request could never succeed because of another request, e.g. two shared
 * holders of one lock both asking to upgrade. The caller still holds what it held before.
 */
export class DeadlockError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("DEADLOCK", message, options);
  }
}

/** An argument was rejected; the message says what was wrong and what is allowed. */
export class InvalidArgumentError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("INVALID_ARGUMENT", message, options);
  }
}

/** The call is not valid in the object's current state (e.g. upgrading an exclusive lock). */
export class InvalidStateError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("INVALID_STATE", message, options);
  }
}

/** The backend does not support this feature (see its declared guarantees). */
export class UnsupportedError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("UNSUPPORTED", message, options);
  }
}

/** The backend could not be reached or refused to work (permissions, server down, ...). */
export class BackendUnavailableError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("BACKEND_UNAVAILABLE", message, options);
  }
}

/** `connect()` was asked for guarantees the chosen backend does not give. */
export class MissingGuaranteeError extends BatonError {
  /** The guarantees that were required but are missing. */
  readonly missing: readonly string[];
  constructor(message: string, missing: readonly string[], options?: BatonErrorOptions) {
    super("MISSING_GUARANTEE", message, options);
    this.missing = missing;
  }
}

/** The coordinator was closed; create a new one with `connect()`. */
export class ClosedError extends BatonError {
  constructor(message: string, options?: BatonErrorOptions) {
    super("CLOSED", message, options);
  }
}

/** A cell's state as a conflict or fence error reports it: `null` when the cell is absent. */
export interface CellStateInfo {
  readonly value: unknown;
  readonly version: bigint;
}

/**
 * A conditional cell write (`ifVersion`, `transition`'s `from`) did not hold: someone else
 * wrote first. Nothing was written. `current` is the cell's state read after the refusal
 * (`null` if the cell is absent), so the caller can tell who won.
 */
export class ConflictError extends BatonError {
  readonly current: CellStateInfo | null;
  constructor(message: string, current: CellStateInfo | null, options?: BatonErrorOptions) {
    super("CONFLICT", message, options);
    this.current = current;
  }
}

/**
 * A fenced cell write carried a lower fence (lock token) than one the cell has already
 * seen: its writer's lock was taken over since. Nothing was written.
 */
export class FencedError extends BatonError {
  /** The fence the write carried. */
  readonly fence: bigint;
  /** The highest fence the cell has seen. */
  readonly seen: bigint;
  readonly current: CellStateInfo | null;
  constructor(
    message: string,
    fence: bigint,
    seen: bigint,
    current: CellStateInfo | null,
    options?: BatonErrorOptions,
  ) {
    super("FENCED", message, options);
    this.fence = fence;
    this.seen = seen;
    this.current = current;
  }
}

/**
 * An `onTakeover` hook threw (or rejected): the previous holder could not be fenced. The
 * lock was released again before this was thrown and the previous holder's takeover record
 * was left in place, so the next acquirer (a retry of this one included) is handed the
 * same takeover and must fence it too. `cause` is what the hook threw.
 */
export class FenceFailedError extends BatonError {
  /** The lock's name. */
  readonly lockName: string;
  /** The fencing token of the unfenced previous holding. */
  readonly previousToken: bigint;
  constructor(message: string, lockName: string, previousToken: bigint, options?: BatonErrorOptions) {
    super("FENCE_FAILED", message, options);
    this.lockName = lockName;
    this.previousToken = previousToken;
  }
}

/** Who holds what a revoke could not end, as far as the backend can tell. */
export interface RevokeHolderInfo {
  /** The holder's member id. */
  readonly memberId: string;
  /** The holder's session id. */
  readonly sessionId: string;
  /** Process id of the holding process, where the backend knows it (file backend). */
  readonly pid?: number | undefined;
  /** Host name of the holding process, where the backend knows it (file backend). */
  readonly host?: string | undefined;
  /**
   * The holding process's start time (field 22 of Linux's /proc/<pid>/stat), given only
   * when the backend verified that `pid` is the holder (file backend: the process holds
   * the holder's mesh socket). Compare it right before signalling `pid`: a pid reused
   * since has another start time.
   */
  readonly startTime?: string | undefined;
}

/**
 * `coord.revoke()` cannot end this holding: the backend has no way to take a lock from a
 * live holder (the file backend: only the holder's death frees its kernel lock). `holders`
 * says who holds it, with pid and host where known, so an operator can end that process.
 */
export class CannotRevokeError extends BatonError {
  /** The holders that could not be revoked. */
  readonly holders: readonly RevokeHolderInfo[];
  constructor(message: string, holders: readonly RevokeHolderInfo[], options?: BatonErrorOptions) {
    super("CANNOT_REVOKE", message, options);
    this.holders = holders;
  }
}
