/**
 * The tracked handoff: the head's release hands the lock to a tracked exclusive waiter
 * second in line in its own transaction, which also puts that waiter's takeover record, so
 * the waiter is granted by the head's deletion event (one round trip, as an untracked
 * handoff) and its record is in etcd from its grant's revision on (a crash right after
 * leaves it, for the next holder).
 *
 * The releaser must know the successor's record before it sends: every tracked waiter
 * carries it in its queue key's value (`r`: tagged, not sealed; keys.ts), and every tracked
 * exclusive holding follows its queue (a {@link QueueFollower}: the queue when it was
 * granted, then a watch of it) to know which key is next and its exact bytes. The release
 * transaction then, with the head's deletion:
 *
 * - puts the successor's key granted (its value without the waiting flag or the record,
 *   bound to the successor's lease), so its mod revision, the deletion's revision, is its
 *   token as for any recorded grant;
 * - puts the record, sealed with the pending token (takeover.ts: it reads as that same
 *   revision) and deletes the record's fence key, as a record put with its grant has none;
 *
 * only if the head's key is still its own (not taken by its lease's end: then it was lost,
 * and its record stays), the head's record is still at the version it claimed, and the
 * successor's key is still there with exactly the bytes followed (not withdrawn, not
 * recorded by a transaction of its own). That no older key is left but the head's follows
 * from the follower: it knew every key of the queue from a revision at or after the
 * successor's creation (a key created later is younger), and a key's name is never used
 * twice. Otherwise the nested transaction deletes the head's record as a plain release does
 * and the successor records its grant itself (acquire.ts), one round trip more.
 *
 * The successor takes the grant only from one watch batch holding both the head's deletion
 * and the put of its own key, granted, at the same revision (etcd never splits a revision's
 * events of one watch); a deletion alone wakes it to record its grant itself.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type { IRequestOp } from "etcd3";
import { sealRecord } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import { op, when } from "./client.js";
import type { EtcdGrant } from "./grant.js";
import { encodeQueueValue, type QueueKeys } from "./keys.js";
import { type EtcdEntry, type QueueView, toEntry } from "./queue.js";
import type { Scope } from "./scope.js";
import { dropRecordOp } from "./takeover.js";
import { KeyWatch, type WatchedEvent, type WatchTarget } from "./watch.js";

/** What a tracked waiter in handoff mode, then its holding, watches: its whole queue. */
export function followTarget(queue: QueueKeys): WatchTarget {
  return { key: queue.prefix, prefix: true };
}

/**
 * The keys of one queue as a holding (or a waiter about to hold) knows them: a view read
 * at some revision, then the watch's events after it. Invalid once the watch broke.
 */
export class QueueFollower {
  readonly #own: string;
  readonly #entries = new Map<string, EtcdEntry>();
  /** Events at or below this revision are in the view; `null` until seeded. */
  #seeded: bigint | null = null;
  #early: WatchedEvent[] = [];
  #valid = true;
  #watch: KeyWatch | null = null;
  #detach: (() => void) | null = null;
  #open = true;
  #timer: NodeJS.Timeout | null = null;

  constructor(own: string) {
    this.#own = own;
  }

  /** The queue as read at `view.revision` (events may have been applied before: buffered). */
  seed(view: Pick<QueueView, "revision" | "entries">): void {
    for (const entry of view.entries) this.#entries.set(entry.key, entry);
    this.#seeded = view.revision;
    const early = this.#early;
    this.#early = [];
    this.apply(early);
  }

  apply(events: readonly WatchedEvent[]): void {
    if (this.#seeded === null) {
      this.#early.push(...events);
      return;
    }
    for (const event of events) {
      if (BigInt(event.kv.mod_revision) <= this.#seeded) continue;
      const key = event.kv.key.toString();
      if (event.type === "delete") this.#entries.delete(key);
      else this.#entries.set(key, toEntry(event.kv));
    }
  }

  /** The watch feeding it, closed with it (at once if it was closed first). */
  attach(watch: KeyWatch): void {
    this.#watch = watch;
    if (!this.#open) watch.close();
  }

  /** Runs `start` (which attaches the watch) after `ms`, unless closed first. */
  startLater(start: () => void, ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#open) start();
    }, ms);
    this.#timer.unref();
  }

  /** Events may be missing from now on: no successor is named any more. */
  invalidate(): void {
    this.#valid = false;
  }

  /**
   * The oldest key but the holder's, if it is a tracked exclusive lock waiter (its
   * record is in its value), as last seen; `null` otherwise or when in doubt.
   */
  successor(): EtcdEntry | null {
    if (!this.#valid || this.#seeded === null || !this.#watch) return null;
    let next: EtcdEntry | null = null;
    for (const entry of this.#entries.values()) {
      if (entry.key === this.#own) continue;
      if (!next || entry.createRevision < next.createRevision) next = entry;
    }
    const value = next?.value;
    if (value?.w !== 1 || value.m !== "x" || value.l !== 1 || value.r === undefined) return null;
    return next;
  }

  /** Closes it when `signal` aborts (the session's end), unless closed first. */
  closeOn(signal: AbortSignal): void {
    this.#detach = onAbort(signal, () => this.close());
  }

  close(): void {
    this.#open = false;
    this.#valid = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#watch?.close();
    this.#detach?.();
    this.#detach = null;
  }
}

/**
 * How long a holding granted by the join of a free lock waits before it follows its queue.
 * A watch per grant would cost about half the uncontended rate (a watch created and
 * cancelled with every acquire and release: `bench/takeover.ts`, 0.54 of untracked), and a
 * holding that short rarely has a waiter to hand on to.
 */
export const FOLLOW_AFTER_MS = 25;

/**
 * Follows the queue of a grant made at `revision` by a transaction that found the queue
 * empty (the join of a free lock), from {@link FOLLOW_AFTER_MS} after the grant: its key was
 * the only one at that revision, so a watch from the next one misses nothing. Such a watch
 * starts in the past, which etcd catches up only every 100 ms: a release before the
 * follower has caught up hands nothing on (the successor records its own grant).
 */
export function followFromJoin(scope: Scope, grant: EtcdGrant, revision: bigint): void {
  const follower = new QueueFollower(grant.key);
  follower.seed({ revision, entries: [] });
  adopt(scope, grant, follower);
  follower.startLater(() => {
    if (scope.ended.aborted) return;
    follower.attach(
      new KeyWatch(
        scope.client,
        [followTarget(grant.queue)],
        revision + 1n,
        { events: (events) => follower.apply(events), broken: () => follower.invalidate() },
        scope.watches,
      ),
    );
  }, FOLLOW_AFTER_MS);
}

/** Gives `follower` to `grant`, until its release or the session's end. */
export function adopt(scope: Scope, grant: EtcdGrant, follower: QueueFollower): void {
  grant.follower = follower;
  follower.closeOn(scope.ended);
}

/**
 * What the release of `grant` sends about its record: the handoff to the successor its
 * follower names (see the module comment), which deletes the record otherwise; or the
 * plain record deletion; `null` for an untracked grant. Closes the follower.
 */
export function releaseRecordOp(scope: Scope, grant: EtcdGrant): IRequestOp | null {
  const follower = grant.follower;
  grant.follower = null;
  const next = grant.mode === "exclusive" && grant.kind === "lock" ? follower?.successor() : null;
  follower?.close();
  if (grant.recordVersion === undefined) return null;
  const drop = dropRecordOp(scope.keys, grant.queue.name, grant.recordVersion, grant);
  if (!next) return drop;
  const { keys } = scope;
  const name = grant.queue.name;
  const recordKey = keys.cellKey(TAKEOVER_SPACE, name);
  const { w: _, r, ...granted } = next.value;
  return {
    request_txn: {
      compare: [
        when.is(grant.key, grant.createRevision),
        when.modIs(recordKey, grant.recordVersion),
        when.is(next.key, next.createRevision),
        when.valueIs(next.key, next.raw.toString()),
      ],
      success: [
        op.put(next.key, encodeQueueValue({ ...granted, s: Date.now() }), next.lease),
        { request_put: { key: Buffer.from(recordKey), value: Buffer.from(sealRecord(r as string, 0n, Date.now())) } },
        op.del(keys.cellFenceKey(TAKEOVER_SPACE, name)),
      ],
      failure: [drop],
    },
  };
}

/**
 * Whether one watch batch that deleted the head at `revision` also granted `own` by the
 * head's release (the put of its key, granted, at that same revision).
 */
export function handedOnByHead(events: readonly WatchedEvent[], own: string, revision: bigint): boolean {
  return events.some(
    (event) =>
      event.type === "put" &&
      event.kv.key.toString() === own &&
      BigInt(event.kv.mod_revision) === revision &&
      toEntry(event.kv).value.w === undefined,
  );
}
