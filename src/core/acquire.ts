/**
 * The acquisition path every lock, semaphore permit and leadership takes: one try, or a
 * blocking wait that survives the loss of its session.
 *
 * @module
 * @internal
 */
import { performance } from "node:perf_hooks";
import { atMost, graceAfterAbort, sleep } from "./abortable.js";
import { type Cancellation, cancellation } from "./cancel.js";
import type { CoordinatorCore } from "./core.js";
import type { AcquireRequest, DriverCells, DriverGrant, LockMode, QueueKind } from "./driver.js";
import { AbortError, BatonError, FenceFailedError, TimeoutError } from "./errors.js";
import { LockHandle } from "./lock.js";
import type { LiveSession } from "./session.js";
import {
  type AbandonedClaims,
  type Claimed,
  claimWithin,
  recordText,
  type TakeoverClaim,
  type TakeoverRequest,
} from "./takeover.js";
import type { AcquireOutcome } from "./telemetry.js";
import { checkDuration, checkSignal } from "./validate.js";

/**
 * How long a cancelled or timed-out acquisition still waits for the release of a grant it
 * could not hand out: a release answers in a round trip, so more means the backend stopped
 * answering.
 */
const RELEASE_GRACE_MS = 1000;

/** The pause before a blocking wait asks again after a failed takeover claim; it doubles, up to the max. */
const CLAIM_RETRY_FIRST_MS = 25;
const CLAIM_RETRY_MAX_MS = 1000;

/** What is acquired. */
export interface Target {
  readonly kind: QueueKind;
  readonly name: string;
  /** Holders allowed at once: 1 for locks and elections. */
  readonly limit: number;
  readonly mode: LockMode;
  /** Takeover tracking (exclusive locks only), already checked. */
  readonly takeover?: TakeoverRequest | undefined;
}

/** One attempt: `try` resolves `null` when busy; `zero` rejects with a 0 ms `TimeoutError`. */
export interface Attempt extends Target {
  readonly wait: "block" | "try" | "zero";
  /** For `block`: the time left of the caller's timeout. */
  readonly timeoutMs?: number | undefined;
  /** The caller's own timeout, for the `TimeoutError` (a retry has less left than that). */
  readonly reportedTimeoutMs?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** `performance.now()` of the caller's call, for the wait time across retries (0 unless telemetry records). */
  readonly startedAt?: number | undefined;
  /** For `block`: what the wait's earlier attempts' failed claims left (see {@link AbandonedClaims}). */
  readonly abandoned?: AbandonedClaims | undefined;
}

/** The `baton.outcome` of a failed acquisition. */
function failureOutcome(error: unknown, wait: Attempt["wait"]): AcquireOutcome {
  if (error instanceof TimeoutError) return wait === "zero" ? "busy" : "timed_out";
  if (error instanceof BatonError && (error.code === "ABORTED" || error.code === "CLOSED")) return "aborted";
  return "error";
}

/** Raised by an attempt whose session was lost while it waited: the wait goes on. */
class SessionLostWhileWaiting {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

/**
 * Raised by a blocking attempt whose takeover claim failed for a reason that says nothing
 * about the lock: the backend did not answer the record's write (a connection dropped, a
 * server restarting), or the grant was lost with its connection before it was handed out.
 * The grant went back (or with its connection), so nothing is held: the wait goes on, after
 * a pause that grows while the claims keep failing.
 */
class ClaimFailedWhileWaiting extends SessionLostWhileWaiting {}

/** Whether a blocking attempt's failed claim lets the wait go on (see {@link ClaimFailedWhileWaiting}). */
function claimFailureIsTransient(error: unknown, handle: LockHandle, cancel: { readonly aborted: boolean }): boolean {
  if (cancel.aborted || error instanceof TimeoutError || error instanceof FenceFailedError) return false;
  // Lost (not given back) before it was handed out: its connection or session went.
  if (handle.signal.aborted) return true;
  return error instanceof BatonError && error.code === "BACKEND_UNAVAILABLE";
}

/**
 * One acquisition on the current session. With `wait: "block"`, a loss of the session
 * while waiting rejects with a `SessionLostWhileWaiting` (for {@link blockingGrant} to
 * retry) unless the coordinator closed or the caller cancelled.
 */
export function acquireGrant(core: CoordinatorCore, attempt: Attempt): Promise<LockHandle | null> {
  const running = acquireOnSession(core, attempt);
  core.acquiring.add(running);
  const settled = () => core.acquiring.delete(running);
  running.then(settled, settled);
  return running;
}

async function acquireOnSession(core: CoordinatorCore, attempt: Attempt): Promise<LockHandle | null> {
  const { kind, name, mode, wait, signal } = attempt;
  const { telemetry } = core;
  // Without metrics or the debug log nothing is reported: no clock read, no detail text.
  const recording = telemetry.recording;
  const startedAt = recording ? (attempt.startedAt ?? performance.now()) : 0;
  let reported = false;
  const report = (outcome: AcquireOutcome, detail?: () => string) => {
    if (reported || !recording) return;
    reported = true;
    telemetry.acquired(kind, name, mode, outcome, performance.now() - startedAt, detail?.());
  };
  let session: LiveSession;
  try {
    // The live session as it is (no tick): the wait then joins the queue in this call, in
    // call order with the synchronous grants of later calls.
    const current = core.currentSession;
    session = current && !current.lost && !core.closed ? current : await core.liveSession();
  } catch (error) {
    report(failureOutcome(error, wait), () => `: ${(error as Error).message}`);
    throw error;
  }
  const what = `acquiring ${kind} "${name}"`;
  const cancel = cancellation({
    what,
    backend: core.backend,
    timeoutMs: wait === "block" ? attempt.timeoutMs : undefined,
    reportedTimeoutMs: attempt.reportedTimeoutMs,
    signal,
    session,
    // close() waits for acquisitions under way: they end at once, withdrawn.
    internal: [core.closedSignal],
  });
  let handle: LockHandle | null = null;
  let lostEarly: Error | null = null;
  const endWait = wait === "block" ? core.telemetry.waitStarted(kind, name) : () => {};
  const record = nativeRecord(core, attempt.takeover, session.id);
  try {
    // An already-cancelled call must not take anything, even if it is free.
    if (cancel.aborted) throw cancel.reason;
    const granting = session.driver.acquire(
      new DriverRequest(attempt, cancel, record, (error) => {
        if (handle) handle.lose(error);
        else lostEarly = error;
      }),
    );
    const grant =
      wait === "block"
        ? // A driver withdraws an aborted waiter within its TTL; one that does not (a request
          // its client never answers) cannot hold the acquisition longer. A late grant goes back.
          await graceAfterAbort(granting, cancel, session.ttlMs, (late) => {
            if (late) session.driver.release(late).catch(() => {});
          })
        : await granting;
    if (grant && wait === "block" && cancel.aborted) {
      // Cancelled while the grant was on its way (a driver that took the lock in the same
      // round trip as the abort): nothing may be held once this rejects, so it goes back first,
      // and the wait ends as a driver's withdrawal would, with the cancellation's reason.
      await atMost(
        session.driver.release(grant).catch(() => {}),
        RELEASE_GRACE_MS,
      );
      throw cancel.reason;
    }
    if (!grant) {
      report("busy");
      if (wait === "try") return null;
      throw new TimeoutError(`${what} timed out after 0 ms: it is held`, 0, { backend: core.backend });
    }
    handle = LockHandle.create(core, session, kind, name, grant);
    // Past the local deadline with its timer not run yet (a late event loop, a pause): the
    // backend may have expired the session, and a grant made from what it said before then
    // may be someone else's by now, so the session is lost, and so is the grant.
    if (!session.lost && session.pastDeadline) session.loseAtDeadline();
    if (lostEarly) handle.lose(lostEarly);
    else if (session.lost) handle.lose(session.signal.reason as Error);
    if (wait === "block" && !handle.held && lostWhileWaiting(core, session, signal)) {
      // Granted just as the session went: nothing is held, so it is one more lost wait.
      await handle.release();
      throw new SessionLostWhileWaiting(session.signal.reason);
    }
    if (attempt.takeover && handle.held && grant.recordVersion !== undefined) {
      // Written by the driver with the grant (free or cleanly released): nothing to claim.
      handle.claimed(nativeClaim(core, attempt.takeover, grant.recordVersion), null);
    } else if (attempt.takeover && handle.held) {
      let claimed: "claimed" | "delayed";
      try {
        claimed = await claimOrRelease(core, handle, session, attempt, attempt.takeover, grant, cancel.signal);
      } catch (error) {
        if (wait === "block" && !core.closed && claimFailureIsTransient(error, handle, cancel)) {
          attempt.abandoned?.tokens.add(handle.token);
          throw new ClaimFailedWhileWaiting(error);
        }
        throw error;
      }
      if (claimed === "delayed") {
        if (wait === "try") {
          report("busy", () => " (lock delay)");
          return null;
        }
        throw new TimeoutError(`${what} timed out after 0 ms: it is under a lock delay`, 0, { backend: core.backend });
      }
    }
    report("granted", () => ` (token ${(handle as LockHandle).token})`);
    return handle;
  } catch (error) {
    if (error instanceof SessionLostWhileWaiting) {
      const why = error instanceof ClaimFailedWhileWaiting ? "its takeover claim failed" : undefined;
      core.telemetry.retried(kind, name, error.error, why);
      throw error;
    }
    if (wait === "block" && !(error instanceof TimeoutError) && !core.closed && !signal?.aborted) {
      // The backend may tell the waiter before it tells the session: the session is lost.
      if (error instanceof BatonError && error.code === "SESSION_EXPIRED") session.lose(error);
      if (lostWhileWaiting(core, session, signal)) {
        core.telemetry.retried(kind, name, error);
        throw new SessionLostWhileWaiting(error);
      }
    }
    const translated = core.translate(error);
    report(failureOutcome(translated, wait), () => `: ${translated.message}`);
    throw translated;
  } finally {
    endWait();
    cancel.dispose();
  }
}

/**
 * What the driver is asked, with its `signal` made only if the driver reads it. A class: an
 * object literal with a getter costs V8 about ten times a plain one.
 */
class DriverRequest implements AcquireRequest {
  readonly kind: QueueKind;
  readonly name: string;
  readonly mode: LockMode;
  readonly limit: number;
  readonly wait: boolean;
  readonly cancel: Cancellation;
  readonly onLost: (error: Error) => void;
  readonly record: string | undefined;

  constructor(attempt: Attempt, cancel: Cancellation, record: string | undefined, onLost: (error: Error) => void) {
    this.kind = attempt.kind;
    this.name = attempt.name;
    this.mode = attempt.mode;
    this.limit = attempt.limit;
    this.wait = attempt.wait === "block";
    this.cancel = cancel;
    this.onLost = onLost;
    this.record = record;
  }

  get signal(): AbortSignal {
    return this.cancel.signal;
  }
}

/** Claims a tracked grant (see takeover.ts); releases it unless claimed. */
async function claimOrRelease(
  core: CoordinatorCore,
  handle: LockHandle,
  session: LiveSession,
  attempt: Attempt,
  request: TakeoverRequest,
  grant: DriverGrant,
  signal: AbortSignal,
): Promise<"claimed" | "delayed"> {
  let outcome: Claimed | "delayed" | undefined;
  try {
    const target = { name: handle.name, token: handle.token, acquiredAt: handle.acquiredAt, sessionId: session.id };
    // Cancellation, timeout and the loss of the grant all end the claim.
    const stop = AbortSignal.any([signal, handle.signal]);
    const call = {
      core,
      grant: target,
      request,
      native: grant,
      wait: attempt.wait === "block",
      stop,
      abandoned: attempt.abandoned,
    };
    outcome = await claimWithin(call, handle.signal);
  } finally {
    // Nothing is held silently: a grant that was not claimed goes back at once. Once the
    // acquisition was cancelled or timed out, a backend that stopped answering does not hold
    // the caller past a short grace: the release goes on (bounded by the TTL), and the
    // session's expiry frees the lock if it never arrives.
    if (outcome === undefined || outcome === "delayed") {
      const giving = handle.release();
      await (signal.aborted ? atMost(giving, RELEASE_GRACE_MS) : giving);
    }
  }
  if (outcome === "delayed") return outcome;
  handle.claimed(outcome.claim, outcome.takeover);
  // Lost between the claim's last check and now: never hand out a lost handle.
  if (!handle.held) {
    const reason = handle.signal.reason as Error;
    await handle.release();
    throw reason;
  }
  if (outcome.takeover) core.telemetry.takeover(handle.kind, handle.name);
  return "claimed";
}

/** The claim of a grant whose record its driver wrote with it, at `version`. */
function nativeClaim(core: CoordinatorCore, request: TakeoverRequest, version: bigint): TakeoverClaim {
  return { cells: core.driver.cells as DriverCells, version, explicit: request.explicit };
}

/** The record a driver with native records writes with the grant (see takeover.ts). */
function nativeRecord(
  core: CoordinatorCore,
  request: TakeoverRequest | undefined,
  sessionId: string,
): string | undefined {
  return request && core.driver.nativeRecords
    ? recordText(core.memberId, sessionId, request, core.plainRecord)
    : undefined;
}

function lostWhileWaiting(core: CoordinatorCore, session: LiveSession, signal: AbortSignal | undefined): boolean {
  return session.lost && !core.closed && !signal?.aborted;
}

/**
 * A blocking acquisition with validated `timeoutMs` and `signal` (`timeoutMs: 0` tries once
 * and fails with `TimeoutError`): what `Lock.acquire`, `Semaphore.acquire` and
 * `Election.campaign` share.
 *
 * A wait whose session is lost (its lease expired while the process was paused, a
 * connection dropped) holds nothing, so it goes on waiting on a fresh session until its
 * own deadline: it joins the queue again at the back, behind everyone who queued while it
 * was away, as its place went with the old session. If the fresh session cannot be opened,
 * that error (`BackendUnavailableError`) ends the wait. A takeover claim that fails without
 * a word about the lock ({@link ClaimFailedWhileWaiting}) queues again too, after a pause.
 */
export function blockingGrant(
  core: CoordinatorCore,
  target: Target,
  options: { timeoutMs?: unknown; signal?: unknown },
): LockHandle | Promise<LockHandle> {
  const timeout = checkDuration("timeoutMs", options.timeoutMs);
  const signal = checkSignal("signal", options.signal);
  core.assertOpen();
  return (
    grantAtOnce(core, target, signal) ??
    waitForGrant(core, target, timeout, signal, core.telemetry.recording ? performance.now() : 0)
  );
}

/**
 * A try (`tryAcquire`): the handle, or `null` when busy. Like {@link blockingGrant}, the
 * free case is answered synchronously where the driver can.
 */
export function tryGrant(core: CoordinatorCore, target: Target): LockHandle | Promise<LockHandle | null> {
  core.assertOpen();
  return (
    grantAtOnce(core, target, undefined) ??
    acquireGrant(core, { ...target, wait: "try", startedAt: core.telemetry.recording ? performance.now() : 0 })
  );
}

/**
 * The uncontended case with no timer, no signal, no listener and no promise: taken when
 * the session is live (not lost, not past its deadline), the driver has `grantNow`, the
 * call is not already cancelled and tracked for takeover only where the driver writes the
 * record with the grant (a claim by the core needs round trips; a takeover found runs the
 * async claim). `null` hands the call to the full
 * path, which checks everything again; so a grant made here is one `acquireGrant` would
 * have made at once, with the same handle and the same loss signal.
 */
function grantAtOnce(core: CoordinatorCore, target: Target, signal: AbortSignal | undefined): LockHandle | null {
  // Read only for telemetry: a clock read is a tenth of an uncontended memory cycle.
  const startedAt = core.telemetry.recording ? performance.now() : 0;
  const session = core.currentSession;
  if (!session || session.lost || session.pastDeadline || signal?.aborted) return null;
  // A tracked grant is answered here only where the driver writes its record with it.
  if (target.takeover && !core.driver.nativeRecords) return null;
  const { driver } = session;
  if (!driver.grantNow) return null;
  let handle: LockHandle | null = null;
  let lostEarly: Error | null = null;
  let grant: DriverGrant | null;
  try {
    grant = driver.grantNow({
      kind: target.kind,
      name: target.name,
      mode: target.mode,
      limit: target.limit,
      onLost: (error) => {
        if (handle) handle.lose(error);
        else lostEarly = error;
      },
      record: nativeRecord(core, target.takeover, session.id),
    });
  } catch {
    return null;
  }
  if (!grant) return null;
  if (target.takeover && grant.recordVersion === undefined) {
    // Against grantNow's contract (a record was there): given back (never leaked), and the
    // full path claims it.
    if (driver.releaseNow) driver.releaseNow(grant);
    else void driver.release(grant).catch(() => {});
    return null;
  }
  handle = LockHandle.create(core, session, target.kind, target.name, grant);
  if (target.takeover && grant.recordVersion !== undefined) {
    handle.claimed(nativeClaim(core, target.takeover, grant.recordVersion), null);
  }
  if (lostEarly) handle.lose(lostEarly);
  // Guarded: without metrics or the debug log, the report's arguments are not even built.
  if (core.telemetry.recording) {
    core.telemetry.acquired(
      target.kind,
      target.name,
      target.mode,
      "granted",
      performance.now() - startedAt,
      ` (token ${handle.token})`,
    );
  }
  return handle;
}

async function waitForGrant(
  core: CoordinatorCore,
  target: Target,
  timeout: number | undefined,
  signal: AbortSignal | undefined,
  startedAt: number,
): Promise<LockHandle> {
  if (timeout === 0) return (await acquireGrant(core, { ...target, wait: "zero", signal, startedAt })) as LockHandle;
  const deadline = timeout === undefined ? undefined : performance.now() + timeout;
  let claimFailures = 0;
  let firstClaimFailureAt = 0;
  const abandoned: AbandonedClaims | undefined = target.takeover ? { tokens: new Set(), found: undefined } : undefined;
  for (;;) {
    const left = deadline === undefined ? undefined : Math.max(0, Math.ceil(deadline - performance.now()));
    try {
      const attempt = {
        ...target,
        wait: "block",
        timeoutMs: left,
        reportedTimeoutMs: timeout,
        signal,
        startedAt,
        abandoned,
      } as const;
      return (await acquireGrant(core, attempt)) as LockHandle;
    } catch (error) {
      if (!(error instanceof SessionLostWhileWaiting)) throw error;
      // The next turn opens a fresh session (liveSession) if needed and queues again. After
      // a failed claim, not at once: the backend that failed it may still be coming back.
      if (error instanceof ClaimFailedWhileWaiting) {
        const now = performance.now();
        if (claimFailures++ === 0) firstClaimFailureAt = now;
        // For at most a TTL: a backend that keeps failing claims for longer is not coming
        // back soon (or fails them for good), and each grant re-runs the fencing hook.
        if (now - firstClaimFailureAt >= core.ttlMs)
          throw reportEnded(core, target, startedAt, core.translate(error.error));
        const pause = Math.min(CLAIM_RETRY_MAX_MS, CLAIM_RETRY_FIRST_MS * 2 ** (claimFailures - 1));
        const left = deadline === undefined ? pause : Math.max(0, Math.min(pause, deadline - now));
        const stop = signal ? AbortSignal.any([signal, core.closedSignal]) : core.closedSignal;
        await sleep(left, stop).catch(() => {});
        const what = `acquiring ${target.kind} "${target.name}"`;
        if (signal?.aborted) {
          throw reportEnded(
            core,
            target,
            startedAt,
            new AbortError(`${what} was cancelled`, { backend: core.backend, cause: signal.reason }),
          );
        }
        // An attempt with no time left could be granted and fail its claim again before its
        // own timer runs: the deadline is checked here.
        if (deadline !== undefined && timeout !== undefined && performance.now() >= deadline) {
          const timedOut = new TimeoutError(`${what} timed out after ${timeout} ms`, timeout, {
            backend: core.backend,
            cause: error.error,
          });
          throw reportEnded(core, target, startedAt, timedOut);
        }
        // Closed during the pause: the next attempt rejects with ClosedError.
      }
    }
  }
}

/** Reports how a wait that ended between its attempts ended (see {@link waitForGrant}); returns `error`. */
function reportEnded(core: CoordinatorCore, target: Target, startedAt: number, error: BatonError): BatonError {
  const { telemetry } = core;
  if (telemetry.recording) {
    const outcome = failureOutcome(error, "block");
    telemetry.acquired(
      target.kind,
      target.name,
      target.mode,
      outcome,
      performance.now() - startedAt,
      `: ${error.message}`,
    );
  }
  return error;
}
