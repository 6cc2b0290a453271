import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { type Coordinator, type Inspection, type LockHandle, connect } from "../../src/index.js";

/**
 * `promise`, marked handled at once: one a test awaits only after other awaits (a waiter
 * across a kill, a restart or a cut) must not become an unhandled rejection meanwhile,
 * which fails the test with a confusing error in place of its own. Awaiting it still
 * throws its error.
 */
export function observed<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

/**
 * Waits until `condition` holds, re-checking after each turn of the event loop (and at most
 * every `pollMs`, 5 ms by default). Used to wait for a state another client reaches, e.g.
 * "B is queued": the condition is the event; the timeout only turns a hang into a clear
 * failure. A costly condition (an inspection of thousands of waiters) wants a longer
 * `pollMs`, or its own load slows down what it waits for.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
  pollMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Waits until `coord.inspect()` shows `count` waiters on lock `name`. */
export async function waitForWaiters(
  coord: Coordinator,
  name: string,
  count: number,
  kind: "locks" | "semaphores" = "locks",
  timeoutMs?: number,
  pollMs?: number,
): Promise<Inspection> {
  let last: Inspection | undefined;
  await waitFor(
    async () => {
      last = await coord.inspect();
      return (last[kind].find((l) => l.name === name)?.waiters.length ?? 0) === count;
    },
    `${count} waiter(s) on ${name}`,
    timeoutMs,
    pollMs,
  );
  return last as Inspection;
}

/** Resolves `true` if `promise` settles within `ms`, else `false` (for "still waiting" checks). */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

/**
 * Checks mutual exclusion the way a fenced resource would: records every entry and exit,
 * fails on any overlap of exclusive holders (or of more than `limit` permits) and on any
 * token that is not above what it must exceed.
 *
 * With `limit` 1 grants are serialised, so each token must exceed the previous one. With
 * more permits, two grants made concurrently reach this process in either order, so what
 * can be checked is what a resource can rely on: tokens are unique, and a grant asked for
 * after a release completed carries a higher token than the released one (pass `floor`,
 * read when the acquisition started, and report completed releases with `released`).
 */
export class ExclusionChecker {
  readonly #limit: number;
  #inside = 0;
  #maxInside = 0;
  #lastToken = -1n;
  #releasedMax = -1n;
  readonly #seen = new Set<bigint>();
  readonly violations: string[] = [];
  entries = 0;

  constructor(limit = 1) {
    this.#limit = limit;
  }

  /** The highest token whose release has completed: read it just before acquiring. */
  get floor(): bigint {
    return this.#releasedMax;
  }

  enter(handle: LockHandle, floor = this.#releasedMax): void {
    this.entries++;
    this.#inside++;
    this.#maxInside = Math.max(this.#maxInside, this.#inside);
    if (this.#inside > this.#limit) this.violations.push(`${this.#inside} holders at once (limit ${this.#limit})`);
    if (this.#seen.has(handle.token)) this.violations.push(`token ${handle.token} granted twice`);
    this.#seen.add(handle.token);
    if (this.#limit === 1 && handle.token <= this.#lastToken) {
      this.violations.push(`token ${handle.token} not above previous ${this.#lastToken}`);
    }
    if (handle.token <= floor) {
      this.violations.push(`token ${handle.token} not above ${floor}, released before it was asked for`);
    }
    this.#lastToken = handle.token;
  }

  exit(): void {
    this.#inside--;
  }

  /** Call once `release()` of `handle` has resolved. */
  released(handle: LockHandle): void {
    if (handle.token > this.#releasedMax) this.#releasedMax = handle.token;
  }

  get maxInside(): number {
    return this.#maxInside;
  }
}

/** A log of events in the order they happened, to assert orderings. */
export class OrderLog {
  readonly events: string[] = [];
  add(event: string): void {
    this.events.push(event);
  }
  indexOf(event: string): number {
    const i = this.events.indexOf(event);
    assert.ok(i >= 0, `event "${event}" never happened; log: ${this.events.join(", ")}`);
    return i;
  }
}

/** Reads `count` items from an async iterator, failing after `timeoutMs`. */
export async function take<T>(iterator: AsyncIterator<T>, count: number, timeoutMs = 15_000): Promise<T[]> {
  const out: T[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    const left = deadline - Date.now();
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      iterator.next(),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, left));
      }),
    ]);
    clearTimeout(timer);
    if (next === "timeout")
      assert.fail(`timed out waiting for item ${out.length + 1} of ${count}; got ${JSON.stringify(out, replacer)}`);
    if (next.done) assert.fail(`iterator ended after ${out.length} of ${count} items`);
    out.push(next.value);
  }
  return out;
}

/** JSON replacer that prints bigints. */
export function replacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? `${value}n` : value;
}

/** Yields to the event loop a few times, letting another client interleave. */
export async function interleave(rounds = 1): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * A per-suite check that the backend at `url()` has cells (durable records), probed once;
 * it skips the test by capability, saying `why`, when it has not.
 */
export function cellsCheck(url: () => string, why: string): (t: TestContext) => Promise<boolean> {
  let supported: boolean | undefined;
  return async (t) => {
    if (supported === undefined) {
      const probe = await connect(url());
      supported = probe.cellsSupported;
      await probe.close();
    }
    if (!supported) t.skip(why);
    return supported;
  };
}
