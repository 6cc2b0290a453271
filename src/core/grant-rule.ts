/**
 * The granting rule every Baton backend follows, written once as pure functions: given a
 * queue (its holders and waiters in the order they joined, and any pending upgrades), may
 * this request be granted, must it wait (and for what), or is it refused?
 *
 * - A request is granted when it is compatible with everyone who joined before it and
 *   nobody before it still waits (FIFO: a reader never overtakes an earlier writer, so
 *   writers are not starved).
 * - Shared requests are compatible with shared ones. An exclusive request needs fewer than
 *   `limit` entries before it and no shared one (`limit > 1` makes a semaphore).
 * - A pending upgrade goes ahead of every waiter: shared requests that joined after it
 *   started wait for it (writers wait anyway: the upgrader joined before them), and the
 *   upgrade is granted once the upgrader is the only holder left.
 * - A second upgrade of the same queue is refused (`"deadlock"`): both would wait for each
 *   other forever. Of two upgrades started at once, the older holder's wins.
 *
 * Memory (`queue-table.ts`), etcd and ZooKeeper call these functions on the queue as they
 * read it. PostgreSQL (advisory locks plus its SQL), Redis (Lua) and the file backend
 * (kernel byte locks) cannot run TypeScript where they decide, so they cite this rule, and
 * the conformance suite replays the same table of cases (`test/grant-rule-cases.ts`)
 * through every backend.
 *
 * @module
 */
import type { LockMode } from "./driver.js";

/** One holder or waiter, as far as the rule cares. */
export interface RuleEntry {
  /** Its current mode (a converted holder's new one). */
  readonly mode: LockMode;
  /** The number of holders it allows at once: 1 for locks and elections. */
  readonly limit: number;
}

/** A holder's upgrade to exclusive that has started and not finished. */
export interface PendingUpgrade {
  /** Index of the upgrading holder in `entries`; -1 if it is gone (it counts as older). */
  readonly holder: number;
  /** How many entries had joined when the upgrade started: shared entries from here on wait for it. */
  readonly before: number;
}

/** A queue as one backend read it. */
export interface RuleQueue {
  /** Every holder and waiter, oldest first (the order they joined). */
  readonly entries: readonly RuleEntry[];
  /** Pending upgrades, in the order they started. */
  readonly upgrades?: readonly PendingUpgrade[];
}

/** What the rule says about one entry of a queue. */
export type Verdict =
  | { readonly type: "grant" }
  /** Someone else in the queue allows a different number of holders. */
  | { readonly type: "mismatch"; readonly limit: number }
  /**
   * Must wait. `writers`: indexes of the older exclusive entries (what a shared request
   * waits for); `upgrade`: whether a pending upgrade holds it back too. For an exclusive
   * request every older entry blocks it.
   */
  | { readonly type: "wait"; readonly writers: readonly number[]; readonly upgrade: boolean };

/** What the rule says about an upgrade of one shared holder. */
export type UpgradeVerdict =
  | { readonly type: "grant" }
  | { readonly type: "deadlock" }
  /** `holders`: indexes of the other holders it waits for. */
  | { readonly type: "wait"; readonly holders: readonly number[] };

// One shared verdict: `decide` runs on every acquisition (the hot path of the memory backend).
const GRANT: Verdict = Object.freeze({ type: "grant" });

/**
 * Applies the rule to `queue.entries[index]`. Pure: the same queue, the same answer. For an
 * entry already granted it says `"grant"` (holders satisfy the rule they were granted by),
 * so it also tells who holds (see {@link holds}).
 */
export function decide(queue: RuleQueue, index: number): Verdict {
  const { entries } = queue;
  const me = entries[index];
  if (!me) throw new RangeError(`no entry ${index} in a queue of ${entries.length}`);
  for (const other of entries) {
    if (other !== me && other.limit !== me.limit) return { type: "mismatch", limit: other.limit };
  }
  const writers: number[] = [];
  let shared = 0;
  for (let i = 0; i < index; i++) {
    if ((entries[i] as RuleEntry).mode === "exclusive") writers.push(i);
    else shared++;
  }
  if (me.mode === "exclusive") {
    return index < me.limit && shared === 0 ? GRANT : { type: "wait", writers, upgrade: false };
  }
  const upgrade = (queue.upgrades ?? []).some((u) => u.holder !== index && index >= u.before);
  return writers.length === 0 && !upgrade ? GRANT : { type: "wait", writers, upgrade };
}

/** Whether `queue.entries[index]` holds by the rule. */
export function holds(queue: RuleQueue, index: number): boolean {
  return decide(queue, index).type === "grant";
}

/**
 * How many entries hold, oldest first: holders are always the queue's first entries, since
 * anyone behind a waiter waits too. One pass, for callers that scan whole queues.
 */
export function holderCount(queue: RuleQueue): number {
  const { entries } = queue;
  const first = entries[0];
  if (!first || entries.some((e) => e.limit !== first.limit)) return 0;
  const upgrades = queue.upgrades ?? [];
  let shared = 0;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as RuleEntry;
    if (entry.mode === "exclusive") {
      if (shared > 0 || i >= entry.limit) return i;
    } else {
      if (shared < i || upgrades.some((u) => u.holder !== i && i >= u.before)) return i;
      shared++;
    }
  }
  return entries.length;
}

/**
 * Applies the rule to an upgrade of the shared holder `queue.entries[index]`. If its own
 * upgrade is not among `queue.upgrades` yet, any pending one makes it the second upgrader;
 * if it is (two markers made at once), the older holder's upgrade wins.
 */
export function decideUpgrade(queue: RuleQueue, index: number): UpgradeVerdict {
  const upgrades = queue.upgrades ?? [];
  const mine = upgrades.some((u) => u.holder === index);
  if (upgrades.some((u) => u.holder !== index && (!mine || u.holder < index))) return { type: "deadlock" };
  const others: number[] = [];
  const count = holderCount(queue);
  for (let i = 0; i < count; i++) if (i !== index) others.push(i);
  return others.length === 0 ? { type: "grant" } : { type: "wait", holders: others };
}
