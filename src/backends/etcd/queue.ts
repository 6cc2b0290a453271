/**
 * The granting rule (`core/grant-rule.ts`), applied to a queue read from etcd: keys ordered
 * by create revision, each saying its mode, limit and whether its grant was recorded, and
 * the lock's upgrade marker (which holds back every shared key not yet recorded).
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
import * as rule from "../../core/grant-rule.js";
import { rangeAt } from "./client.js";
import { decodeQueueValue, type QueueValue } from "./keys.js";
import type { WatchedEvent } from "./watch.js";

/** A queue entry as etcd holds it: its key, revisions, lease and value. */
export interface EtcdEntry {
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
  readonly entries: readonly EtcdEntry[];
  /** The queue key of the shared holder that is upgrading (or upgraded), if any. */
  readonly marker: string | null;
}

export function toEntry(kv: IKeyValue): EtcdEntry {
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
export function tokenOf(entry: EtcdEntry): bigint {
  return entry.value.t !== undefined ? BigInt(entry.value.t) : entry.modRevision;
}

export function isGranted(entry: EtcdEntry): boolean {
  return entry.value.w !== 1;
}

/** What the rules say about one waiting key. */
export type Decision =
  /** The key is gone: its lease expired or was revoked. */
  | { readonly type: "missing" }
  /** Already recorded as granted (by an earlier attempt whose answer was lost). */
  | { readonly type: "held"; readonly me: EtcdEntry }
  /** Another user of the queue gives a different limit. */
  | { readonly type: "mismatch"; readonly limit: number }
  | { readonly type: "grant"; readonly me: EtcdEntry }
  /**
   * Must wait. `earlier`: every older key. `blockers`: for shared requests, the older
   * exclusive keys. `markerBlocks`: a shared request also waits for the upgrade marker.
   */
  | {
      readonly type: "wait";
      readonly me: EtcdEntry;
      readonly earlier: readonly EtcdEntry[];
      readonly blockers: readonly EtcdEntry[];
      readonly markerBlocks: boolean;
    };

/**
 * The view as the rule sees it, for the waiting key at `index`. Only keys not yet recorded
 * are ever decided, and a marker keeps every one of them out (their grants require it
 * absent), so the upgrade counts as started before the first of them.
 */
function ruleQueue(view: QueueView, index: number, mode: LockMode, limit: number): rule.RuleQueue {
  const entries = view.entries.map((e, i) =>
    i === index
      ? { mode, limit }
      : {
          mode: e.value.m === "x" ? ("exclusive" as const) : ("shared" as const),
          limit: Number.isNaN(e.value.l) ? limit : e.value.l,
        },
  );
  if (view.marker === null) return { entries };
  const before = view.entries.findIndex((e) => !isGranted(e));
  const holder = view.entries.findIndex((e) => e.key === view.marker);
  return { entries, upgrades: [{ holder, before: before < 0 ? entries.length : before }] };
}

export function decide(view: QueueView, key: string, kind: QueueKind, mode: LockMode, limit: number): Decision {
  const index = view.entries.findIndex((e) => e.key === key);
  const me = view.entries[index];
  if (!me) return { type: "missing" };
  if (isGranted(me)) return { type: "held", me };
  const verdict = rule.decide(ruleQueue(view, index, mode, limit), index);
  if (verdict.type === "mismatch") return verdict;
  if (verdict.type === "grant") return { type: "grant", me };
  const earlier = view.entries.slice(0, index);
  // What a shared waiter watches and requires absent when it records its grant.
  const shared = kind !== "semaphore" && mode === "shared";
  const blockers = shared ? verdict.writers.map((i) => view.entries[i] as EtcdEntry) : [];
  return { type: "wait", me, earlier, blockers, markerBlocks: shared && verdict.upgrade };
}

/**
 * The other holders the upgrade of `key` (whose marker is in place) still waits for, by
 * the rule. Here holding means recorded: the view is shown to the rule as the recorded
 * keys, then the others (as the memory table orders its holders and waiters), with the
 * upgrade started before the first unrecorded one, since none can be recorded after it.
 */
export function upgradeBlockers(view: QueueView, key: string): readonly EtcdEntry[] {
  const ordered = [...view.entries.filter(isGranted), ...view.entries.filter((e) => !isGranted(e))];
  const index = ordered.findIndex((e) => e.key === key);
  const entries = ordered.map((e) => ({
    mode: e.value.m === "x" ? ("exclusive" as const) : ("shared" as const),
    limit: 1,
  }));
  const before = view.entries.filter(isGranted).length;
  const verdict = rule.decideUpgrade({ entries, upgrades: [{ holder: index, before }] }, index);
  return verdict.type === "wait" ? verdict.holders.map((i) => ordered[i] as EtcdEntry) : [];
}

/** For a shared waiter: the blocker went or turned shared, or the marker went. */
export function relevantToShared(marker: string): (event: WatchedEvent) => boolean {
  return (event) => {
    if (event.type === "delete") return true;
    if (event.kv.key.toString() === marker) return false;
    return decodeQueueValue(event.kv.value).m === "s";
  };
}
