/**
 * Takeover records written by the driver (`Driver.nativeRecords`): the record of a tracked
 * exclusive lock grant is the cell `<root>/c/takeover/<name>` (cells.ts's node and data
 * format, a persistent node, so it outlives the session), written with the grant and
 * deleted with the release, each in one multi with the holder's queue node.
 *
 * Why "with the grant" cannot be the create of the queue node: a ZooKeeper grant is not one
 * write. A node is granted by the order of the queue's sequential nodes, which a read (or
 * its predecessor's deletion event) shows after the create; no multi can say "only if this
 * node is first" (a multi checks versions, not order), and a record written with every
 * queue node's create would be written by waiters too, before they hold anything, and left
 * behind by a waiter that died waiting (the next holder would fence someone who never held
 * the lock). Curator's recipes have no record at all. So the record goes out in the round
 * trip after the grant was decided, before `acquire()` resolves, as one multi: `check` the
 * holder's own queue node and `create` the record node. That gives what the seam asks of a
 * grant's record (driver.ts):
 *
 * 1. No holder that `acquire()` resolved to is ever without its record: the multi is
 *    answered before the grant is handed out, and a grant whose multi did not write it is
 *    either withdrawn or handed to the core with the record that was there
 *    (`previousRecord`), which the core claims with a cell write fenced by the token
 *    before it resolves.
 * 2. No record is written for a holding that is already over: the check fails once the
 *    queue node is gone (revoked, or its session expired: the server refuses that
 *    session's requests too). A holder that dies after its grant was decided and before its
 *    multi landed leaves no record, but it was never handed out either.
 * 3. The create writes only where no record is: the node exists only while a holding that
 *    ended without a release left it (native records leave no tombstone: the release
 *    deletes the node). A create refused for that reads the record and hands it over as
 *    `previousRecord`: the grant made every older queue node gone, so the holder that
 *    wrote it cannot release it any more (its release's multi needs its queue node); the
 *    core's fenced rewrite is the only write that can still reach it.
 * 4. A clean release deletes the record in one multi with the queue node (`delete` node,
 *    `delete` record at the znode version this holding wrote, 0 when it created it and
 *    nothing rewrote it since). If the node is gone (the holding was lost, or revoked) the
 *    multi fails as a whole and the record stays, for the next holder; if the record is not
 *    at that version any more, only the node goes.
 *
 * Costs: the uncontended grant one round trip more than untracked (its multi), the release
 * none (the multi replaces the node's delete), a handoff one more (the waiter's multi).
 *
 * @module
 * @internal
 */
import { sealRecord } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import type { ZkGrant } from "./acquire.js";
import { cellEntry, cellData } from "./cells.js";
import { FLAGS } from "./client.js";
import { failedAt, isTransient, RC, translate } from "./errors.js";
import { ensurePath, retrying, type Scope, withdraw } from "./scope.js";

/**
 * Thrown by a grant given up after its record's multi went out (its acquisition cancelled,
 * or its note refused): the acquisition rejects with `reason` at once, and `cleanup` takes
 * the node, with the record once the multi is answered if it wrote one (a withdrawal alone
 * would leave a record naming a grant nobody got, a false takeover for the next holder).
 */
export class Abandoned extends Error {
  readonly cleanup: Promise<void>;
  readonly reason: unknown;

  constructor(scope: Scope, grant: ZkGrant, recording: Promise<unknown>, reason: unknown) {
    super(`the grant of ${grant.path} was given up`, { cause: reason });
    this.reason = reason;
    const nodeOnly = () => withdraw(scope, grant.parent, { path: grant.path });
    this.cleanup = recording.then(
      () => (grant.recordVersion === undefined ? nodeOnly() : releaseWithRecord(scope, grant)),
      nodeOnly,
    );
  }
}

/** What {@link writeRecord} did. */
export type Recorded = "written" | "found" | "gone";

/**
 * Writes the takeover record of `grant` (JSON text, sealed here with its token and grant
 * time), checked against its queue node. `"written"` sets `grant.recordVersion` (also when
 * the record found is this grant's own, written by a multi whose answer was lost); `"found"`
 * (another holding's record was there) sets `grant.previousRecord`; `"gone"`: the queue node is gone, so
 * nothing is held. The multi goes out before this returns its promise, so a request sent
 * just before it (the grant's note) shares its round trip. Once sent it is not cut by the
 * acquisition's signal (a record that may have landed must not be left behind by a grant
 * the caller never sees): a connection loss waits for the reconnection, bounded by the
 * session's end (then this rejects with its reason).
 */
export async function writeRecord(scope: Scope, grant: ZkGrant, record: string): Promise<Recorded> {
  const { handle, layout } = scope;
  const path = layout.cell(TAKEOVER_SPACE, grant.lockName);
  const data = cellData(grant.token, sealRecord(record, grant.token, grant.since));
  const ops = [
    { op: "check", path: grant.path, version: -1 },
    { op: "create", path, data, flags: FLAGS.persistent },
  ] as const;
  let ensuring: Promise<void> | null = null;
  for (;;) {
    if (scope.ended.aborted) throw scope.ended.reason;
    try {
      const { zxid } = await handle.multi(ops);
      grant.recordVersion = zxid;
      grant.recordCreated = zxid;
      return "written";
    } catch (error) {
      if (failedAt(error, 0, RC.NONODE)) return "gone";
      if (failedAt(error, 1, RC.NONODE)) {
        // The server removed the empty space node (a container): made again, with the
        // multi right behind it in the same round trip (a second miss waits for the first).
        if (ensuring) await ensuring;
        ensuring = ensurePath(handle, scope.chroot, layout.cellSpace(TAKEOVER_SPACE), scope.ended);
        ensuring.catch(() => {});
        continue;
      }
      if (failedAt(error, 1, RC.NODEEXISTS)) {
        const found = await retrying(handle, `reading ${path}`, () => handle.get(path), scope.ended);
        if (!found) continue; // deleted since: written now, if no one else is first
        const entry = cellEntry(grant.lockName, found);
        if (entry.fence === grant.token) {
          // Our own: an earlier multi of ours landed unanswered. It is this grant's record,
          // to be deleted with the node (a withdrawn grant's too), not a takeover to claim.
          grant.recordVersion = found.stat.mzxid;
          grant.recordCreated = found.stat.version === 0 ? found.stat.mzxid : null;
          return "written";
        }
        grant.previousRecord = entry;
        return "found";
      }
      if (!isTransient(error)) throw translate(error, `recording the holder of ${grant.path}`);
      await handle.waitConnected(scope.ended).catch((e: unknown) => {
        throw scope.ended.aborted ? scope.ended.reason : translate(e, `recording the holder of ${grant.path}`);
      });
    }
  }
}

/**
 * Releases a tracked grant: its queue node and its record in one multi (see the module
 * comment, point 4). Like `withdraw`, it does not throw: whatever fails, the node goes
 * alone (or with the session, which the server then ends) and the record stays, so the
 * next holder is told of a takeover: the cautious side of a release that did not land.
 */
export async function releaseWithRecord(scope: Scope, grant: ZkGrant): Promise<void> {
  const { handle } = scope;
  const path = scope.layout.cell(TAKEOVER_SPACE, grant.lockName);
  const signal = scope.ended;
  try {
    let version = grant.recordVersion === grant.recordCreated ? 0 : null;
    if (version === null) {
      // Rewritten by the core (a takeover claimed, a lock delay stored): its version read.
      const known = grant.recordVersion ?? 0n;
      const reading = () => retrying(handle, `reading ${path}`, () => handle.get(path), signal);
      let read = await reading();
      if (!read || read.stat.mzxid < known) {
        // The core wrote it through the driver's connection, another session, maybe on
        // another server: this one has not applied that write yet (a session reads its own
        // writes only). Read again behind a barrier, or the stale version would fail the
        // multi's delete, and the record stay for a false takeover.
        await retrying(handle, `syncing ${path}`, () => handle.sync(path), signal);
        read = await reading();
      }
      version = read && read.stat.mzxid === known ? read.stat.version : null;
    }
    while (version !== null) {
      try {
        await handle.multi([
          { op: "delete", path: grant.path, version: -1 },
          { op: "delete", path, version },
        ]);
        return;
      } catch (error) {
        // The node is gone: the holding was lost (or revoked), and its record stays.
        if (failedAt(error, 0, RC.NONODE)) return;
        if (failedAt(error, 1, RC.NONODE) || failedAt(error, 1, RC.BADVERSION)) break;
        if (!isTransient(error)) throw error;
        // Sent again once reconnected: if it had landed, the node is gone now (above).
        await handle.waitConnected(signal);
      }
    }
  } catch {
    // The session ended (see above), or the server refused the multi: the node goes alone.
  }
  // Also when the record is not this holding's any more: only the node goes.
  await withdraw(scope, grant.parent, { path: grant.path });
}
