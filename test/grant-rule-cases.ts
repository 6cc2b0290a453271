/**
 * The table of the granting rule (`src/core/grant-rule.ts`): each case is a queue built by
 * real steps (holders granted in order, then waiters queued one after another, then maybe
 * a pending upgrade) and one probe with its expected outcome. `test/grant-rule.test.ts`
 * checks the pure functions against it; `test/conformance/granting.ts` replays every case
 * through every backend, so the backends that cannot call the rule (PostgreSQL, Redis,
 * file) are checked against the same table.
 */
import type { LockMode } from "../src/core/driver.js";
import type { RuleQueue } from "../src/core/grant-rule.js";

export type RuleProbe =
  /** Another client asks (`tryAcquire`), with the queue's limit unless `limit` is given. */
  | { readonly acquire: LockMode; readonly limit?: number }
  /** Holder number `upgrade` (an index into `held`) upgrades. */
  | { readonly upgrade: number };

export interface RuleCase {
  readonly name: string;
  /** 1: a lock; more: a semaphore with that many permits. */
  readonly limit: number;
  /** Granted in this order. */
  readonly held: readonly LockMode[];
  /** Then queued in this order (each one queued before the next asks). */
  readonly waiting: readonly LockMode[];
  /** Then this holder (an index into `held`) starts an upgrade that stays pending. */
  readonly upgrading?: number;
  readonly probe: RuleProbe;
  readonly expect: "grant" | "wait" | "deadlock" | "mismatch";
  /** Why the conformance suite cannot replay this case deterministically, if it cannot. */
  readonly noReplay?: string;
}

const x = "exclusive" as const;
const s = "shared" as const;

export const ruleCases: readonly RuleCase[] = [
  { name: "exclusive: free", limit: 1, held: [], waiting: [], probe: { acquire: x }, expect: "grant" },
  { name: "exclusive: a writer holds", limit: 1, held: [x], waiting: [], probe: { acquire: x }, expect: "wait" },
  { name: "exclusive: readers hold", limit: 1, held: [s, s], waiting: [], probe: { acquire: x }, expect: "wait" },
  {
    name: "exclusive: a writer holds and a reader waits",
    limit: 1,
    held: [x],
    waiting: [s],
    probe: { acquire: x },
    expect: "wait",
  },
  { name: "shared: free", limit: 1, held: [], waiting: [], probe: { acquire: s }, expect: "grant" },
  { name: "shared: readers hold", limit: 1, held: [s, s], waiting: [], probe: { acquire: s }, expect: "grant" },
  { name: "shared: a writer holds", limit: 1, held: [x], waiting: [], probe: { acquire: s }, expect: "wait" },
  {
    name: "shared: a writer waits ahead of later readers",
    limit: 1,
    held: [s],
    waiting: [x],
    probe: { acquire: s },
    expect: "wait",
  },
  { name: "semaphore: a permit is left", limit: 3, held: [x, x], waiting: [], probe: { acquire: x }, expect: "grant" },
  { name: "semaphore: full", limit: 2, held: [x, x], waiting: [], probe: { acquire: x }, expect: "wait" },
  {
    name: "semaphore: full, and someone waits first",
    limit: 2,
    held: [x, x],
    waiting: [x],
    probe: { acquire: x },
    expect: "wait",
  },
  {
    name: "semaphore: a different limit is refused",
    limit: 2,
    held: [x],
    waiting: [],
    probe: { acquire: x, limit: 3 },
    expect: "mismatch",
  },
  { name: "upgrade: the only holder", limit: 1, held: [s], waiting: [], probe: { upgrade: 0 }, expect: "grant" },
  { name: "upgrade: another reader holds", limit: 1, held: [s, s], waiting: [], probe: { upgrade: 0 }, expect: "wait" },
  {
    name: "upgrade: goes ahead of a queued writer",
    limit: 1,
    held: [s],
    waiting: [x],
    probe: { upgrade: 0 },
    expect: "grant",
  },
  {
    name: "upgrade pending: a new reader waits for it",
    limit: 1,
    held: [s, s],
    waiting: [],
    upgrading: 0,
    probe: { acquire: s },
    expect: "wait",
  },
  {
    name: "upgrade pending: a new writer waits for it",
    limit: 1,
    held: [s, s],
    waiting: [],
    upgrading: 0,
    probe: { acquire: x },
    expect: "wait",
  },
  {
    name: "upgrade pending: the second upgrader is refused",
    limit: 1,
    held: [s, s],
    waiting: [],
    upgrading: 0,
    probe: { upgrade: 1 },
    expect: "deadlock",
  },
  {
    name: "upgrade pending behind a queued writer: the second upgrader is refused",
    limit: 1,
    held: [s, s],
    waiting: [x],
    upgrading: 1,
    probe: { upgrade: 0 },
    expect: "deadlock",
    noReplay:
      "no backend shows when an upgrade is in place, and ZooKeeper rightly lets the older holder win two upgrades that overlap",
  },
];

/** Whether a case needs shared locks. */
export function usesShared(c: RuleCase): boolean {
  return c.held.includes(s) || c.waiting.includes(s) || ("acquire" in c.probe && c.probe.acquire === s);
}

/** The queue a case builds, as the rule sees it, without the probe. */
export function queueOf(c: RuleCase): RuleQueue {
  const entries = [...c.held, ...c.waiting].map((mode) => ({ mode, limit: c.limit }));
  return {
    entries,
    ...(c.upgrading !== undefined ? { upgrades: [{ holder: c.upgrading, before: entries.length }] } : {}),
  };
}
