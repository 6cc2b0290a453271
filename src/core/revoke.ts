/**
 * An operator's revoke: ends the session of a stuck holder of a lock, semaphore or
 * leadership, through the backend's `revokeSession` (etcd: revoke its lease; PostgreSQL:
 * terminate its connections; ...). See docs/takeover.md.
 *
 * @module
 * @internal
 */
import type { CoordinatorCore } from "./core.js";
import type { QueueKind } from "./driver.js";
import { InvalidArgumentError, UnsupportedError } from "./errors.js";
import { checkName, checkOptions, describe } from "./validate.js";

/** Options of `coord.revoke()`. */
export interface RevokeOptions {
  /** Only holders of this member id (default: every holder). */
  memberId?: string | undefined;
  /** What `name` names: `"lock"` (default), `"semaphore"` or `"election"`. */
  kind?: QueueKind | undefined;
}

/** One holding a revoke ended. */
export interface RevokedHolder {
  /** The holder's member id. */
  readonly memberId: string;
  /** The session that was revoked (everything it held is lost). */
  readonly sessionId: string;
  /** The holding's fencing token, which the next holder's `takeover.token` names. */
  readonly token: bigint;
}

const KINDS: readonly QueueKind[] = ["lock", "semaphore", "election"];

/** Revokes the sessions holding `name` (see `Coordinator.revoke`). @internal */
export async function revoke(
  core: CoordinatorCore,
  name: string,
  options: RevokeOptions | undefined,
): Promise<RevokedHolder[]> {
  const { memberId, kind = "lock" } = checkOptions("revoke options", options);
  checkName("name", name);
  if (!KINDS.includes(kind)) {
    throw new InvalidArgumentError(`kind must be one of ${KINDS.join(", ")}, got ${describe(kind)}`);
  }
  if (memberId !== undefined) checkName("memberId", memberId);
  core.assertOpen();
  const driver = core.driver;
  if (!driver.revokeSession) {
    throw new UnsupportedError(`the ${core.backend} backend cannot revoke a holder's session`, {
      backend: core.backend,
    });
  }
  try {
    const snapshot = await driver.inspect();
    const queue = snapshot.queues.find((q) => q.kind === kind && q.name === name);
    const holders = (queue?.holders ?? []).filter((h) => memberId === undefined || h.memberId === memberId);
    // One session may hold several permits of a semaphore: revoke it once.
    for (const sessionId of new Set(holders.map((h) => h.sessionId))) await driver.revokeSession(sessionId);
    return holders.map((h) => ({ memberId: h.memberId, sessionId: h.sessionId, token: h.token }));
  } catch (error) {
    throw core.translate(error);
  }
}
