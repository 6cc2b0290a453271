/**
 * Release, upgrade and downgrade of a granted queue node.
 *
 * Upgrade: the shared holder creates an upgrade marker (EPHEMERAL_SEQUENTIAL, so it goes
 * with the session). Readers that join after it wait for it; writers wait anyway (the
 * upgrader's node is older). Once every other holder has left, the upgrader takes a new
 * token (a write to the queue's parent, as for a grant) and rewrites its node as exclusive. If a marker exists already, another
 * holder is upgrading: both would wait for each other forever, so this one gets
 * `DeadlockError` at once. Two upgraders that both found none and made markers at once are
 * told apart by their nodes: the older holder wins, the other withdraws its marker and gets
 * `DeadlockError`. The marker stays until release or downgrade.
 *
 * Downgrade rewrites the node as shared (keeping the token) and drops the marker; readers
 * waiting on it watch the node and the marker, so they are woken by that write.
 *
 * @module
 */
import { linked } from "../../core/abortable.js";
import type { LockMode } from "../../core/driver.js";
import { type DeadlockError, InvalidStateError, LockLostError } from "../../core/errors.js";
import { notHeld, releasedWhileUpgrading, upgradeDeadlock } from "../../core/refusals.js";
import type { ZkGrant } from "./acquire.js";
import { nextChange, readView } from "./queue-reads.js";
import { BACKEND, hasCode, RC } from "./errors.js";
import { releaseWithRecord } from "./grant-records.js";
import { markerPrefix } from "./paths.js";
import { decideUpgrade } from "./queue.js";
import { createProtected, retrying, type Scope, withdraw } from "./scope.js";

/** Deletes the grant's node (and its upgrade marker). */
export async function release(scope: Scope, grant: ZkGrant): Promise<void> {
  if (grant.released) return;
  grant.released = true;
  const upgrading = grant.upgrade;
  grant.upgrade = null;
  upgrading?.abort(releasedWhileUpgrading({ backend: BACKEND }));
  const marker = grant.marker;
  grant.marker = null;
  // Both deletes go out at once; the session's end would delete both anyway. A tracked
  // grant's record goes in one multi with its node.
  await Promise.all([
    grant.recordVersion === undefined
      ? withdraw(scope, grant.parent, { path: grant.path })
      : releaseWithRecord(scope, grant),
    marker ? withdraw(scope, grant.parent, { path: marker }) : undefined,
  ]);
}

/** Upgrades (waits) or downgrades (never waits) a lock grant. */
export async function convert(scope: Scope, grant: ZkGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
  if (grant.released) throw notHeld({ backend: BACKEND });
  if (grant.mode === mode) return;
  if (mode === "shared") return downgrade(scope, grant, signal);
  return upgrade(scope, grant, signal);
}

async function downgrade(scope: Scope, grant: ZkGrant, signal: AbortSignal): Promise<void> {
  // linked(), not AbortSignal.any: see acquire().
  const { signal: stop, dispose } = linked([signal, scope.ended]);
  const data = grant.data(scope, { m: "s", t: grant.token.toString() });
  try {
    await write(scope, grant, data, stop);
  } finally {
    dispose();
  }
  grant.mode = "shared";
  const marker = grant.marker;
  grant.marker = null;
  if (marker) await withdraw(scope, grant.parent, { path: marker });
}

async function upgrade(scope: Scope, grant: ZkGrant, signal: AbortSignal): Promise<void> {
  if (grant.upgrade) {
    throw new InvalidStateError("an upgrade of this lock is already pending", { backend: BACKEND });
  }
  const controller = new AbortController();
  grant.upgrade = controller;
  const { signal: stop, dispose } = linked([signal, scope.ended, controller.signal]);
  const prefix = markerPrefix(scope.nextTag(), seqOf(grant.name));
  let marker: string | null = null;
  try {
    // An upgrade already under way (its marker exists): this one is the second.
    const before = await readView(scope, grant.parent, false, stop);
    if (before && before.markers.length > 0) throw deadlock();
    marker = await createProtected(scope, grant.parent, prefix, grant.name, stop);
    const markerName = marker.slice(grant.parent.length + 1);
    for (;;) {
      const view = await readView(scope, grant.parent, true, stop);
      const decision = view ? decideUpgrade(view, grant.name, markerName) : { type: "missing" as const };
      if (decision.type === "missing") throw lost(grant);
      if (decision.type === "deadlock") throw deadlock();
      if (decision.type === "grant") {
        const stamp = await retrying(
          scope.handle,
          `upgrading ${grant.path}`,
          () => scope.handle.set(grant.parent, ""),
          stop,
        );
        await write(scope, grant, grant.data(scope, { m: "x", t: stamp.mzxid.toString() }), stop);
        grant.token = stamp.mzxid;
        grant.mode = "exclusive";
        grant.marker = marker;
        marker = null;
        return;
      }
      await nextChange(scope, grant.parent, { watch: [], children: true }, view as NonNullable<typeof view>, stop);
    }
  } catch (error) {
    if (marker) await withdraw(scope, grant.parent, { path: marker });
    else if (!grant.marker) void withdraw(scope, grant.parent, { prefix });
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    dispose();
    if (grant.upgrade === controller) grant.upgrade = null;
  }
}

async function write(scope: Scope, grant: ZkGrant, data: string, stop: AbortSignal) {
  try {
    return await retrying(scope.handle, `converting ${grant.path}`, () => scope.handle.set(grant.path, data), stop);
  } catch (error) {
    if (hasCode((error as { cause?: unknown }).cause, RC.NONODE)) throw lost(grant);
    throw error;
  }
}

function deadlock(): DeadlockError {
  return upgradeDeadlock({ backend: BACKEND });
}

/** The sequence number at the end of a queue node's name. */
function seqOf(name: string): number {
  return Number(name.slice(-10));
}

function lost(grant: ZkGrant): LockLostError {
  const error = new LockLostError(`the node of ${grant.path} is gone: the ZooKeeper session expired`, {
    backend: BACKEND,
  });
  grant.onLost(error);
  return error;
}
