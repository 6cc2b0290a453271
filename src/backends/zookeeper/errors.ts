/**
 * The one place where ZooKeeper result codes become Baton errors.
 *
 * @module
 */
import { BackendUnavailableError, BatonError, ClosedError, SessionExpiredError } from "../../core/errors.js";

/** The backend name, for errors. */
export const BACKEND = "zookeeper";

/** ZooKeeper result codes Baton reacts to (the wire protocol's, as in the C client's zookeeper.h). */
export const RC = {
  OK: 0,
  SYSTEMERROR: -1,
  CONNECTIONLOSS: -4,
  OPERATIONTIMEOUT: -7,
  INVALIDSTATE: -9,
  NONODE: -101,
  NOAUTH: -102,
  BADVERSION: -103,
  NODEEXISTS: -110,
  NOTEMPTY: -111,
  SESSIONEXPIRED: -112,
  AUTHFAILED: -115,
  CLOSING: -116,
  SESSIONMOVED: -118,
} as const;

/** A failed ZooKeeper call, keeping its result code. */
export class ZkError extends Error {
  readonly rc: number;
  constructor(rc: number, message: string) {
    super(`${message} (ZooKeeper code ${rc})`);
    this.name = "ZkError";
    this.rc = rc;
  }
}

/** A multi that failed as a whole: `rc` is the first failing op's code, `op` its index. */
export class ZkMultiError extends ZkError {
  readonly op: number;
  constructor(rc: number, op: number, message: string) {
    super(rc, `${message}: op ${op} failed`);
    this.name = "ZkMultiError";
    this.op = op;
  }
}

/** Whether `error` is a multi that failed at op `op` with result code `rc`. */
export function failedAt(error: unknown, op: number, rc: number): boolean {
  return error instanceof ZkMultiError && error.op === op && error.rc === rc;
}

/** Whether `error` is a ZooKeeper failure with result code `rc`. */
export function hasCode(error: unknown, rc: number): boolean {
  return error instanceof ZkError && error.rc === rc;
}

/** Whether the call may have failed only because the connection dropped: retry once reconnected. */
export function isTransient(error: unknown): boolean {
  return error instanceof ZkError && (error.rc === RC.CONNECTIONLOSS || error.rc === RC.OPERATIONTIMEOUT);
}

/** Makes any error a Baton error; Baton errors pass through unchanged. */
export function translate(error: unknown, what: string): BatonError {
  if (error instanceof BatonError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const options = { backend: BACKEND, cause: error };
  if (error instanceof ZkError) {
    if (error.rc === RC.SESSIONEXPIRED || error.rc === RC.INVALIDSTATE) {
      return new SessionExpiredError(`${what}: the ZooKeeper session has expired (${message})`, options);
    }
    if (error.rc === RC.CLOSING) return new ClosedError(`${what}: the ZooKeeper client is closed`, options);
    if (error.rc === RC.NOAUTH || error.rc === RC.AUTHFAILED) {
      return new BackendUnavailableError(
        `${what}: ZooKeeper refused the credentials or the node's ACL denies them (${message})`,
        options,
      );
    }
  }
  return new BackendUnavailableError(`${what}: ZooKeeper failed: ${message}`, options);
}
