/**
 * The tracked handoff: the head's release hands the lock to a tracked exclusive waiter
 * second in line in its own transaction, which also puts that waiter's takeover record, so
 * the waiter is granted by the head's deletion event (one round trip, as an untracked
 * handoff) and its record is in etcd from its grant's revision on (a crash right after
 * leaves it, for the next holder).
 *
 * The releaser must know the successor's record before it sends: every tracked waiter
 * carries it in its queue key's value (`r`: tagged, not sealed; keys.ts). The head names
 * its successor from the queue as it knew it when it was granted ({@link KnownQueue}): the
 * view its grant was decided on (a read of the whole queue at one revision), or, for a
 * waiter second in line, that read and the events of the wait's own queue watch up to the
 * grant. Nothing follows the queue once the lock is granted: a watch held open by a
 * holding would keep the process alive (grpc-js refs its connection while any call is
 * open), so a program that forgets `close()` would never exit (test/exit.test.ts). The
 * release transaction then, with the head's deletion:
 *
 * - puts the successor's key granted (its value without the waiting flag or the record,
 *   bound to the successor's lease), so its mod revision, the deletion's revision, is its
 *   token as for any recorded grant;
 * - puts the record, sealed with the pending token (takeover.ts: it reads as that same
 *   revision) and deletes the record's fence key, as a record put with its grant has none;
 *
 * only if the head's key is still its own (not taken by its lease's end: then it was lost,
 * and its record stays), the head's record is still at the version it claimed, and the
 * successor's key is still there exactly as known (its create and mod revisions and its
 * bytes: not withdrawn, not recorded by a transaction of its own). That no key is older but
 * the head's follows from the view being whole at its revision R: the head was granted
 * exclusive, so no key older than its own was left (nor can one be created later), the
 * successor is the oldest key younger than the head's in the view, a key of the view that
 * is gone stays gone (a key's name is never used twice), and a key created after R is
 * younger than the successor (created at R or before). Otherwise the nested transaction
 * deletes the head's record as a plain release does and the successor records its grant
 * itself (acquire.ts), one round trip more.
 *
 * So it applies only when the successor was in the queue before the head was granted: a
 * head granted by the join of a free lock (its view is its own key) never hands on, and a
 * tracked waiter queued behind another waiter re-reads the queue when that one is granted
 * (acquire.ts), to wait second in line, ready for the head's release.
 *
 * The successor takes the grant only from one watch batch holding both the head's deletion
 * and the put of its own key, granted, at the same revision (etcd never splits a revision's
 * events of one watch); a deletion alone wakes it to record its grant itself.
 *
 * @module
 */
import type { IRequestOp } from "etcd3";
import { sealRecord } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import { op, when } from "./client.js";
import type { EtcdGrant } from "./grant.js";
import { encodeQueueValue, type QueueKeys } from "./keys.js";
import { type EtcdEntry, type QueueView, toEntry } from "./queue.js";
import type { Scope } from "./scope.js";
import { dropRecordOp } from "./takeover.js";
import type { WatchedEvent, WatchTarget } from "./watch.js";

/** What a tracked waiter second in line watches while it waits: its whole queue. */
export function followTarget(queue: QueueKeys): WatchTarget {
  return { key: queue.prefix, prefix: true };
}

/**
 * The keys of one queue as a waiter knows them: a whole view read at some revision, then,
 * while its wait's watch lasts, the watch's events after it. Frozen once the waiter is
 * granted (nothing feeds it any more); still whole as of the last revision it saw.
 */
export class KnownQueue {
  readonly #entries = new Map<string, EtcdEntry>();
  /** Events at or below this revision are in the view; `null` until seeded. */
  #seeded: bigint | null = null;
  #early: WatchedEvent[] = [];
  #valid = true;

  /** A queue known from one whole view. */
  static of(view: Pick<QueueView, "revision" | "entries">): KnownQueue {
    const known = new KnownQueue();
    known.seed(view);
    return known;
  }

  /** The queue as read at `view.revision` (events may have been applied before: buffered). */
  seed(view: Pick<QueueView, "revision" | "entries">): void {
    for (const entry of view.entries) this.#entries.set(entry.key, entry);
    this.#seeded = view.revision;
    const early = this.#early;
    this.#early = [];
    this.apply(early);
  }

  /** Events of a watch of the whole queue that started at or before the seeding read. */
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

  /** Events may be missing from now on: no successor is named any more. */
  invalidate(): void {
    this.#valid = false;
  }

  /** Whether it holds a whole view (seeded, and no event was missed since). */
  get whole(): boolean {
    return this.#valid && this.#seeded !== null;
  }

  /**
   * The oldest key younger than `own` (created at `ownRevision`), if it is a tracked
   * exclusive lock waiter (its record is in its value), as known; `null` otherwise or when
   * in doubt.
   */
  successor(own: string, ownRevision: bigint): EtcdEntry | null {
    if (!this.whole) return null;
    let next: EtcdEntry | null = null;
    for (const entry of this.#entries.values()) {
      if (entry.key === own || entry.createRevision <= ownRevision) continue;
      if (!next || entry.createRevision < next.createRevision) next = entry;
    }
    const value = next?.value;
    if (value?.w !== 1 || value.m !== "x" || value.l !== 1 || value.r === undefined) return null;
    return next;
  }
}

/**
 * What the release of `grant` sends about its record: the handoff to the successor its
 * known queue names (see the module comment), which deletes the record otherwise; or the
 * plain record deletion; `null` for an untracked grant.
 */
export function releaseRecordOp(scope: Scope, grant: EtcdGrant): IRequestOp | null {
  const known = grant.known;
  grant.known = null;
  const next =
    grant.mode === "exclusive" && grant.kind === "lock" ? known?.successor(grant.key, grant.createRevision) : null;
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
        when.modIs(next.key, next.modRevision),
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
