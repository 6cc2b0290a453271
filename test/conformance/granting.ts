/**
 * Replays the granting rule's table (`test/grant-rule-cases.ts`) through the backend: each
 * case's queue is built by real clients (holders granted in order, waiters queued one after
 * another, then a pending upgrade), and the probe must get the outcome the pure rule gives.
 * This is what checks the backends that cannot call the rule (PostgreSQL, Redis, file).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Coordinator,
  DeadlockError,
  InvalidArgumentError,
  type LockHandle,
  type LockMode,
  TimeoutError,
} from "../../src/index.js";
import { type RuleCase, ruleCases, usesShared } from "../grant-rule-cases.js";
import type { SuiteContext } from "./context.js";
import { waitForWaiters } from "./helpers.js";

/** Enough clients for the largest case: its holders, its waiters and the probe. */
const CLIENTS = Math.max(...ruleCases.map((c) => c.held.length + c.waiting.length + 1));

export function grantingSuite(context: SuiteContext): void {
  describe("the granting rule's table", () => {
    // Fresh clients in a fresh namespace for every case. (Sharing four clients across the
    // cases left a PostgreSQL upgrade pending forever in case "upgrade pending: a new reader
    // waits for it" after the earlier cases ran: see the refactor report; not yet fixed.)
    const clients = () => {
      const namespace = context.ns();
      return Promise.all(
        Array.from({ length: CLIENTS }, (_, i) => context.client(namespace, { memberId: `rule-${i}` })),
      );
    };
    const skip = (c: RuleCase) => {
      if (c.noReplay) return c.noReplay;
      if (usesShared(c) && !context.guarantees.sharedLocks) return "backend has no shared locks";
      if (c.waiting.length > 0 && !context.guarantees.fifo) return "backend does not declare fifo";
      return false;
    };
    ruleCases.forEach((c, number) => {
      it(c.name, { skip: skip(c) }, async () => {
        const coords = await clients();
        try {
          await replay(coords, `rule-${number}`, c);
        } finally {
          // Closed at once: a server allows only so many connections.
          await Promise.all(coords.map((coord) => coord.close()));
        }
      });
    });
  });
}

async function replay(clients: readonly Coordinator[], name: string, c: RuleCase): Promise<void> {
  const take = (coord: Coordinator, mode: LockMode): Promise<LockHandle> =>
    c.limit === 1 ? coord.lock(name).acquire({ mode }) : coord.semaphore(name, { limit: c.limit }).acquire();
  const tryTake = (coord: Coordinator, mode: LockMode, limit: number): Promise<LockHandle | null> =>
    limit === 1 ? coord.lock(name).tryAcquire({ mode }) : coord.semaphore(name, { limit }).tryAcquire();
  const kind = c.limit === 1 ? "locks" : "semaphores";
  const held: LockHandle[] = [];
  const waiting: Promise<LockHandle>[] = [];
  let pendingUpgrade: Promise<void> | undefined;
  let next = 0;
  try {
    for (const mode of c.held) held.push(await take(clients[next++] as Coordinator, mode));
    for (const mode of c.waiting) {
      waiting.push(take(clients[next++] as Coordinator, mode));
      await waitForWaiters(clients[0] as Coordinator, name, waiting.length, kind);
    }
    if (c.upgrading !== undefined) {
      // No backend shows a pending upgrade in inspect(): a second upgrader being refused is
      // the sign that the first one is in place. When the case's probe is that second
      // upgrade, this is the probe.
      const other = "upgrade" in c.probe ? c.probe.upgrade : held.findIndex((_, i) => i !== c.upgrading);
      pendingUpgrade = (await upgradeFirst(held[c.upgrading] as LockHandle, held[other] as LockHandle)).pending;
    }
    const probe = c.probe;
    if ("upgrade" in probe && c.upgrading !== undefined) {
      assert.equal(c.expect, "deadlock", "a second upgrader is always refused");
      assert.equal((held[probe.upgrade] as LockHandle).mode, "shared", "a refused upgrade keeps the shared lock");
    } else if ("upgrade" in probe) {
      const handle = held[probe.upgrade] as LockHandle;
      if (c.expect === "grant") {
        await handle.upgrade();
        assert.equal(handle.mode, "exclusive");
      } else if (c.expect === "wait") {
        await assert.rejects(handle.upgrade({ timeoutMs: 100 }), TimeoutError);
        assert.equal(handle.mode, "shared", "a timed-out upgrade keeps the shared lock");
      } else {
        await assert.rejects(handle.upgrade(), DeadlockError);
        assert.equal(handle.mode, "shared", "a refused upgrade keeps the shared lock");
      }
    } else {
      const asking = tryTake(clients[next] as Coordinator, probe.acquire, probe.limit ?? c.limit);
      if (c.expect === "mismatch") {
        await assert.rejects(asking, InvalidArgumentError);
      } else {
        const handle = await asking;
        assert.equal(handle !== null, c.expect === "grant", `expected ${c.expect}, got ${handle ? "grant" : "wait"}`);
        await handle?.release();
      }
    }
  } finally {
    // The other holders leave, so a pending upgrade completes; then the upgrader leaves,
    // and each waiter is granted in turn and leaves.
    const upgrader = c.upgrading === undefined ? undefined : held[c.upgrading];
    await Promise.all(held.filter((h) => h !== upgrader).map((h) => h.release()));
    await pendingUpgrade?.catch(() => {});
    await upgrader?.release();
    for (const w of waiting) await (await w).release();
  }
}

/**
 * Starts `first`'s upgrade and returns it (boxed) once it is the pending one: `second`'s upgrade is
 * refused with DeadlockError. The two holders talk to the server over different connections,
 * so the second request can arrive first (seen on Redis, when the first one's script was not
 * loaded yet): then the first is the one refused, and the second, which would wait forever
 * behind the first's shared lock, is withdrawn and both are asked again.
 */
async function upgradeFirst(first: LockHandle, second: LockHandle): Promise<{ pending: Promise<void> }> {
  for (let attempt = 1; ; attempt++) {
    const pending = first.upgrade();
    pending.catch(() => {});
    const withdraw = new AbortController();
    const other = second.upgrade({ signal: withdraw.signal });
    other.catch(() => {});
    const outcome = await Promise.race([
      other.then(
        () => ({ who: "second", error: undefined }),
        (error: unknown) => ({ who: "second", error }),
      ),
      pending.then(
        () => ({ who: "first", error: undefined }),
        (error: unknown) => ({ who: "first", error }),
      ),
    ]);
    if (outcome.who === "second" && outcome.error instanceof DeadlockError) return { pending };
    assert.ok(
      outcome.who === "first" && outcome.error instanceof DeadlockError,
      `expected one of two overlapping upgrades to be refused, got ${outcome.who}: ${String(outcome.error)}`,
    );
    // The second request arrived first: it is pending, and the first was refused.
    withdraw.abort();
    await other.catch(() => {});
    assert.equal(second.mode, "shared", "a withdrawn upgrade keeps the shared lock");
    assert.ok(attempt < 10, "the first upgrade lost the race to the server ten times in a row");
  }
}
