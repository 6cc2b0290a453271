/**
 * Release, upgrade and downgrade of a granted queue key.
 *
 * Upgrade: the shared holder first creates the lock's upgrade marker (`u/<kind>/<name>`,
 * bound to its lease, value: its queue key) with a "does not exist" condition, in the same
 * transaction that reads the queue. From then on no shared request can be granted (their
 * grants require the marker to be absent) and no exclusive waiter can (the upgrader's key
 * is older), so the upgrader waits only for the other holders it saw, then records itself
 * exclusive; that transaction's revision is the new token. A second upgrader finds the
 * marker taken and gets `DeadlockError` at once. The marker stays until release or
 * downgrade, so a reader that looked at the queue just before the upgrade cannot record a
 * grant after it.
 *
 * @module
 */
import { atMost } from "../../core/abortable.js";
import type { IRequestOp } from "etcd3";
import type { LockMode } from "../../core/driver.js";
import { LockLostError } from "../../core/errors.js";
import { notHeld, releasedWhileUpgrading, upgradeDeadlock } from "../../core/refusals.js";
import { op, raceSignal, rangeAt, sleep, when, within } from "./client.js";
import { BACKEND, isTransient, translate } from "./errors.js";
import type { EtcdGrant } from "./grant.js";
import { encodeQueueValue } from "./keys.js";
import { type QueueView, upgradeBlockers, viewOf } from "./queue.js";
import { FIRST_RETRY_DELAY_MS, linked, nextDelay, removeKeys, retrying, type Scope } from "./scope.js";
import { dropRecordOp } from "./takeover.js";
import { nextChange } from "./watch.js";

/**
 * Deletes the grant's key (and its upgrade marker, and its takeover record if still at
 * `grant.recordVersion`), all in one transaction. Waits at most one call attempt's
 * deadline for etcd to confirm; otherwise it rejects (the core reports `unconfirmed`) and
 * keeps deleting the key and marker in the background, ending the session if etcd refuses
 * for a whole TTL. The record is not deleted again: once the key is gone a successor may
 * be granted, and a record left behind is reported to it as a takeover (the cautious side).
 */
export async function release(scope: Scope, grant: EtcdGrant): Promise<void> {
  if (grant.released) return;
  grant.released = true;
  const upgrading = grant.upgrade;
  grant.upgrade = null;
  upgrading?.abort(releasedWhileUpgrading({ backend: BACKEND }));
  const { queue, key } = grant;
  const marked = grant.marker || upgrading !== null;
  const also: IRequestOp[] = [];
  if (marked) {
    also.push({
      request_txn: { compare: [when.valueIs(queue.marker, key)], success: [op.del(queue.marker)], failure: [] },
    });
  }
  if (grant.recordVersion !== undefined) also.push(dropRecordOp(scope.keys, queue.name, grant.recordVersion));
  const sent =
    also.length > 0
      ? scope.client.kv.txn({ compare: [], success: [op.del(key), ...also], failure: [] })
      : scope.client.kv.deleteRange({ key: Buffer.from(key) });
  try {
    await within<unknown>(sent, scope.requestTimeoutMs);
    grant.marker = false;
  } catch (error) {
    // Keep trying in the background; if etcd keeps refusing, the session ends and its
    // lease frees the lock, so a release is never silently lost.
    void removeKeys(scope, marked ? [key, queue.marker] : [key]);
    throw translate(error, `releasing ${grant.kind} "${queue.name}"`);
  }
}

/** Upgrades (waits) or downgrades (never waits) a lock grant. */
export async function convert(scope: Scope, grant: EtcdGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
  if (grant.released) throw notHeld({ backend: BACKEND });
  if (grant.mode === mode) return;
  // A handoff grant still being recorded: that write must not land after this one's. The
  // wait ends with the caller's signal (an outage must not hold a downgrade for a TTL).
  if (grant.recording) await raceSignal(grant.recording, signal);
  if (grant.released) throw notHeld({ backend: BACKEND });
  if (mode === "shared") return downgrade(scope, grant, signal);
  return upgrade(scope, grant, signal);
}

async function downgrade(scope: Scope, grant: EtcdGrant, signal: AbortSignal): Promise<void> {
  const { queue, key } = grant;
  const response = await retrying(
    scope,
    `downgrading lock "${queue.name}"`,
    () =>
      scope.client.kv.txn({
        compare: [when.is(key, grant.createRevision)],
        success: [
          op.put(key, grantValue(scope, grant, "s", true), scope.leaseId),
          ...(grant.marker ? [op.del(queue.marker)] : []),
        ],
        failure: [],
      }),
    signal,
  );
  if (!response.succeeded) throw lost(grant);
  grant.mode = "shared";
  grant.marker = false;
}

async function upgrade(scope: Scope, grant: EtcdGrant, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw signal.reason;
  const { queue, key } = grant;
  const controller = new AbortController();
  grant.upgrade = controller;
  const stop = linked([signal, controller.signal, scope.ended]);
  const what = `upgrading lock "${queue.name}"`;
  let inflight: Promise<unknown> | undefined;
  // Whether the marker may be ours: from sending the claim until etcd says it is not.
  let mayOwnMarker = false;
  // Claims from this process reach etcd in call order (see claimInOrder).
  const claimed = claimInOrder(queue.marker);
  try {
    await raceSignal(claimed.turn, stop.signal);
    // Take the upgrade marker and read the holders at the same revision.
    const claim = await retrying(
      scope,
      what,
      () => {
        mayOwnMarker = true;
        return (inflight = scope.client.kv.txn({
          compare: [when.absent(queue.marker), when.is(key, grant.createRevision)],
          success: [op.put(queue.marker, Buffer.from(key), scope.leaseId), op.scan(queue.prefix)],
          failure: [op.get(queue.marker), op.get(key)],
        }));
      },
      stop.signal,
    ).finally(claimed.done);
    let view: QueueView;
    if (claim.succeeded) {
      view = { ...viewOf(claim, 1, -1), marker: key };
    } else {
      const owner = rangeAt(claim, 0)[0]?.value.toString();
      mayOwnMarker = owner === key;
      if (rangeAt(claim, 1).length === 0) throw lost(grant);
      if (owner !== key) {
        throw upgradeDeadlock({ backend: BACKEND });
      }
      view = await read(scope, grant, stop.signal); // ours: an earlier attempt's answer was lost
    }
    grant.marker = true;
    for (;;) {
      if (!view.entries.some((e) => e.key === key)) throw lost(grant);
      const first = upgradeBlockers(view, key)[0];
      if (first) {
        // Wait for one of them to leave, then look again (one read per holder leaving).
        const change = await nextChange(
          scope.client,
          [{ key: first.key, deletesOnly: true }],
          view.revision + 1n,
          () => true,
          stop.signal,
          scope.watches,
        );
        if (change === "broken") await sleep(50, stop.signal);
        view = await read(scope, grant, stop.signal);
        continue;
      }
      const done = await retrying(
        scope,
        what,
        () =>
          (inflight = scope.client.kv.txn({
            compare: [when.is(key, grant.createRevision), when.valueIs(queue.marker, key)],
            success: [op.put(key, grantValue(scope, grant, "x", false), scope.leaseId)],
            failure: [op.scan(queue.prefix), op.get(queue.marker)],
          })),
        stop.signal,
      );
      if (done.succeeded) {
        grant.mode = "exclusive";
        grant.token = BigInt(done.header.revision);
        return;
      }
      view = viewOf(done, 0, 1);
      if (view.marker !== key) throw lost(grant);
    }
  } catch (error) {
    // Cancelled, refused or failed: give the marker back (the grant stays shared). A
    // released grant's release already removed it.
    if (mayOwnMarker && !grant.released && grant.mode === "shared") {
      const removal = withdrawMarker(scope, grant, inflight);
      if (!scope.ended.aborted) await atMost(removal, scope.requestTimeoutMs);
    }
    if (controller.signal.aborted) throw controller.signal.reason;
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    claimed.done();
    if (grant.upgrade === controller) grant.upgrade = null;
    stop.dispose();
  }
}

const claims = new Map<string, Promise<void>>();

/**
 * Lines up the upgrade claims this process makes on one lock, so that they reach etcd in
 * the order they were called: of two holders in one process that upgrade one after the
 * other, the second is the one refused, as with an in-process lock table.
 */
function claimInOrder(marker: string): { turn: Promise<void>; done: () => void } {
  const turn = claims.get(marker) ?? Promise.resolve();
  let done!: () => void;
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const tail = turn.then(() => finished);
  claims.set(marker, tail);
  void tail.then(() => {
    if (claims.get(marker) === tail) claims.delete(marker);
  });
  return { turn, done };
}

/**
 * Removes the upgrade marker if it is this grant's, after `inflight` settled. A marker
 * left behind would keep every reader out, so if etcd keeps refusing, the session ends
 * and its lease takes the marker.
 */
async function withdrawMarker(scope: Scope, grant: EtcdGrant, inflight: Promise<unknown> | undefined): Promise<void> {
  if (inflight) await inflight.catch(() => {});
  const { queue, key } = grant;
  const deadline = Date.now() + scope.ttlMs;
  for (let delay = FIRST_RETRY_DELAY_MS; ; delay = nextDelay(delay)) {
    if (scope.ended.aborted) return;
    try {
      await scope.client.kv.txn({
        compare: [when.valueIs(queue.marker, key)],
        success: [op.del(queue.marker)],
        failure: [],
      });
      grant.marker = false;
      return;
    } catch (error) {
      if (Date.now() + delay > deadline || !isTransient(error)) {
        scope.lost(translate(error, `withdrawing the upgrade of lock "${queue.name}"; ending the session to free it`));
        return;
      }
      await sleep(delay);
    }
  }
}

async function read(scope: Scope, grant: EtcdGrant, signal: AbortSignal): Promise<QueueView> {
  const response = await retrying(
    scope,
    `reading lock "${grant.queue.name}"`,
    () =>
      scope.client.kv.txn({
        compare: [],
        success: [op.scan(grant.queue.prefix), op.get(grant.queue.marker)],
        failure: [],
      }),
    signal,
  );
  return viewOf(response, 0, 1);
}

function grantValue(scope: Scope, grant: EtcdGrant, mode: "x" | "s", keepToken: boolean): Buffer {
  return encodeQueueValue({
    m: mode,
    l: grant.limit,
    s: grant.since,
    id: scope.memberId,
    sid: scope.sessionId,
    ...(keepToken ? { t: grant.token.toString() } : {}),
  });
}

function lost(grant: EtcdGrant): LockLostError {
  const error = new LockLostError(`lock "${grant.queue.name}" is gone from etcd: the session's lease expired`, {
    backend: BACKEND,
  });
  grant.onLost(error);
  return error;
}
