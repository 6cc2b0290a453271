/**
 * mysql2 and server errors, translated into Baton's error tree: the one place the mysql
 * backend decides what a failure means.
 *
 * @module
 */
import {
  BackendUnavailableError,
  BatonError,
  DeadlockError,
  InvalidArgumentError,
  InvalidStateError,
  SessionExpiredError,
} from "../../core/errors.js";
import { upgradeDeadlock } from "../../core/refusals.js";
import { explain, explainNetwork, networkFailure } from "../explain.js";
import { BACKEND } from "./options.js";

/** Server error numbers Baton acts on; 32001+ are raised by the procedures in schema.ts. */
export const ERRNO = {
  keyInUse: 32001,
  collision: 32002,
  limitMismatch: 32003,
  notHeld: 32004,
  concurrentUpgrade: 32005,
  interrupted: 1317,
  deadlock: 1213,
  userLockDeadlock: 3058,
  foreignKey: 1452,
  accessDenied: 1045,
  badDatabase: 1049,
  killed: 1927,
} as const;

/** The server's error number, if the error came from the server. */
export function errno(error: unknown): number | undefined {
  const n = (error as { errno?: unknown } | null)?.errno;
  return typeof n === "number" ? n : undefined;
}

/** A connection was lost or had to be dropped (timeout, protocol failure). */
export class ConnectionLostError extends BackendUnavailableError {
  constructor(message: string, cause?: unknown) {
    super(message, { backend: BACKEND, cause });
  }
}

/** Whether the error means the connection itself is gone (not a failed statement). */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof ConnectionLostError) return true;
  if (error instanceof BatonError || !(error instanceof Error)) return false;
  const e = error as { fatal?: unknown; code?: unknown };
  if (e.fatal === true) return true;
  if (errno(error) === ERRNO.killed) return true;
  return typeof e.code === "string" && /^(PROTOCOL_|E[A-Z]+$)/.test(e.code);
}

/** Translates any error from mysql2 or the server into a Baton error; `what` is what was being done. */
export function translate(error: unknown, what: string): BatonError {
  if (error instanceof BatonError) return error;
  const message = error instanceof Error ? error.message : String(error);
  switch (errno(error)) {
    case ERRNO.collision:
      return new InvalidStateError(
        `${what}: its 256-bit name hash is registered for another name; two names sharing a key would exclude each other, so Baton refuses. Rename one of them`,
        { backend: BACKEND, cause: error },
      );
    case ERRNO.limitMismatch:
      return new InvalidArgumentError(
        `${what}: the limit does not match the limit its current holders use; every user of one semaphore must give the same limit`,
        { backend: BACKEND, cause: error },
      );
    case ERRNO.concurrentUpgrade:
      return upgradeDeadlock({ backend: BACKEND, cause: error });
    case ERRNO.notHeld:
      return new InvalidStateError(`${what}: the lock is not held on this connection`, {
        backend: BACKEND,
        cause: error,
      });
    case ERRNO.deadlock:
    case ERRNO.userLockDeadlock:
      return new DeadlockError(`${what}: the server detected a deadlock: ${message}`, {
        backend: BACKEND,
        cause: error,
      });
    case ERRNO.foreignKey:
      return new SessionExpiredError(`${what}: the session has ended on the server`, {
        backend: BACKEND,
        cause: error,
      });
    case ERRNO.accessDenied:
      return new BackendUnavailableError(`${what}: authentication failed: ${message}`, {
        backend: BACKEND,
        cause: error,
      });
    case ERRNO.badDatabase:
      return new BackendUnavailableError(
        explain(what, "MySQL", `answered: ${message}`, "the database name in the URL"),
        {
          backend: BACKEND,
          cause: error,
        },
      );
  }
  const failure = errno(error) === undefined ? networkFailure(error) : undefined;
  if (failure)
    return new BackendUnavailableError(explainNetwork(what, "MySQL", failure), { backend: BACKEND, cause: error });
  return new BackendUnavailableError(`${what}: ${message}`, { backend: BACKEND, cause: error });
}
