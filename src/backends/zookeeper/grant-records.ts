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
 * holder's own queue node, `create` the record node and `set` it (see "Versions"). That gives what the seam asks of a
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
 *    `delete` record at the znode version this holding wrote: 1 when it created it at the
 *    grant and nothing rewrote it since, 0 for a first try's, else read). If the node is gone (the holding was lost, or revoked) the
 *    multi fails as a whole and the record stays, for the next holder; if the record is not
 *    at that version any more, only the node goes.
 *
 * **First try.** A tracked exclusive acquisition first sends one multi that creates its
 * queue node and its record (`create` persistent, data marked `z`: its fence and token are
 * the node's czxid, the multi's zxid, which is not known when it is sent; cells.ts reads
 * them so), with the queue read right behind it in the same round trip. If a record is
 * there (a live holder's, or one a lost holding left) the create fails, so the multi does
 * nothing, and the usual way follows (a node, then the record at the grant, as above): one
 * round trip more for an acquisition that finds the lock taken. If the multi lands and the
 * read shows the node first with the parent's pzxid equal to the multi's zxid (no other
 * node came or went in between), the read grants it with that token (acquire.ts's
 * `soleToken`), and the record, written by the same transaction as the node, is the
 * grant's: one round trip, as untracked. Otherwise (readers or untracked holders ahead, a
 * node that came or went, a try that only got `null`) the record is deleted before anything
 * else, in a multi that checks the node (`dropEarlyRecord`), and the grant, if it comes,
 * writes it as above. The seam's rules hold: (1) a grant handed out has its record, written
 * with its node; (2) the record of a node that was not there when its grant was decided is
 * never written (the transaction made both); (3) it is written only where none is (the
 * create fails otherwise); (4) the release deletes it at version 0. What it adds is a
 * window in which a record names a node that holds nothing yet: a client that dies in it
 * (after the multi, before the drop) leaves a record that the next holder takes for a
 * takeover of a holding that never was: a false takeover, the cautious side, never a missed
 * one (`zookeeper-records.test.ts`: "a client that dies after its first try ..."). And a
 * holder ahead whose own record's create meets a waiter's record (it was granted before
 * the waiter's try, its multi came after it) tells it by the `z` mark and a czxid above its
 * own node's (no node behind it has held): it replaces that record under its version, so the
 * waiter's drop (version 0) leaves it.
 *
 * F1-F3 of the review stay as they were for the record written at the grant; the first try
 * meets them by construction: the release of a first-try record deletes it at version 0
 * without a read (F1's barrier is for a record the core rewrote); a cancellation while the
 * multi is out waits for its answer, then deletes the record with the node (F2); a lost
 * answer is found by the node's tag, and then the record is deleted again, the grant writing
 * its own (F3).
 *
 * **Versions.** A znode's version restarts at 0 when it is deleted and made again, so
 * "version 0" alone does not say whose a record is. A record written at a grant is created
 * and set in one multi (version 1 at once); one a holder replaced is at 1 or more; so while
 * a waiter's node exists, a record at version 0 is its own first try's or that of a waiter
 * behind it (which writes its own again when granted): the waiter's drop, however late
 * (an answer lost and the multi sent again after the holder ahead wrote its record), never
 * deletes a holder's record (`zookeeper-first-try.test.ts`: "a waiter's late drop ...").
 *
 * Costs: an uncontended grant as untracked (one round trip), a contended join one more (the
 * refused first try; none when the session's last acquisition of the lock waited, which
 * skips the first try: scope.ts, `contended`), the release none (the multi replaces the node's delete), a handoff one
 * more (the waiter's multi).
 *
 * @module
 * @internal
 */
import { sealRecord } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import type { Stop, ZkGrant } from "./acquire.js";
import { cellData, cellDataWithNode, cellEntry } from "./cells.js";
import { FLAGS, type Stat } from "./client.js";
import { failedAt, isTransient, RC, translate, ZkMultiError } from "./errors.js";
import { ensurePath, findByPrefix, retrying, type Scope, withdraw } from "./scope.js";

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
export async function writeRecord(
  scope: Scope,
  grant: ZkGrant,
  record: string,
  czxid: bigint | null,
): Promise<Recorded> {
  const { handle, layout } = scope;
  const path = layout.cell(TAKEOVER_SPACE, grant.lockName);
  const data = cellData(grant.token, sealRecord(record, grant.token, grant.since));
  // Created and set at once, so a record written at a grant is never at version 0 (see
  // "Versions"): a waiter's late drop (version 0) cannot delete it.
  const ops = [
    { op: "check", path: grant.path, version: -1 },
    { op: "create", path, data, flags: FLAGS.persistent },
    { op: "set", path, data, version: 0 },
  ] as const;
  let ensuring: Promise<void> | null = null;
  for (;;) {
    if (scope.ended.aborted) throw scope.ended.reason;
    try {
      const { zxid } = await handle.multi(ops);
      grant.recordVersion = zxid;
      grant.recordCreated = { zxid, version: 1 };
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
        // The node's creation zxid, read if its create's answer was lost.
        const own = !isEarly(found.data) ? null : (czxid ?? (await readCzxid(scope, grant.path)));
        if (own === "gone") return "gone";
        // Also our own node's (a first try whose drop was given up): not a takeover of ourselves.
        if (own !== null && found.stat.czxid >= own) {
          // A waiter's behind us (see "First try"): it never held. Replaced, as it stands.
          try {
            const done = await handle.multi([
              { op: "check", path: grant.path, version: -1 },
              { op: "set", path, data, version: found.stat.version },
            ]);
            grant.recordVersion = done.zxid;
            grant.recordCreated = null;
            return "written";
          } catch (error) {
            if (failedAt(error, 0, RC.NONODE)) return "gone";
            // Changed since, or a lost connection (the create goes again, and waits for it).
            if (failedAt(error, 1, RC.BADVERSION) || failedAt(error, 1, RC.NONODE) || isTransient(error)) continue;
            throw translate(error, `recording the holder of ${grant.path}`);
          }
        }
        const entry = cellEntry(grant.lockName, found);
        if (entry.fence === grant.token) {
          // Our own: an earlier multi of ours landed unanswered. It is this grant's record,
          // to be deleted with the node (a withdrawn grant's too), not a takeover to claim.
          grant.recordVersion = found.stat.mzxid;
          grant.recordCreated = found.stat.version === 1 ? { zxid: found.stat.mzxid, version: 1 } : null;
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
    const created = grant.recordCreated;
    let version: number | null = created && grant.recordVersion === created.zxid ? created.version : null;
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

/** A takeover record written with its queue node by the first try: where, the multi's zxid, when sealed. */
export interface EarlyRecord {
  readonly path: string;
  readonly zxid: bigint;
  readonly at: number;
}

/** What the first try made: its node, its record (`null`: deleted again), the queue read behind it. */
export interface FirstTry {
  readonly path: string;
  readonly record: EarlyRecord | null;
  readonly listed: { children: string[]; stat: Stat } | null;
}

/**
 * The first try of a tracked exclusive acquisition (see "First try"): one multi creating
 * the queue node and the record, the queue read right behind it. `null` when the multi
 * failed because a record is there: nothing was made, the usual way follows. A parent the
 * server removed (a container) is made again with the multi sent right behind it. A lost
 * answer: if the node is there the multi landed, and the record is deleted again.
 */
export async function joinWithRecord(
  scope: Scope,
  queue: { parent: string; prefix: string; data: string; lockName: string; record: string },
  stop: Stop,
): Promise<FirstTry | null> {
  const { handle } = scope;
  const { parent, prefix } = queue;
  const path = scope.layout.cell(TAKEOVER_SPACE, queue.lockName);
  let ensuring: Promise<void> | null = null;
  for (let remade = 0; ; remade++) {
    if (stop.aborted) throw stop.reason;
    const at = Date.now();
    const made = handle.multi([
      { op: "create", path: `${parent}/${prefix}`, data: queue.data, flags: FLAGS.ephemeralSequential },
      { op: "create", path, data: earlyRecordData(queue.record, at), flags: FLAGS.persistent },
    ]);
    const listed = handle.children(parent);
    listed.catch(() => {});
    try {
      const { zxid, paths } = await made;
      return { path: paths.get(0) as string, record: { path, zxid, at }, listed: await listed.catch(() => null) };
    } catch (error) {
      const missing = failedAt(error, 0, RC.NONODE) ? parent : failedAt(error, 1, RC.NONODE) ? path : null;
      if (missing !== null && remade < 2) {
        // A second miss waits for the first remake's outcome (its error) first.
        if (ensuring) await ensuring;
        const space = missing === parent ? parent : scope.layout.cellSpace(TAKEOVER_SPACE);
        ensuring = ensurePath(handle, scope.chroot, space, stop.signal);
        ensuring.catch(() => {});
        continue;
      }
      if (error instanceof ZkMultiError) return null;
      if (!isTransient(error)) throw translate(error, `joining ${parent}`);
      const found = await findByPrefix(scope, parent, prefix, stop.signal);
      if (!found) return null;
      await dropEarlyRecord(scope, found, { path, zxid: 0n, at });
      return { path: found, record: null, listed: null };
    }
  }
}

/** The data of a record written with its queue node, its token not known yet (cells.ts). */
export function earlyRecordData(record: string, at: number): string {
  return cellDataWithNode(sealRecord(record, 0n, at));
}

async function readCzxid(scope: Scope, path: string): Promise<bigint | "gone"> {
  const stat = await retrying(scope.handle, `reading ${path}`, () => scope.handle.exists(path), scope.ended);
  return stat ? stat.czxid : "gone";
}

function isEarly(data: string): boolean {
  try {
    return (JSON.parse(data) as { z?: unknown }).z === 1;
  } catch {
    return false;
  }
}

/**
 * Deletes the record written with `node` by the first try, once the node is not granted
 * by it: only while the node is there (one multi), and only as written (version 0). While
 * the node is there no one behind it holds, a first try writes only where no record is, and
 * a record written or replaced at a grant is at version 1 or more ("Versions"), so a
 * record at version 0 is this one, or one of a waiter behind it that will write its own
 * again when granted, also when this drop is sent late. A record changed since was replaced by the holder
 * ahead (writeRecord) and stays. If the node is gone (the session ended), so does the
 * record: a false takeover for the next holder, the cautious side.
 */
export async function dropEarlyRecord(scope: Scope, node: string, record: EarlyRecord): Promise<void> {
  const { handle } = scope;
  const ops = [
    { op: "check", path: node, version: -1 },
    { op: "delete", path: record.path, version: 0 },
  ] as const;
  try {
    await retrying(handle, `deleting ${record.path}`, () => handle.multi(ops), scope.ended);
  } catch {
    // Gone, replaced or its node gone (see above), or the session ended.
  }
}
