/**
 * The refusals of the granting rule (`grant-rule.ts`), built in one place so that every
 * backend raises the same error with the same sentence.
 *
 * @module
 */
import { type BatonErrorOptions, DeadlockError, InvalidArgumentError, InvalidStateError } from "./errors.js";

/** A second upgrade of one lock while another holder's is pending: both would wait forever. */
export function upgradeDeadlock(options?: BatonErrorOptions): DeadlockError {
  return new DeadlockError(
    "another shared holder of this lock is already upgrading; both would wait for each other forever. Release the shared lock and acquire it exclusively instead",
    options,
  );
}

/**
 * A semaphore request whose `limit` differs from the one its queue's holders and waiters
 * gave (`theirs`; `undefined` when the backend cannot tell which).
 */
export function limitMismatch(limit: number, theirs: number | undefined, options?: BatonErrorOptions) {
  return new InvalidArgumentError(
    `limit ${limit} does not match the limit ${theirs ?? "(unknown)"} its current holders and waiters use; every user of one semaphore must give the same limit`,
    options,
  );
}

/** The grant was released while its own upgrade was still pending: the upgrade ends with this. */
export function releasedWhileUpgrading(options?: BatonErrorOptions): InvalidStateError {
  return new InvalidStateError("the lock was released while its upgrade was pending", options);
}

/** A conversion asked of a grant that is no longer held. */
export function notHeld(options?: BatonErrorOptions): InvalidStateError {
  return new InvalidStateError("the lock is not held", options);
}
