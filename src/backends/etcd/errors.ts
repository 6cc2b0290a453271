/**
 * The one place where the `etcd3` client's errors become Baton errors.
 *
 * @module
 */
import {
  ClientClosedError,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  isRecoverableError,
} from "etcd3";
import { BackendUnavailableError, BatonError, ClosedError, SessionExpiredError } from "../../core/errors.js";
import { explain, explainNetwork, networkFailure } from "../explain.js";

export const BACKEND = "etcd";

/** Makes any error a Baton error; Baton errors pass through unchanged. */
export function translate(error: unknown, what: string): BatonError {
  if (error instanceof BatonError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const options = { backend: BACKEND, cause: error };
  if (error instanceof EtcdLeaseInvalidError) {
    return new SessionExpiredError(`${what}: etcd no longer knows this session's lease (${message})`, options);
  }
  if (error instanceof EtcdAuthenticationFailedError || error instanceof EtcdInvalidAuthTokenError) {
    return new BackendUnavailableError(`${what}: etcd refused the credentials (${message})`, options);
  }
  if (error instanceof EtcdPermissionDeniedError) {
    return new BackendUnavailableError(
      `${what}: etcd denied permission; the user needs read/write access to the "baton/" prefix (${message})`,
      options,
    );
  }
  if (error instanceof ClientClosedError) return new ClosedError(`${what}: the etcd client is closed`, options);
  const failure = networkFailure(error);
  if (failure) return new BackendUnavailableError(explainNetwork(what, "etcd", failure), options);
  if (/^14 UNAVAILABLE/.test(message)) {
    return new BackendUnavailableError(
      explain(
        what,
        "etcd",
        "is unavailable (no connection could be established)",
        "that etcd runs and the URL's hosts",
      ),
      options,
    );
  }
  // gRPC's own text ("... Resolution note: ...") stays in `cause`; show its first sentence.
  return new BackendUnavailableError(`${what}: etcd failed: ${message.split(". ")[0]}`, options);
}

/** Whether retrying may help: network trouble, timeouts, leader changes, a resting host. */
export function isTransient(error: unknown): boolean {
  if (error instanceof BatonError) return error.code === "BACKEND_UNAVAILABLE" && isTransient(error.cause);
  if (!(error instanceof Error)) return false;
  if (error instanceof HostResting) return true;
  if (isRecoverableError(error)) return true;
  // etcd's own transient refusals (leader changes, "too many requests", ...).
  return /etcdserver: (leader changed|no leader|request timed out|too many requests|not capable)/.test(error.message);
}

/**
 * Thrown instead of calling a host that failed just before (see client.ts). Not marked
 * recoverable for the etcd3 client, so it moves on to the next host instead of resetting
 * this one's channels.
 */
export class HostResting extends Error {
  constructor(host: string) {
    super(`etcd host ${host} failed moments ago; trying others`);
    this.name = "HostResting";
  }
}
