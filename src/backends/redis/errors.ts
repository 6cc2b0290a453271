/**
 * The one place where node-redis errors become Baton errors.
 *
 * @module
 */
import { BackendUnavailableError, BatonError, ClosedError } from "../../core/errors.js";
import { explain, explainNetwork, networkFailure } from "../explain.js";

export const BACKEND = "redis";

/** Server replies that mean "try again" (loading, failing over, busy script). */
const TRANSIENT_REPLY = /^(LOADING|READONLY|MASTERDOWN|TRYAGAIN|BUSY|CLUSTERDOWN|NOREPLICAS)\b/;
/** Server replies that mean the credentials are wrong. */
const AUTH_REPLY = /^(WRONGPASS|NOAUTH|NOPERM)\b/;

/** node-redis's `ErrorReply` or a subclass (`SimpleError` under RESP3), without importing it. */
function isServerReply(error: unknown): error is Error {
  for (
    let proto = error instanceof Error ? Object.getPrototypeOf(error) : null;
    proto;
    proto = Object.getPrototypeOf(proto)
  ) {
    if (proto.constructor?.name === "ErrorReply") return true;
  }
  return false;
}

function isClientClosed(error: unknown): boolean {
  return error instanceof Error && error.constructor.name === "ClientClosedError";
}

/** Makes any error a Baton error; Baton errors pass through unchanged. */
export function translate(error: unknown, what: string): BatonError {
  if (error instanceof BatonError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const options = { backend: BACKEND, cause: error };
  if (isClientClosed(error)) return new ClosedError(`${what}: the Redis client is closed`, options);
  if (isServerReply(error)) {
    if (AUTH_REPLY.test(message)) {
      return new BackendUnavailableError(
        explain(
          what,
          "Redis",
          `refused the credentials (${message})`,
          "the user name and password in the URL, and the user's ACL",
        ),
        options,
      );
    }
    return new BackendUnavailableError(
      explain(what, "Redis", `answered: ${message}`, "the server's log and version (7 or later)"),
      options,
    );
  }
  const failure = networkFailure(error);
  if (failure) return new BackendUnavailableError(explainNetwork(what, "Redis", failure), options);
  return new BackendUnavailableError(
    explain(what, "Redis", `failed: ${message}`, "that Redis is up and reachable"),
    options,
  );
}

/** Whether retrying may help: network trouble, timeouts, a server loading or failing over. */
export function isTransient(error: unknown): boolean {
  if (error instanceof BatonError) return error.code === "BACKEND_UNAVAILABLE" && isTransient(error.cause);
  if (!(error instanceof Error)) return false;
  if (isClientClosed(error)) return false;
  if (isServerReply(error)) return TRANSIENT_REPLY.test(error.message);
  return true;
}
