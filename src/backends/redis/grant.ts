/**
 * Acquiring (one ACQUIRE script; waiting for the grant message), releasing (one RELEASE
 * script) and converting (one CONVERT script; waiting for the upgrade message) a queue
 * entry.
 *
 * @module
 */
import { atMost, LazyStop, linked, watchSignal } from "../../core/abortable.js";
import { randomBytes } from "node:crypto";
import type { AcquireRequest, CellEntry, DriverGrant, LockMode, QueueKind } from "../../core/driver.js";
import { InvalidStateError, LockLostError, SessionExpiredError } from "../../core/errors.js";
import { limitMismatch, notHeld, releasedWhileUpgrading, upgradeDeadlock } from "../../core/refusals.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import { cellKeys } from "./cells.js";
import { BACKEND } from "./errors.js";
import { ACQUIRE, CANCEL_UPGRADE, CHECK, CONVERT, RELEASE } from "./lua.js";
import { freeOrEnd, replicated, runRetrying, type Scope } from "./scope.js";
import { type Mailbox, recheckDelay, wakeStats } from "./wakeups.js";

/** A grant: its queue entry, and what a conversion or release needs. */
export class RedisGrant implements DriverGrant {
  token: bigint;
  mode: LockMode;
  readonly kind: QueueKind;
  readonly name: string;
  readonly queue: string;
  readonly entry: string;
  readonly onLost: (error: Error) => void;
  released = false;
  /** Aborts a pending upgrade when the grant is released. */
  upgrade: AbortController | null = null;
  recordVersion?: bigint | undefined;
  previousRecord?: CellEntry | undefined;
  /** The keys of its takeover record's cell (cells.ts cellKeys), when tracked: made once, at the acquisition. */
  readonly cell: readonly string[] | undefined;

  constructor(
    request: AcquireRequest,
    queue: string,
    entry: string,
    token: bigint,
    cell: readonly string[] | undefined,
  ) {
    this.kind = request.kind;
    this.name = request.name;
    this.mode = request.mode;
    this.queue = queue;
    this.entry = entry;
    this.token = token;
    this.onLost = request.onLost;
    this.cell = cell;
  }
}

type Reply = [string, ...unknown[]];

const code = (mode: LockMode) => (mode === "exclusive" ? "x" : "s");

/**
 * Entry ids: unique in every queue, across processes and over time (a script is idempotent
 * per entry id), from a random prefix per process and a counter; cheaper than random bytes
 * per acquisition. At least 13 characters: never one of the queue's own field names, which
 * share the entries' hash (lua.ts).
 */
const ENTRY_PREFIX = randomBytes(9).toString("base64url");
let entries = 0;
const nextEntry = () => ENTRY_PREFIX + (++entries).toString(36);

/**
 * Asks for `request`: granted at once in one round trip when free; otherwise the entry
 * waits in the queue until a release publishes its grant. Resolves `null` for a try that
 * found it busy; on abort the entry is withdrawn and the promise rejects with the reason.
 */
export async function acquire(scope: Scope, request: AcquireRequest): Promise<RedisGrant | null> {
  const queue = scope.keys.queue(request.kind, request.name);
  const entry = nextEntry();
  const cell = request.record === undefined ? undefined : cellKeys(scope.keys, TAKEOVER_SPACE, request.name);
  const args = [
    queue,
    request.kind,
    request.name,
    entry,
    scope.sessionId,
    scope.memberId,
    code(request.mode),
    String(request.limit),
    request.wait ? "1" : "0",
    String(scope.ttlMs),
    ...(cell === undefined ? [""] : [request.record as string, ...cell]),
  ];
  // The core checked cancellation before calling; the signal is built (by the core) and
  // read only when this does not end in the first round trip.
  const box = scope.wakeups.open(entry);
  scope.track(queue, 1);
  let first: Reply | null = null;
  try {
    first = (await scope.link.run(ACQUIRE, [scope.keys.prefix, ...args])) as Reply;
  } catch {
    // Retried below, with the signal; the script is idempotent per entry.
  }
  if (first && scope.replicas === 0 && (first[0] === "granted" || first[0] === "busy")) {
    box.dispose();
    if (first[0] === "granted") return granted(request, queue, entry, cell, first);
    scope.track(queue, -1);
    return null;
  }
  return slowAcquire(scope, request, queue, entry, cell, args, box, first);
}

async function slowAcquire(
  scope: Scope,
  request: AcquireRequest,
  queue: string,
  entry: string,
  cell: readonly string[] | undefined,
  args: string[],
  box: Mailbox,
  first: Reply | null,
): Promise<RedisGrant | null> {
  // The wait watches the core's cancellation and the session's end as subscriptions; the
  // AbortSignal that retries sleep on is made only when a script must be sent again (a
  // check, a retry): LazyStop.
  const cancel = request.cancel ?? watchSignal(request.signal);
  const stop = new LazyStop(() => request.signal, cancel, scope.ended);
  const what = () => `acquiring ${request.kind} "${request.name}"`;
  try {
    let reply = first ?? ((await runRetrying(scope, what(), ACQUIRE, args, stop.signal)) as Reply);
    for (;;) {
      switch (reply[0]) {
        case "granted": {
          const grant = granted(request, queue, entry, cell, reply);
          if (scope.replicas > 0) await replicated(scope, what());
          return grant;
        }
        case "busy":
          scope.track(queue, -1);
          return null;
        case "limit":
          throw limitMismatch(request.limit, Number(reply[1]), { backend: BACKEND });
        case "lost":
        case "missing":
          throw vanished(scope, `the session's key is gone (expired or the server lost it) while ${what()}`);
        case "waiting": {
          const wake = await box.next(recheckDelay(Number(reply[1]), scope.ttlMs), cancel, scope.ended);
          if (wake.type === "message" && wake.kind === "g") {
            wakeStats.grantsByMessage++;
            // The grant as the message gives it: no round trip, no reply to parse.
            const grant = new RedisGrant(request, queue, entry, wake.token, cell);
            if (wake.recordVersion) grant.recordVersion = BigInt(wake.recordVersion);
            if (scope.replicas > 0) await replicated(scope, what());
            return grant;
          }
          wakeStats.checks++;
          reply = (await runRetrying(scope, what(), CHECK, [queue, entry], stop.signal)) as Reply;
          if (reply[0] === "granted") wakeStats.grantsByCheck++;
          continue;
        }
        default:
          throw new InvalidStateError(`unexpected answer from Redis while ${what()}: ${String(reply[0])}`, {
            backend: BACKEND,
          });
      }
    }
  } catch (error) {
    // Withdraw the entry, granted or not: a grant nobody will use must not stay held.
    // A grant never handed out was not lost either: its takeover record goes with it, also
    // one written by a grant this client never heard of (the script finds it by token).
    const removal = freeOrEnd(
      scope,
      `withdrawing from ${request.kind} "${request.name}"`,
      RELEASE,
      cell === undefined ? [queue, entry] : [queue, entry, "1", ...cell],
    );
    scope.track(queue, -1);
    if (!scope.ended.aborted) await atMost(removal, scope.requestTimeoutMs);
    if (cancel.aborted) throw cancel.reason;
    throw error;
  } finally {
    box.dispose();
    stop.dispose();
  }
}

/** A grant from an ACQUIRE reply, with what it did with the takeover record (lua.ts). */
function granted(
  request: AcquireRequest,
  queue: string,
  entry: string,
  cell: readonly string[] | undefined,
  reply: Reply,
): RedisGrant {
  const grant = new RedisGrant(request, queue, entry, BigInt(reply[1] as string), cell);
  if (reply[3] === "written") grant.recordVersion = BigInt(reply[4] as string);
  else if (reply[3] === "found") {
    const [version, fence, value] = reply.slice(4) as string[];
    grant.previousRecord = {
      key: request.name,
      version: BigInt(version ?? "0"),
      fence: BigInt(fence ?? "0"),
      value: value ?? null,
    };
  }
  return grant;
}

/**
 * The RELEASE arguments that delete a clean grant's own takeover record with it (one the
 * core claimed); a lost holding's release keeps its record, for the next holder to fence.
 */
function releaseArgs(scope: Scope, grant: RedisGrant): string[] {
  if (grant.recordVersion === undefined) return [grant.queue, grant.entry];
  return [grant.queue, grant.entry, "1", ...(grant.cell ?? cellKeys(scope.keys, TAKEOVER_SPACE, grant.name))];
}

/** Frees a grant (idempotent). A failure is retried in the background and reported. */
export async function release(scope: Scope, grant: RedisGrant): Promise<void> {
  if (grant.released) return;
  grant.released = true;
  scope.track(grant.queue, -1);
  grant.upgrade?.abort(releasedWhileUpgrading({ backend: BACKEND }));
  try {
    await scope.link.run(RELEASE, [scope.keys.prefix, ...releaseArgs(scope, grant)]);
  } catch (error) {
    void freeOrEnd(scope, `releasing ${grant.kind} "${grant.name}"`, RELEASE, releaseArgs(scope, grant));
    throw error;
  }
}

/** Upgrades (waits, ahead of every queued waiter) or downgrades (never waits) a lock grant. */
export async function convert(scope: Scope, grant: RedisGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
  if (grant.released) throw notHeld({ backend: BACKEND });
  if (grant.mode === mode) return;
  if (signal.aborted) throw signal.reason;
  const what = `${mode === "shared" ? "downgrading" : "upgrading"} lock "${grant.name}"`;
  const controller = new AbortController();
  const { signal: stop, dispose } = linked([signal, controller.signal, scope.ended]);
  const box: Mailbox | null = mode === "exclusive" ? scope.wakeups.open(grant.entry) : null;
  if (box) grant.upgrade = controller;
  let reply: Reply | undefined;
  try {
    reply = (await runRetrying(scope, what, CONVERT, [grant.queue, grant.entry, code(mode)], stop)) as Reply;
    for (;;) {
      switch (reply[0]) {
        case "done":
          // Not replicated in time: the catch below turns the upgrade back.
          if (mode === "exclusive") await replicated(scope, what);
          grant.mode = mode;
          grant.token = BigInt(reply[1] as string);
          return;
        case "deadlock":
          throw upgradeDeadlock({ backend: BACKEND });
        case "missing":
          throw lost(grant);
        case "waiting": {
          const wake = await box!.next(recheckDelay(Number(reply[1]), scope.ttlMs), watchSignal(stop), scope.ended);
          if (wake.type === "message" && wake.kind === "u") {
            reply = ["done", String(wake.token)];
            continue;
          }
          reply = (await runRetrying(scope, what, CONVERT, [grant.queue, grant.entry, "x"], stop)) as Reply;
          continue;
        }
        default:
          throw new InvalidStateError(`unexpected answer from Redis while ${what}: ${String(reply[0])}`, {
            backend: BACKEND,
          });
      }
    }
  } catch (error) {
    if (box && !grant.released && grant.mode === "shared" && reply?.[0] !== "deadlock") {
      // Give the upgrade back (the grant stays shared).
      const removal = freeOrEnd(scope, `withdrawing the upgrade of lock "${grant.name}"`, CANCEL_UPGRADE, [
        grant.queue,
        grant.entry,
      ]);
      if (!scope.ended.aborted) await atMost(removal, scope.requestTimeoutMs);
    }
    if (controller.signal.aborted) throw controller.signal.reason;
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    box?.dispose();
    dispose();
    if (grant.upgrade === controller) grant.upgrade = null;
  }
}

function vanished(scope: Scope, why: string): SessionExpiredError {
  const error = new SessionExpiredError(why, { backend: BACKEND });
  scope.lost(error);
  return error;
}

function lost(grant: RedisGrant): LockLostError {
  const error = new LockLostError(`lock "${grant.name}" is gone from Redis: the session's key expired`, {
    backend: BACKEND,
  });
  grant.onLost(error);
  return error;
}
