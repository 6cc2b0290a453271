/**
 * Joining a queue and waiting in it: Curator's lock recipe, with its gaps closed.
 *
 * The request creates an EPHEMERAL_SEQUENTIAL node named with a tag unique to it, and reads
 * the queue in the same round trip (ZooKeeper answers one session's requests in order, so
 * the read sees the node). A waiter watches only what it waits for: an exclusive one the
 * node just before it, a shared one the last older writer and the upgrade marker; a
 * semaphore waiter watches the children (any release moves it up). A release therefore
 * wakes one lock waiter, not all.
 *
 * Tokens: a shared holder or permit takes the zxid of a write to the queue's parent made
 * right after the read that grants it (uncontended, it goes out with the create and the
 * read, so a grant costs one round trip); an exclusive holder or leader takes the pzxid
 * of its granting read (no write), or, granted by its predecessor's deletion event alone,
 * one more than what it read before (handoff.ts). Every earlier holder's token is below
 * the zxid of that holder's deletion, which the granting read or event comes after, so
 * tokens grow with every grant and upgrade. The token is written into the node for
 * `inspect()`.
 *
 * @module
 */
import { performance } from "node:perf_hooks";
import { atMost, LazyStop, raceSignal } from "../../core/abortable.js";
import type { AcquireRequest, CellEntry, DriverGrant, LockMode, QueueKind } from "../../core/driver.js";
import { InvalidArgumentError, LockLostError, SessionExpiredError } from "../../core/errors.js";
import { limitMismatch } from "../../core/refusals.js";
import type { Stat } from "./client.js";
import { BACKEND, hasCode, isTransient, RC, translate } from "./errors.js";
import { encodeData, type NodeData, nodePrefix } from "./paths.js";
import { type Decision, decide, type QueueView, viewOf } from "./queue.js";
import { createProtected, ensurePath, findByPrefix, markContended, retrying, type Scope, withdraw } from "./scope.js";
import { awaitTurn, type OwnNode, raise, relist } from "./handoff.js";
import { FLAGS } from "./client.js";
import { Abandoned, dropEarlyRecord, type EarlyRecord, joinWithRecord, writeRecord } from "./grant-records.js";
import { nextChange, readView, withModes } from "./queue-reads.js";

/** A grant: its node, and what a conversion or release needs. */
export class ZkGrant implements DriverGrant {
  token: bigint;
  mode: LockMode;
  readonly kind: QueueKind;
  readonly limit: number;
  readonly parent: string;
  readonly path: string;
  readonly name: string;
  readonly tag: string;
  /** The lock's name (the request's): its takeover record's key. */
  readonly lockName: string;
  readonly onLost: (error: Error) => void;
  since: number;
  recordVersion?: bigint | undefined;
  previousRecord?: CellEntry | undefined;
  /**
   * The record this grant made, while unchanged: its zxid and znode version (0 written by the
   * first try, 1 at the grant: grant-records.ts, "Versions"); `null` once the core rewrote it.
   */
  recordCreated: { readonly zxid: bigint; readonly version: 0 | 1 } | null = null;
  /** The path of this grant's upgrade marker, while upgrading or upgraded. */
  marker: string | null = null;
  released = false;
  /** Aborts a pending upgrade when the grant is released. */
  upgrade: AbortController | null = null;

  constructor(request: AcquireRequest, parent: string, path: string, tag: string, token: bigint, since: number) {
    this.kind = request.kind;
    this.limit = request.limit;
    this.mode = request.mode;
    this.parent = parent;
    this.path = path;
    this.name = path.slice(parent.length + 1);
    this.tag = tag;
    this.lockName = request.name;
    this.token = token;
    this.since = since;
    this.onLost = request.onLost;
  }

  data(scope: Scope, extra: Partial<NodeData> = {}): string {
    return encodeData({ id: scope.memberId, sid: scope.sessionId, s: this.since, v: 1, ...extra });
  }
}

/**
 * Asks for `request`. Resolves with the grant, `null` when `request.wait` is false and it
 * is not free, or rejects with `request.signal.reason` after withdrawing the node.
 */
export async function acquire(scope: Scope, request: AcquireRequest): Promise<ZkGrant | null> {
  const caller = request.cancel ?? request.signal;
  if (caller.aborted) throw caller.reason;
  if (scope.ended.aborted) throw scope.ended.reason;
  const parent = scope.layout.queue(request.kind, request.name);
  const tag = scope.nextTag();
  const prefix = nodePrefix(tag, request.mode, request.limit);
  const stop = new LazyStop(() => request.signal, caller, scope.ended);
  let path: string | null = null;
  /** The record the first try wrote with the node, until a grant takes it or it is deleted. */
  const early: { record: EarlyRecord | null } = { record: null };
  try {
    const tracked = request.record !== undefined && isSole(request) ? request.record : undefined;
    const joined = await join(scope, { parent, prefix, sole: isSole(request), tracked, lockName: request.name }, stop);
    path = joined.path;
    early.record = joined.early;
    return await wait(scope, request, parent, path, tag, joined, early, stop);
  } catch (caught) {
    const error = caught instanceof Abandoned ? caught.reason : caught;
    const record = early.record;
    const removal =
      caught instanceof Abandoned
        ? caught.cleanup
        : record && path
          ? dropEarlyRecord(scope, path, record).then(() => withdraw(scope, parent, { path: path as string }))
          : withdraw(scope, parent, path ? { path } : { prefix });
    // Waiting for the server is pointless once the session is ending (it takes the node).
    if (!scope.ended.aborted) await atMost(removal, 2000);
    if (caller.aborted) throw caller.reason;
    if (error instanceof Busy) return null;
    if (scope.ended.aborted && !(error instanceof InvalidArgumentError)) throw scope.ended.reason;
    throw error;
  } finally {
    stop.dispose();
  }
}

/** An acquisition's stop (the caller's cancellation or the session's end): see {@link LazyStop}. */
export type Stop = LazyStop;

/**
 * Creates the node and reads the queue in one round trip; a tracked exclusive request
 * first tries to write its record in the same round trip (grant-records.ts, "First try").
 */
async function join(
  scope: Scope,
  queue: { parent: string; prefix: string; sole: boolean; tracked: string | undefined; lockName: string },
  stop: Stop,
): Promise<Joined> {
  const { handle } = scope;
  const { parent, prefix, sole } = queue;
  const data = encodeData({ id: scope.memberId, sid: scope.sessionId, s: Date.now(), v: 1 });
  // Skipped where this session's last try waited: a record is there, and the multi would
  // be refused (a write, with the read behind it, for nothing).
  if (queue.tracked !== undefined && !scope.contended.has(parent)) {
    const tried = await joinWithRecord(
      scope,
      { parent, prefix, data, lockName: queue.lockName, record: queue.tracked },
      stop,
    );
    if (tried) {
      const { path, listed, record } = tried;
      const view = listed ? viewOf(listed.children, listed.stat, new Map()) : null;
      const czxid = record?.zxid ?? null;
      return { path, data, czxid, view, token: listed ? soleToken(listed.stat) : null, early: record };
    }
    markContended(scope, parent, true);
  }
  let ensuring: Promise<void> | null = null;
  for (;;) {
    if (stop.aborted) throw stop.reason;
    const created = handle.createNode(`${parent}/${prefix}`, data, FLAGS.ephemeralSequential);
    const listed = handle.children(parent);
    // Sent behind the read: its zxid is the token if the read grants us (a sole holder's
    // token comes from the read itself: see soleToken).
    const stamped = sole ? null : handle.set(parent, "");
    listed.catch(() => {});
    stamped?.catch(() => {});
    try {
      const { path, czxid } = await created;
      const first = await listed.catch(() => null);
      const stamp = sole ? (first ? { mzxid: soleToken(first.stat) } : null) : await stamped?.catch(() => null);
      return {
        path,
        data,
        czxid,
        view: first ? viewOf(first.children, first.stat, new Map()) : null,
        token: first && stamp ? stamp.mzxid : null,
        early: null,
      };
    } catch (error) {
      if (hasCode(error, RC.NONODE)) {
        // The server removed the queue's empty parents (containers): made again, and the
        // create sent again right behind them, in the same round trip. A second miss
        // waits for the first remake's outcome (its error) first.
        if (ensuring) await ensuring;
        ensuring = ensurePath(handle, scope.chroot, parent, stop.signal);
        ensuring.catch(() => {});
        continue;
      }
      if (!isTransient(error)) throw translate(error, `joining ${parent}`);
      const found = await findByPrefix(scope, parent, prefix, stop.signal);
      if (found) return { path: found, data, czxid: null, view: null, token: null, early: null };
      // Not there: the create never reached a server. createProtected goes on from here.
      const path = await createProtected(scope, parent, prefix, data, stop.signal);
      return { path, data, czxid: null, view: null, token: null, early: null };
    }
  }
}

/** A joined queue node: its path and data, creation zxid (when the answer came), first read and token. */
interface Joined {
  readonly path: string;
  readonly data: string;
  readonly czxid: bigint | null;
  readonly view: QueueView | null;
  readonly token: bigint | null;
  /** The record the first try wrote with the node. */
  readonly early: EarlyRecord | null;
}

async function wait(
  scope: Scope,
  request: AcquireRequest,
  parent: string,
  path: string,
  tag: string,
  joined: Joined,
  early: { record: EarlyRecord | null },
  stop: Stop,
): Promise<ZkGrant> {
  const { kind, mode, limit } = request;
  const name = path.slice(parent.length + 1);
  const sole = isSole(request);
  const needModes = kind === "lock" && mode === "shared";
  const own: OwnNode = { path, data: joined.data, bumped: joined.czxid ?? 0n };
  const tracked = sole && request.record !== undefined;
  let waited = false;
  let view = joined.view && needModes ? await withModes(scope, parent, joined.view, stop.signal) : joined.view;
  // The stamp sent with the first read is the token only if that read alone decides.
  let stamp =
    view && view.modes.size === 0 && !(needModes && view.nodes.some((n) => n.mode === "exclusive"))
      ? joined.token
      : null;
  for (;;) {
    view ??= sole
      ? await relist(scope, parent, own, stop.signal)
      : await readView(scope, parent, needModes, stop.signal);
    const decision: Decision = view ? decide(view, name, kind, mode, limit) : { type: "missing" };
    const record = early.record;
    if (record && !(decision.type === "grant" && stamp === record.zxid)) {
      // Not granted by the read behind the first try: the record goes before anything else.
      await dropEarlyRecord(scope, path, record);
      early.record = null;
    }
    switch (decision.type) {
      case "missing":
        throw vanished(scope, request);
      case "mismatch":
        throw limitMismatch(limit, decision.limit, { backend: BACKEND });
      case "grant": {
        if (tracked) markContended(scope, parent, waited);
        if (early.record) {
          // Granted as the first try wrote it: the record is this grant's (grant-records.ts).
          if (stop.aborted) throw stop.reason; // the node and the record go together
          const { zxid, at } = early.record;
          early.record = null;
          return granted(scope, request, { parent, own, tag, czxid: joined.czxid }, zxid, stop, { zxid, at });
        }
        const token =
          stamp ??
          (sole && view
            ? soleToken(view.stat)
            : (await retrying(scope.handle, `granting ${path}`, () => scope.handle.set(parent, ""), stop.signal))
                .mzxid);
        return granted(scope, request, { parent, own, tag, czxid: joined.czxid }, token, stop);
      }
      case "wait":
        if (tracked && !waited) markContended(scope, parent, true);
        waited = true;
        if (!request.wait) throw new Busy();
        if (sole) {
          const token = await awaitTurn(scope, parent, own, view as QueueView, stop.signal);
          if (token !== null) return granted(scope, request, { parent, own, tag, czxid: joined.czxid }, token, stop);
        } else {
          await nextChange(scope, parent, decision, view as QueueView, stop.signal);
        }
        view = null;
        stamp = null;
    }
  }
}

/**
 * Makes the grant with `token`. A sole holder's node must show a zxid at least its token
 * before the token is handed out (the rule of handoff.ts, which its successor's token
 * rests on): when no write of it has done so yet (a first read that saw others come or go
 * after the create), the note is written first; otherwise it goes out unawaited, for
 * `inspect()` and, with `h`, for the waiter behind (the uncontended case needs neither: its
 * token is its creation zxid, and anyone behind it joined after its grant).
 */
async function granted(
  scope: Scope,
  request: AcquireRequest,
  node: { parent: string; own: OwnNode; tag: string; czxid: bigint | null },
  token: bigint,
  stop: Stop,
  recorded?: { zxid: bigint; at: number },
): Promise<ZkGrant> {
  const { parent, own, tag, czxid } = node;
  const sole = isSole(request);
  const grant = new ZkGrant(request, parent, own.path, tag, token, recorded?.at ?? Date.now());
  if (recorded) {
    grant.recordVersion = recorded.zxid;
    grant.recordCreated = { zxid: recorded.zxid, version: 0 };
  }
  const note = grant.data(scope, sole ? { t: token.toString(), h: 1 } : { t: token.toString() });
  let noting: Promise<Stat> | null = null;
  if (sole && own.bumped < token) {
    const write = () => scope.handle.set(own.path, note);
    noting = retrying(scope.handle, `granting ${own.path}`, write, stop.signal);
    noting.catch(() => {});
  } else if (token !== czxid) {
    // The token is already fixed; a node gone by now is seen by the guard.
    scope.handle.set(own.path, note).catch(() => {});
  }
  // A tracked grant's record (grant-records.ts), sent right behind the note: one round trip.
  const recording = request.record === undefined || recorded ? null : writeRecord(scope, grant, request.record, czxid);
  recording?.catch(() => {});
  if (recording) {
    // The multi is not cut by `stop` (writeRecord), but the acquisition is: it rejects at
    // once, and the record goes with the node once the multi is answered.
    const outcome = await raceSignal(recording, stop.signal).catch((error: unknown) => {
      throw stop.aborted ? new Abandoned(scope, grant, recording, stop.reason) : error;
    });
    if (outcome === "gone") throw vanished(scope, request);
  }
  if (noting) {
    const stat = await noting.catch((error: unknown) => {
      // Not handed out: a record written goes with the node (else the next holder would
      // fence a holding nobody was told of), unless the node is gone already (revoked,
      // expired): then it stays, the cautious side, as for any holding that ended unreleased.
      const reason = hasCode((error as { cause?: unknown }).cause, RC.NONODE) ? vanished(scope, request) : error;
      throw new Abandoned(scope, grant, Promise.resolve(), reason);
    });
    raise(own, stat);
  }
  scope.handle.trace?.({ kind: "grant", what: own.path, at: performance.now() });
  return guard(scope, grant);
}

/** Whether a grant of `request` is held by no one else at the same time (an exclusive lock, a leader). */
function isSole(request: AcquireRequest): boolean {
  return request.kind !== "semaphore" && request.mode === "exclusive";
}

/**
 * The token of a sole holder granted by a read: the zxid of the last child created or
 * deleted (pzxid) as the granting read saw it, so no write is needed. Every earlier
 * holder's token is below the zxid of its node's deletion (at most its node's mzxid, see
 * handoff.ts), and the granting read saw that deletion, so it is larger; a sole holder has
 * no one granted beside it that could get the same value.
 * Shared holders and permits can be granted by the same state, so they take a write's zxid.
 */
function soleToken(stat: Stat): bigint {
  return stat.pzxid;
}

/**
 * Watches a granted node, so that its deletion by anyone but its holder (an operator, or
 * the server expiring the session while this client still thinks it alive) is reported as
 * a loss at once. Not waited for: the grant does not take longer for it. Armed on the next
 * turn of the event loop: a holder that releases at once (a short critical section) then
 * needs no read at all, and one that holds learns of a deletion before arming from the
 * read's answer (the node is gone).
 */
export function guard(scope: Scope, grant: ZkGrant): ZkGrant {
  const arm = () => {
    if (grant.released || scope.ended.aborted) return;
    scope.handle
      .get(grant.path, (type) => {
        if (grant.released || scope.ended.aborted) return;
        if (type !== DELETED) return arm(); // our own conversion rewrote it
        grant.onLost(
          new LockLostError(`the node of ${grant.kind} "${grant.path}" was deleted while held`, { backend: BACKEND }),
        );
      })
      .then((read) => {
        if (read === null && !grant.released && !scope.ended.aborted) {
          grant.onLost(new LockLostError(`the node of ${grant.path} is gone`, { backend: BACKEND }));
        }
      })
      .catch(() => {
        // Disconnected: the session's deadline decides; reconnection re-arms server watches.
      });
  };
  setImmediate(arm);
  return grant;
}

const DELETED = 2;

function vanished(scope: Scope, request: AcquireRequest): SessionExpiredError {
  const error = new SessionExpiredError(
    `the queue node of ${request.kind} "${request.name}" is gone: the ZooKeeper session expired`,
    { backend: BACKEND },
  );
  scope.lost(error);
  return error;
}

/** A try found the queue busy: the node is withdrawn and the caller gets `null`. */
class Busy extends Error {}
