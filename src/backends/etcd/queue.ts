/**
 * The granting rules of `QueueTable`, applied to a queue read from etcd: keys ordered by
 * create revision, each saying its mode, limit and whether its grant was recorded.
 *
 * - exclusive lock or election: granted when it is the oldest key;
 * - shared lock: granted when no older key is exclusive (held or waiting) and no shared
 *   holder is upgrading (the lock's upgrade marker exists);
 * - semaphore: granted when fewer than `limit` keys are older.
 *
 * A grant is always *recorded* (the key is rewritten without its waiting flag) by a
 * transaction that re-checks the rule, and the fencing token is the revision of that
 * transaction: every later grant is recorded by a later transaction, so tokens grow with
 * every grant and upgrade, never depending on which key was created first.
 *
 * @module
 */
import type { IKeyValue, ITxnResponse } from "etcd3";
import type { LockMode, QueueKind } from "../../core/driver.js";
import { rangeAt } from "./client.js";
import { decodeQueueValue, type QueueValue } from "./keys.js";

export interface QueueEntry {
  readonly key: string;
  readonly createRevision: bigint;
  readonly modRevision: bigint;
  readonly lease: string;
  readonly value: QueueValue;
}

/** One queue (and its upgrade marker) as of one revision. */
export interface QueueView {
  readonly revision: bigint;
  /** Oldest first. */
  readonly entries: readonly QueueEntry[];
  /** The queue key of the shared holder that is upgrading (or upgraded), if any. */
  readonly marker: string | null;
}

export function toEntry(kv: IKeyValue): QueueEntry {
  return {
    key: kv.key.toString(),
    createRevision: BigInt(kv.create_revision),
    modRevision: BigInt(kv.mod_revision),
    lease: String(kv.lease),
    value: decodeQueueValue(kv.value),
  };
}

/** Reads a view from a transaction whose responses `scan` and `marker` are ranges. */
export function viewOf(response: ITxnResponse, scan: number, marker: number): QueueView {
  const entries = rangeAt(response, scan)
    .map(toEntry)
    .sort((a, b) => (a.createRevision < b.createRevision ? -1 : 1));
  const markerKv = rangeAt(response, marker)[0];
  return { revision: BigInt(response.header.revision), entries, marker: markerKv ? markerKv.value.toString() : null };
}

/** The fencing token of a granted entry. */
export function tokenOf(entry: QueueEntry): bigint {
  return entry.value.t !== undefined ? BigInt(entry.value.t) : entry.modRevision;
}

export function isGranted(entry: QueueEntry): boolean {
  return entry.value.w !== 1;
}

/** What the rules say about one waiting key. */
export type Decision =
  /** The key is gone: its lease expired or was revoked. */
  | { readonly type: "missing" }
  /** Already recorded as granted (by an earlier attempt whose answer was lost). */
  | { readonly type: "held"; readonly me: QueueEntry }
  /** Another user of the queue gives a different limit. */
  | { readonly type: "mismatch"; readonly limit: number }
  | { readonly type: "grant"; readonly me: QueueEntry }
  /**
   * Must wait. `earlier`: every older key. `blockers`: for shared requests, the older
   * exclusive keys. `markerBlocks`: a shared request also waits for the upgrade marker.
   */
  | {
      readonly type: "wait";
      readonly me: QueueEntry;
      readonly earlier: readonly QueueEntry[];
      readonly blockers: readonly QueueEntry[];
      readonly markerBlocks: boolean;
    };

export function decide(view: QueueView, key: string, kind: QueueKind, mode: LockMode, limit: number): Decision {
  const index = view.entries.findIndex((e) => e.key === key);
  const me = view.entries[index];
  if (!me) return { type: "missing" };
  if (isGranted(me)) return { type: "held", me };
  const other = view.entries.find((e) => e.key !== key && e.value.l !== limit && !Number.isNaN(e.value.l));
  if (other) return { type: "mismatch", limit: other.value.l };
  const earlier = view.entries.slice(0, index);
  if (kind === "semaphore") {
    return earlier.length < limit
      ? { type: "grant", me }
      : { type: "wait", me, earlier, blockers: [], markerBlocks: false };
  }
  if (mode === "exclusive") {
    return earlier.length === 0
      ? { type: "grant", me }
      : { type: "wait", me, earlier, blockers: [], markerBlocks: false };
  }
  const blockers = earlier.filter((e) => e.value.m === "x");
  const markerBlocks = view.marker !== null;
  if (blockers.length === 0 && !markerBlocks) return { type: "grant", me };
  return { type: "wait", me, earlier, blockers, markerBlocks };
}
