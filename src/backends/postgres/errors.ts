/**
 * node-postgres and PostgreSQL errors, translated into Baton's error tree: the one place
 * the postgres backend decides what a failure means.
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
  UnsupportedError,
} from "../../core/errors.js";
import { explain, explainNetwork, networkFailure } from "../explain.js";
import { BACKEND } from "./options.js";

/** Baton's own SQLSTATEs, raised by the functions in migrations.ts. */
export const SQLSTATE = {
  collision: "BT001",
  limitMismatch: "BT002",
  queryCanceled: "57014",
  deadlock: "40P01",
  foreignKey: "23503",
} as const;

/** The SQLSTATE of a server error, if it is one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Whether the error means the connection itself is gone (not a failed statement). */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof ConnectionLostError) return true;
  if (error instanceof BatonError || !(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") return /^(08|57P)/.test(code) || /^E[A-Z]+$/.test(code);
  return /connection|terminated|socket|not queryable/i.test(error.message);
}

/** A connection was lost or had to be dropped (timeout, protocol failure). */
export class ConnectionLostError extends BackendUnavailableError {
  constructor(message: string, cause?: unknown) {
    super(message, { backend: BACKEND, cause });
  }
}

/**
 * Translates any error from node-postgres or the server into a Baton error. `what` says
 * what was being done, for the message.
 */
export function translate(error: unknown, what: string): BatonError {
  if (error instanceof BatonError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const state = sqlState(error);
  const detail = (error as { detail?: string } | null)?.detail;
  switch (state) {
    case SQLSTATE.collision: {
      const other = detail ? (JSON.parse(detail) as { namespace: string; kind: string; name: string }) : undefined;
      return new InvalidStateError(
        `${what}: its 64-bit advisory key collides with ${
          other
            ? `${other.kind} ${JSON.stringify(other.name)} in namespace ${JSON.stringify(other.namespace)}`
            : "another name"
        }; two names sharing a key would exclude each other, so Baton refuses. Rename one of them`,
        { backend: BACKEND, cause: error },
      );
    }
    case SQLSTATE.limitMismatch:
      return new InvalidArgumentError(
        `${what}: the limit does not match the limit ${detail ?? "?"} its current holders use; every user of one semaphore must give the same limit`,
        { backend: BACKEND, cause: error },
      );
    case SQLSTATE.deadlock:
      return new DeadlockError(`${what}: PostgreSQL detected a deadlock: ${message}`, {
        backend: BACKEND,
        cause: error,
      });
    case SQLSTATE.foreignKey:
      return new SessionExpiredError(`${what}: the session has ended on the server`, {
        backend: BACKEND,
        cause: error,
      });
    case "25006":
      return new BackendUnavailableError(`${what}: the server is read-only (a standby?): ${message}`, {
        backend: BACKEND,
        cause: error,
      });
    case "42501":
      return new BackendUnavailableError(
        `${what}: permission denied (${message}); the role needs CREATE on the database (first run) and USAGE/CREATE on the schema`,
        { backend: BACKEND, cause: error },
      );
    case "0A000":
      return new UnsupportedError(`${what}: ${message}`, { backend: BACKEND, cause: error });
  }
  if (state?.startsWith("28")) {
    return new BackendUnavailableError(`${what}: authentication failed: ${message}`, {
      backend: BACKEND,
      cause: error,
    });
  }
  if (state === "3D000") {
    return new BackendUnavailableError(
      explain(what, "PostgreSQL", `answered: ${message}`, "the database name in the URL"),
      {
        backend: BACKEND,
        cause: error,
      },
    );
  }
  const failure = state === undefined ? networkFailure(error) : undefined;
  if (failure) {
    return new BackendUnavailableError(explainNetwork(what, "PostgreSQL", failure), {
      backend: BACKEND,
      cause: error,
    });
  }
  return new BackendUnavailableError(`${what}: ${message}`, { backend: BACKEND, cause: error });
}
