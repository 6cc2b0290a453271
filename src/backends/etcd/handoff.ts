/**
 * The one-round-trip handoff: an exclusive waiter second in line is granted by the
 * deletion event of the only key older than its own, with the deletion's revision as its
 * token, and records the grant after returning it.
 *
 * Why that revision is a safe token: no older key can appear after a view showed only the
 * head (create revisions only grow); the deletion's revision is larger than every earlier
 * grant's token on this name (each was recorded before the head went) and smaller than any
 * later one's (each comes after our own key goes). What the recording transaction would
 * check, our own key still existing at that revision (the check Jepsen found etcd 3.4.3
 * locks lacking), is read from the same watch: it reports every deletion in the queue in
 * revision order, and etcd never splits one revision's events over two watch responses
 * (it batches whole revisions; only a watch asking for fragments gets a revision in
 * parts). A lease revoked or expired deletes the head and our key in one revision, in key
 * order, so the head's event may come first in that revision's batch: a batch that deletes
 * our own key therefore never grants, whatever its order.
 *
 * @module
 */
import { LockLostError } from "../../core/errors.js";
import { op, when } from "./client.js";
import { BACKEND } from "./errors.js";
import type { EtcdGrant } from "./grant.js";
import { removeKeys, retrying, type Scope } from "./scope.js";
import type { WatchedEvent } from "./watch.js";

/**
 * What one batch of deletion events in the queue means for the waiter whose key is `own`
 * and whose only older key is `head`: `undefined` when neither went (wait on), the head's
 * deletion revision when it went and `own` did not (the handoff), `0n` when `own` went
 * (woken without a grant: the recording path reads the queue again and finds the key gone).
 */
export function handoffRevision(events: readonly WatchedEvent[], own: string, head: string): bigint | undefined {
  let revision: bigint | undefined;
  for (const event of events) {
    const key = event.kv.key.toString();
    if (key === own) return 0n;
    if (key === head && revision === undefined) revision = BigInt(event.kv.mod_revision || 0);
  }
  return revision;
}

/**
 * Records a handoff grant (its key's value without the waiting flag, with its token) for
 * `inspect()` and conversions, in the background, and sets `grant.recording` until it
 * lands. A recording that finds the key gone, or fails for any reason other than the
 * session's end (which reports the loss itself), calls `grant.onLost`: a grant is never
 * held unrecorded without the holder being told. After such a failure the key is deleted
 * (etcd takes deletions even when out of space), so it does not block the queue until
 * the holder's release.
 */
export function recordHandoff(scope: Scope, grant: EtcdGrant, value: Buffer): void {
  const what = `recording a grant of ${grant.kind} "${grant.queue.name}"`;
  const { key, createRevision } = grant;
  grant.recording = retrying(
    scope,
    what,
    () =>
      scope.client.kv.txn({
        compare: [when.is(key, createRevision)],
        success: [op.put(key, value, scope.leaseId)],
        failure: [],
      }),
    scope.ended,
  ).then(
    (response) => {
      grant.recording = null;
      if (!response.succeeded && !grant.released) {
        grant.onLost(new LockLostError(`${what}: its queue key is gone`, { backend: BACKEND }));
      }
    },
    (error: unknown) => {
      grant.recording = null;
      if (scope.ended.aborted || grant.released) return;
      const reason = error instanceof Error ? error : new Error(String(error));
      grant.onLost(new LockLostError(`${what} failed: ${reason.message}`, { backend: BACKEND, cause: reason }));
      void removeKeys(scope, [key]);
    },
  );
}
