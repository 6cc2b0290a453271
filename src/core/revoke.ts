/**
 * An operator's revoke: ends the session of a stuck holder of a lock, semaphore or
 * leadership as a forced early expiry, never faster than the holder's own deadline. First
 * `Driver.fenceSession` marks the session revoked at the backend so its renewals fail;
 * then the core waits until the holder's local deadline must have passed (or until its
 * client, having learnt the loss, closed the session); only then `Driver.revokeSession`
 * frees what it held (etcd: revoke its lease; PostgreSQL: terminate its connections; ...).
 * So the revoked holder's signal fires before anyone else is granted its lock. See
 * docs/takeover.md.
 *
 * @module
 * @internal
 */
import { performance } from "node:perf_hooks";
import { raceSignal, sleep } from "./abortable.js";
import { cancellation } from "./cancel.js";
import type { CoordinatorCore } from "./core.js";
import type { Driver, QueueKind } from "./driver.js";
import { InvalidArgumentError, UnsupportedError } from "./errors.js";
import { checkDuration, checkName, checkOptions, checkSignal, describe } from "./validate.js";

/** Options of `coord.revoke()`. */
export interface RevokeOptions {
  /** Only holders of this member id (default: every holder). */
  memberId?: string | undefined;
  /** What `name` names: `"lock"` (default), `"semaphore"` or `"election"`. */
  kind?: QueueKind | undefined;
  /**
   * Free the holdings at once, without waiting for the holder to learn its loss. Its
   * signal may then fire after another client was granted its lock: safe only where every
   * protected resource checks fencing tokens. Default `false`.
   */
  immediate?: boolean | undefined;
  /**
   * Give up after this many milliseconds with a `TimeoutError` (default: no bound; a
   * revoke that waits for the holder's deadline takes up to its TTL). See `signal` for what
   * giving up leaves behind.
   */
  timeoutMs?: number | undefined;
  /**
   * Cancels the revoke with an `AbortError`. Sessions already marked revoked stay so: their
   * renewals keep failing, so their holders lose their holdings at their own deadline and
   * the backend frees them when their TTL runs out, just not earlier by this call. A session
   * not yet marked is left untouched.
   */
  signal?: AbortSignal | undefined;
}

/** One holding a revoke ended. */
export interface RevokedHolder {
  /** The holder's member id. */
  readonly memberId: string;
  /** The session that was revoked (everything it held is lost). */
  readonly sessionId: string;
  /** The holding's fencing token, which the next holder's `takeover.token` names. */
  readonly token: bigint;
}

const KINDS: readonly QueueKind[] = ["lock", "semaphore", "election"];

/** Revokes the sessions holding `name` (see `Coordinator.revoke`). @internal */
export async function revoke(
  core: CoordinatorCore,
  name: string,
  options: RevokeOptions | undefined,
): Promise<RevokedHolder[]> {
  const { memberId, kind = "lock", immediate = false, timeoutMs, signal } = checkOptions("revoke options", options);
  if (typeof immediate !== "boolean") {
    throw new InvalidArgumentError(`immediate must be a boolean, got ${describe(immediate)}`);
  }
  checkName("name", name);
  if (!KINDS.includes(kind)) {
    throw new InvalidArgumentError(`kind must be one of ${KINDS.join(", ")}, got ${describe(kind)}`);
  }
  if (memberId !== undefined) checkName("memberId", memberId);
  const bound = checkDuration("timeoutMs", timeoutMs);
  const callerSignal = checkSignal("signal", signal);
  core.assertOpen();
  const driver = core.driver;
  if (!driver.revokeSession) {
    throw new UnsupportedError(`the ${core.backend} backend cannot revoke a holder's session`, {
      backend: core.backend,
    });
  }
  const cancel = cancellation({
    what: `revoking ${kind} "${name}"`,
    backend: core.backend,
    timeoutMs: bound,
    signal: callerSignal,
    internal: [core.closedSignal],
  });
  try {
    if (cancel.aborted) throw cancel.reason;
    // Each step settles no later than the cancellation; a backend call already sent may
    // still complete, which a revoke allows (see RevokeOptions.signal).
    const step = <T>(work: Promise<T>) => raceSignal(work, cancel.signal);
    const snapshot = await step(driver.inspect());
    const queue = snapshot.queues.find((q) => q.kind === kind && q.name === name);
    const holders = (queue?.holders ?? []).filter((h) => memberId === undefined || h.memberId === memberId);
    // One session may hold several permits of a semaphore: revoke it once.
    const sessions = [...new Set(holders.map((h) => h.sessionId))];
    if (!immediate && driver.fenceSession) await fenceAndWait(driver, sessions, cancel.signal, step);
    const revokeSession = driver.revokeSession.bind(driver);
    for (const sessionId of sessions) await step(revokeSession(sessionId));
    return holders.map((h) => ({ memberId: h.memberId, sessionId: h.sessionId, token: h.token }));
  } catch (error) {
    throw core.translate(cancel.aborted ? cancel.reason : error);
  } finally {
    cancel.dispose();
  }
}

/** Slack added to a driver's bound, for timer lateness. */
const SLACK_MS = 50;

/**
 * Marks every session revoked, then waits until each holder's local deadline must have
 * passed, or until each session has left `inspect()` (its client learnt the loss and closed
 * it), whichever comes first. Ends early (rejecting) when `stop` aborts: a timeout, the
 * caller's cancellation or the coordinator's close.
 */
async function fenceAndWait(
  driver: Driver,
  sessions: readonly string[],
  stop: AbortSignal,
  step: <T>(work: Promise<T>) => Promise<T>,
): Promise<void> {
  const fence = driver.fenceSession?.bind(driver);
  if (!fence) return;
  const started = performance.now();
  let longest = 0;
  const pending = new Set<string>();
  for (const sessionId of sessions) {
    const bound = await step(fence(sessionId));
    if (bound === null) continue;
    pending.add(sessionId);
    longest = Math.max(longest, performance.now() - started + bound + SLACK_MS);
  }
  if (pending.size === 0) return;
  const pollMs = Math.max(50, Math.min(1000, Math.floor(longest / 10)));
  for (;;) {
    const left = started + longest - performance.now();
    if (left <= 0) return;
    await sleep(Math.min(left, pollMs), stop);
    const snapshot = await step(driver.inspect());
    const live = new Set<string>();
    for (const q of snapshot.queues) for (const e of [...q.holders, ...q.waiters]) live.add(e.sessionId);
    for (const r of snapshot.records) for (const e of r.entries) live.add(e.sessionId);
    for (const sessionId of pending) if (!live.has(sessionId)) pending.delete(sessionId);
    if (pending.size === 0) return;
  }
}
