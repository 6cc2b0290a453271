/**
 * Handoff in one round trip: an exclusive lock or election waiter granted by its
 * predecessor's deletion event alone, with no read after it. ZooKeeper 3.8's watch events
 * carry no zxid, so the token cannot be the deletion's; it is computed from what the
 * waiter read before, and a rule every sole holder keeps makes it safe:
 *
 * **A sole holder uses a token only once its own node's mzxid is at least that token**
 * (acquire.ts checks it before every grant: an uncontended grant's token is the node's
 * creation zxid; a grant after a read writes its node in the same round trip; an upgrade
 * writes its note before it takes the new token).
 *
 * A waiter W whose predecessor P is the node it must outlast, and whose data it read with
 * a watch, takes `max(P's mzxid, the queue's pzxid at W's last listing) + 1`:
 * - it is larger than every earlier token: a holder gone before that listing took its token
 *   before leaving, so below the pzxid; P's tokens are at most P's mzxid, and the watch
 *   fired "deleted", not "changed", so that mzxid is P's last; later nodes never hold
 *   before W;
 * - it is smaller than every later one: W writes its own node after those reads, before
 *   the event may grant it (`bumped`), so the token is at most W's mzxid, below W's
 *   deletion zxid, which every later grant's read or write comes after, and a successor
 *   granted the same way takes W's mzxid + 1 or more.
 *
 * W may rely on P's deletion making it first when P was the only older node at W's last
 * listing, or P's data says it was granted exclusive (`h`: everything older was gone then,
 * and W's listing showed nothing between them). P's mzxid bounds its tokens when P's data
 * carries the mark of clients that keep the rule (`v`; a node of an older client may hold
 * a token above its mzxid) and P is an exclusive node (all its grants are sole) or was
 * converted (conversions write the token before taking it). Anything else, a reconnection
 * between the read and the event (the server then re-arms the watch with one event for any
 * number of changes), or a write of W's own node not yet acknowledged, and W reads the
 * queue as before (`relist`).
 *
 * W also watches its own node (armed behind its write of it, and again after every write
 * that fires it): a deletion of it (a revoke, the session's expiry) has a lower zxid than a
 * later deletion of P, so its event, or the answer to the watch's read, comes first on the
 * connection, and W then reads the queue, finds itself gone and
 * fails as a lost session, never granted beside the waiter its deletion woke.
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";
import type { Stat } from "./client.js";
import { isTransient, RC, hasCode, translate } from "./errors.js";
import { decodeData, type QueueNode } from "./paths.js";
import { type QueueView, viewOf } from "./queue.js";
import type { Scope } from "./scope.js";

/** A sole waiter's own node, and the highest mzxid the server acknowledged for it. */
export interface OwnNode {
  readonly path: string;
  /** Its data as created (a waiter's writes of its node do not change it). */
  readonly data: string;
  /** Its creation zxid at first (0 when the create's answer was lost), raised by each write. */
  bumped: bigint;
}

const DELETED = 2;
/** Not a ZooKeeper event type: the waiter's own node was deleted. */
const OWN_GONE = -1;

/** Raises `own.bumped` to an acknowledged write's mzxid. */
export function raise(own: OwnNode, stat: Stat): void {
  if (stat.mzxid > own.bumped) own.bumped = stat.mzxid;
}

/**
 * Waits for the node ahead of `own` in `view` (the last listing) to change. Resolves with
 * the token when its deletion grants `own` by the rule above, or `null` when the queue
 * must be read again (`relist`). Rejects with `stop.reason` when it aborts.
 */
export async function awaitTurn(scope: Scope, parent: string, own: OwnNode, view: QueueView, stop: AbortSignal) {
  const { handle } = scope;
  const index = view.nodes.findIndex((n) => own.path === `${parent}/${n.name}`);
  const ahead = view.nodes[index - 1] as QueueNode;
  const path = `${parent}/${ahead.name}`;
  // Only one older node: its deletion leaves us first, whatever it was doing.
  const alone = index === 1;
  for (;;) {
    if (stop.aborted) throw stop.reason;
    const epoch = handle.epoch;
    let fire: (type: number) => void = () => {};
    const event = new Promise<number>((resolve) => {
      fire = resolve;
    });
    // A read, not exists(): on a node already gone, exists() would leave a watch for its
    // creation, which a sequential node never sees again.
    const read = handle.get(path, (type) => fire(type));
    // When the listing already allows it, our write goes out right behind the read: the
    // server handles it after the read, so its zxid exceeds what the read shows.
    const early = alone && ahead.mode === "exclusive" ? handle.set(own.path, own.data) : null;
    early?.then(
      (stat) => raise(own, stat),
      () => {},
    );
    // Sent after our own write, which therefore does not fire it.
    const mine = watchOwn(scope, own, () => fire(OWN_GONE));
    let token: bigint | null = null;
    try {
      const got = await read;
      if (!got) {
        mine.stop();
        return null; // gone by now: read the queue
      }
      const data = decodeData(got.data);
      // Only a node of a client that keeps the rule (`v`) has an mzxid bounding its tokens.
      const bounded = data?.v === 1 && (ahead.mode === "exclusive" || data.m !== undefined);
      if (bounded && (alone || data.h === 1)) {
        const candidate = (got.stat.mzxid > view.stat.pzxid ? got.stat.mzxid : view.stat.pzxid) + 1n;
        await early;
        if (own.bumped < candidate) raise(own, await handle.set(own.path, own.data));
        token = candidate;
      }
    } catch (error) {
      mine.stop();
      if (stop.aborted) throw stop.reason;
      // Our own node gone: the listing shows it (the session expired, or an operator).
      if (hasCode(error, RC.NONODE)) return null;
      if (!isTransient(error)) throw translate(error, `watching ${path}`);
      await handle.waitConnected(stop).catch((e: unknown) => {
        throw stop.aborted ? stop.reason : translate(e, `watching ${path}`);
      });
      return null;
    }
    const type = await abortable<number>(stop, (resolve) => {
      event.then(resolve);
      return undefined;
    }).finally(() => mine.stop());
    if (type === OWN_GONE) return null; // the listing shows it gone: lost, as before a grant
    if (type !== DELETED) continue; // changed (a grant's note, a conversion): read it again
    // A deletion of our own node before the predecessor's comes first on this connection:
    // its event, or the answer of the watch's read, if that is still on its way.
    const present = await mine.present();
    return token !== null && present && own.bumped >= token && handle.epoch === epoch && !stop.aborted ? token : null;
  }
}

/**
 * Watches the waiter's own node, calling `gone` on its deletion: an operator's revoke or
 * the session's expiry. Without it, a waiter whose node was deleted could be granted on its
 * predecessor's deletion, beside whoever was woken by its own. A write of the node (the
 * waiter's own, or anyone's) fires the watch too: it is armed again, until `stop()`.
 * `present()` resolves with whether the last read found the node (`false` also on a lost
 * answer).
 */
function watchOwn(scope: Scope, own: OwnNode, gone: () => void): { present(): Promise<boolean>; stop(): void } {
  let stopped = false;
  let present: Promise<boolean> = Promise.resolve(true);
  const arm = () => {
    const read = scope.handle.get(own.path, (type) => {
      if (type === DELETED) gone();
      else if (!stopped) arm();
    });
    present = read.then(
      (got) => {
        if (!got) gone();
        return got !== null;
      },
      () => false,
    );
  };
  arm();
  return {
    present: () => present,
    stop: () => {
      stopped = true;
    },
  };
}

/**
 * Reads the queue for a sole waiter, with a write of its own node right behind the read
 * (handled after it, so its zxid exceeds the pzxid the read shows: a grant by this read
 * keeps the rule without another round trip). `null` when the queue node is gone.
 */
export async function relist(scope: Scope, parent: string, own: OwnNode, stop: AbortSignal): Promise<QueueView | null> {
  const { handle } = scope;
  for (;;) {
    if (stop.aborted) throw stop.reason;
    const listed = handle.children(parent);
    const bump = handle.set(own.path, own.data);
    bump.catch(() => {});
    try {
      const got = await listed;
      // A failed write (our node gone, the connection lost) leaves `bumped` as it was: the
      // grant then writes before it hands the token out.
      await bump.then(
        (stat) => raise(own, stat),
        () => {},
      );
      return got ? viewOf(got.children, got.stat, new Map()) : null;
    } catch (error) {
      if (stop.aborted) throw stop.reason;
      if (!isTransient(error)) throw translate(error, `reading ${parent}`);
      await handle.waitConnected(stop).catch((e: unknown) => {
        throw stop.aborted ? stop.reason : translate(e, `reading ${parent}`);
      });
    }
  }
}
