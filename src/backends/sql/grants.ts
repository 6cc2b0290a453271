/**
 * What PostgreSQL's and MySQL's sessions share about a grant: its shape, putting it on the
 * lane (connection) that holds it, asking again after a failed attempt, a release's
 * prologue and epilogue, and the order of upgrades within one process. Each backend adds
 * its keys, its statements and which failures it asks again after.
 *
 * @module
 */
import { sleep } from "../../core/abortable.js";
import type { AcquireRequest, DriverGrant, LockMode, QueueKind } from "../../core/driver.js";
import { releasedWhileUpgrading, upgradeDeadlock } from "../../core/refusals.js";

/** A pending upgrade: `stop` ends it (the grant stays shared), `done` settles after. */
export interface PendingUpgrade {
  readonly stop: (reason: Error) => void;
  readonly done: Promise<unknown>;
}

/** What a grant needs of its lane. */
export interface GrantLane<G> {
  readonly grants: Set<G>;
  /** Grant ids held or being acquired on the lane. */
  readonly ids: Set<string>;
  readonly connection: { readonly alive: boolean; destroy(error: Error): void };
  /** Tells the lane's waiters to look again. */
  changed(): void;
}

/** A grant as the SQL backends keep it: on the lane whose connection holds it. */
export interface SqlGrant<L> extends DriverGrant {
  token: bigint;
  mode: LockMode;
  readonly kind: QueueKind;
  readonly name: string;
  /** `kind NUL name`: a lane holds at most one grant per id. */
  readonly id: string;
  readonly lane: L;
  readonly onLost: (error: Error) => void;
  released: boolean;
  upgrade: PendingUpgrade | null;
}

/** The fields every SQL grant starts with; the backend adds its keys. */
export function grantFields<L>(lane: L, request: AcquireRequest, id: string, token: bigint): SqlGrant<L> {
  return {
    token,
    mode: request.mode,
    kind: request.kind,
    name: request.name,
    id,
    lane,
    onLost: request.onLost,
    released: false,
    upgrade: null,
  };
}

/**
 * Puts a new grant on its lane. A connection that died just before (its death listeners
 * ran already and found no grant to tell) loses the grant at once, through `onLost`.
 */
export function onLane<G extends SqlGrant<GrantLane<G>>>(grant: G, lost: () => Error): G {
  grant.lane.grants.add(grant);
  if (!grant.lane.connection.alive) {
    grant.lane.grants.delete(grant);
    grant.onLost(lost());
  }
  return grant;
}

/**
 * Releases `grant` with `statement`, run on its lane. A grant released already, or lost
 * with its connection, is done at once; a pending upgrade is stopped first and awaited.
 * Whatever goes wrong, the lock must not stay held behind our back: a failed statement
 * drops the connection (the server then frees everything it held) and rejects with
 * `translate`'s error.
 */
export async function releaseOnLane<G extends SqlGrant<GrantLane<G>>>(
  grant: G,
  backend: string,
  statement: () => Promise<void>,
  translate: (error: unknown, what: string) => Error,
): Promise<void> {
  if (grant.released) return;
  grant.released = true;
  if (grant.upgrade) {
    grant.upgrade.stop(releasedWhileUpgrading({ backend }));
    await grant.upgrade.done;
  }
  const lane = grant.lane;
  if (!lane.grants.has(grant)) return;
  try {
    await statement();
  } catch (error) {
    if (lane.connection.alive) lane.connection.destroy(error as Error);
    throw translate(error, `releasing ${grant.kind} "${grant.name}"`);
  } finally {
    lane.grants.delete(grant);
    lane.ids.delete(grant.id);
    lane.changed();
  }
}

/** Queues with an upgrade under way in this process (see {@link oneUpgradeAtATime}). */
const upgrading = new Set<string>();

/**
 * Runs `upgrade` unless another upgrade of `queue` (a name unique in the process: server,
 * schema, namespace, kind and name) is under way here; that one came first, so this one is
 * refused at once with `DeadlockError`, as the server would refuse it. Two upgrades from
 * one process are ordered by call, not by which reaches the server first.
 */
export async function oneUpgradeAtATime(backend: string, queue: string, upgrade: () => Promise<void>): Promise<void> {
  const local = `${backend}\u0000${queue}`;
  if (upgrading.has(local)) throw upgradeDeadlock({ backend });
  upgrading.add(local);
  try {
    await upgrade();
  } finally {
    upgrading.delete(local);
  }
}

/**
 * Runs `upgrade` as the pending upgrade of `grant`: a release stops it (with its own
 * reason, through the signal `upgrade` is given, which also aborts with `signal`) and
 * waits for it to settle. Settles as `upgrade` does.
 */
export async function asPendingUpgrade(
  grant: { upgrade: PendingUpgrade | null },
  signal: AbortSignal,
  upgrade: (signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const run = upgrade(AbortSignal.any([signal, stop.signal]));
  grant.upgrade = { stop: (reason) => stop.abort(reason), done: run.catch(() => {}) };
  try {
    await run;
  } finally {
    grant.upgrade = null;
  }
}

/** How {@link askAgain} runs one backend's acquisition. */
export interface AskAgain<T> {
  /** One attempt. */
  once(): Promise<T>;
  /** Whether to ask again after `error` (attempts count from 0); false rejects with `fail(error)`. */
  retry(error: unknown, attempt: number): boolean;
  /** The backend's error for a failure not asked again. */
  fail(error: unknown): Error;
  /** Throws when the session is closed. */
  assertOpen(): void;
  /** Rejects with the signal's reason (the backend may first wait for its close). */
  aborted(signal: AbortSignal): Promise<never>;
  /** The first pause before asking again; it doubles, up to 1 s. */
  readonly firstDelayMs: number;
}

/**
 * Runs `once` until it settles without an error `retry` allows, pausing (with backoff)
 * between attempts. Cancellation: once `signal` aborts, no attempt starts and a failed one
 * is not retried; the call rejects through `aborted`.
 */
export async function askAgain<T>(signal: AbortSignal, how: AskAgain<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    if (signal.aborted) return how.aborted(signal);
    how.assertOpen();
    try {
      return await how.once();
    } catch (error) {
      if (signal.aborted) return how.aborted(signal);
      if (!how.retry(error, attempt)) throw how.fail(error);
      await sleep(Math.min(1000, how.firstDelayMs * 2 ** attempt), signal);
    }
  }
}
