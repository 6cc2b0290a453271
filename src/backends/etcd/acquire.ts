/**
 * Joining a queue and waiting in it, as etcd's `concurrency.Mutex` does: the key is put
 * bound to the session's lease, the queue is ordered by create revision, and a waiter
 * watches only the key it waits on (exclusive: the key just before it; shared: the last
 * older exclusive key and the upgrade marker), so a release wakes one waiter, not all.
 * Semaphore waiters watch the queue's deletions: any release moves every one of them up.
 *
 * Every grant is recorded by a transaction that also checks the waiter's own key still
 * exists with its create revision (Jepsen found etcd 3.4.3 locks granted after the lease
 * expired without that check), and its revision is the fencing token. One exception, the
 * handoff (handoff.ts): an exclusive waiter whose only older key was the one it watched is
 * granted by that key's deletion event, with the deletion's revision as its token, and
 * records the grant after returning it: one round trip less per handoff.
 *
 * @module
 */
import { abortable, atMost, raceSignal, sleep } from "../../core/abortable.js";
import { randomBytes } from "node:crypto";
import type { ICompare, IRequestOp, IResponseOp, ITxnRequest, ITxnResponse } from "etcd3";
import type { AcquireRequest } from "../../core/driver.js";
import { SessionExpiredError } from "../../core/errors.js";
import { limitMismatch } from "../../core/refusals.js";
import { op, when } from "./client.js";
import { BACKEND, isTransient, translate } from "./errors.js";
import { EtcdGrant } from "./grant.js";
import { handoffRevision, recordHandoff } from "./handoff.js";
import { encodeQueueValue, modeCode, type QueueKeys } from "./keys.js";
import { type Decision, decide, type EtcdEntry, type QueueView, relevantToShared, tokenOf, viewOf } from "./queue.js";
import { FIRST_RETRY_DELAY_MS, fenceOff, linked, nextDelay, removeKeys, retrying, type Scope } from "./scope.js";
import {
  dropOwnRecordOp,
  putRecordOp,
  readRecordOps,
  recordFound,
  recordOutcome,
  type RecordWrite,
  recordWrite,
} from "./takeover.js";
import { KeyWatch, type WatchedEvent, type WatchTarget } from "./watch.js";

type WaitDecision = Extract<Decision, { type: "wait" }>;

const isDelete = (event: WatchedEvent) => event.type === "delete";

/** More older exclusive keys than this and a shared waiter re-reads instead of comparing each. */
const MAX_COMPARED_BLOCKERS = 64;

/**
 * Asks for `request` in the session's queue. Resolves with the grant, `null` when
 * `request.wait` is false and it is not free, or rejects with `request.signal.reason`
 * after withdrawing the key.
 */
export async function acquire(scope: Scope, request: AcquireRequest): Promise<EtcdGrant | null> {
  const { signal } = request;
  if (signal.aborted) throw signal.reason;
  const queue = scope.keys.queue(request.kind, request.name);
  const stop = linked([signal, scope.ended]);
  const attempt = new Attempt(scope, request, queue, stop.signal);
  try {
    return await attempt.run();
  } catch (error) {
    // Withdraw the key. Waiting for etcd is pointless when the session is ending (its
    // lease takes the key), and at most a request timeout otherwise.
    const removal = attempt.withdraw();
    if (!scope.ended.aborted) await atMost(removal, scope.requestTimeoutMs);
    // A coordinator's close waits for this to end (core.ts), so it must not wait for the close.
    if (signal.aborted) throw signal.reason;
    if (error instanceof Busy) return null;
    throw error;
  } finally {
    stop.dispose();
  }
}

class Attempt {
  readonly #scope: Scope;
  readonly #request: AcquireRequest;
  readonly #queue: QueueKeys;
  /** Our queue key: a new one after each join whose outcome was unknown. */
  #key: string;
  readonly #signal: AbortSignal;
  /** The last write sent after joining, which may still be applied after an abort. */
  inflight: Promise<unknown> | undefined;
  /** The join sent and not answered: it may create `key` (and its record) whenever etcd gets it. */
  #unknown: { fence: string; key: string; record: RecordWrite | null } | null = null;
  /**
   * The takeover record the last grant transaction sent would put (takeover.ts): if that
   * transaction lands after the attempt gave up, the withdrawal deletes this record with
   * the key, as the grant was never handed out.
   */
  #sentRecord: RecordWrite | null = null;
  /** Fencing off `#unknown`, while it lasts. */
  #fencing: Promise<void> | null = null;

  constructor(scope: Scope, request: AcquireRequest, queue: QueueKeys, signal: AbortSignal) {
    this.#scope = scope;
    this.#request = request;
    this.#queue = queue;
    this.#key = this.#newKey();
    this.#signal = signal;
  }

  async run(): Promise<EtcdGrant | null> {
    const { kind, mode, wait } = this.#request;
    // An exclusive try never has to queue: it is granted only if the queue is empty.
    const tryOnly = !wait && kind !== "semaphore" && mode === "exclusive";
    const first = await this.#join(tryOnly);
    if (first.succeeded) {
      const revision = BigInt(first.header.revision);
      return this.#grant(revision, revision, first.responses[1]);
    }
    if (tryOnly) return null;
    return this.#loop(viewOf(first, 1, 2));
  }

  /**
   * Deletes what this attempt may have put in the queue (after `acquire` failed or was
   * cancelled), fencing off a join whose outcome is unknown.
   */
  withdraw(): Promise<void> {
    if (this.#fencing) return this.#fencing;
    if (this.#unknown) {
      const { fence, key, record } = this.#unknown;
      return fenceOff(this.#scope, fence, key, record ? [dropOwnRecordOp(record)] : []);
    }
    return removeKeys(
      this.#scope,
      [this.#key],
      this.inflight,
      this.#sentRecord ? [dropOwnRecordOp(this.#sentRecord)] : [],
    );
  }

  /**
   * Puts our key in the queue; if nobody is in it, the key is created already granted (one
   * transaction when uncontended). Otherwise the same transaction reads the queue, so the
   * decision that follows sees exactly the queue this key joined.
   *
   * A join that got no answer may still be applied by etcd at any later time: a member cut
   * off silently gets the request when the network heals, long after we gave up on it,
   * retried and perhaps released the lock; the key it creates then would be a waiter
   * nobody ever removes, and the queue would stall behind it. So each join requires a
   * fresh fence key to be absent, and before trying again with a new key the lost one is
   * fenced off (`fenceOff`: the fence put and the key deleted in one transaction), which
   * makes any later application of it fail.
   */
  async #join(tryOnly: boolean): Promise<ITxnResponse> {
    const { client, keys, leaseId, sessionId } = this.#scope;
    const what = `acquiring ${this.#request.kind} "${this.#request.name}"`;
    for (let delay = FIRST_RETRY_DELAY_MS; ; delay = nextDelay(delay)) {
      const fence = keys.fence(sessionId);
      const key = this.#key;
      // A tracked grant's record, put by the join that grants it (takeover.ts).
      const record = this.#newRecord();
      const join: ITxnRequest = {
        compare: [when.empty(this.#queue.prefix)],
        success: [op.put(key, this.#value(false), leaseId), ...(record ? [putRecordOp(record)] : [])],
        failure: tryOnly
          ? []
          : [op.put(key, this.#value(true), leaseId), op.scan(this.#queue.prefix), op.get(this.#queue.marker)],
      };
      this.#unknown = { fence, key, record };
      try {
        const sent = client.kv.txn({ compare: [when.absent(fence)], success: [{ request_txn: join }], failure: [] });
        const response = await raceSignal(sent, this.#signal);
        this.#unknown = null;
        const nested = response.responses[0]?.response_txn as ITxnResponse | undefined;
        if (!response.succeeded || !nested) throw new Error(`etcd found the new fence ${fence} already there`);
        return { ...nested, header: response.header };
      } catch (error) {
        if (this.#signal.aborted) throw this.#signal.reason;
        const translated = translate(error, what);
        if (translated instanceof SessionExpiredError) {
          this.#scope.lost(translated);
          throw translated;
        }
        if (!isTransient(error)) throw translated;
        this.#fencing = fenceOff(this.#scope, fence, key, record ? [dropOwnRecordOp(record)] : []);
        await raceSignal(this.#fencing, this.#signal);
        this.#fencing = null;
        this.#unknown = null;
        this.#key = this.#newKey();
        await sleep(delay, this.#signal);
      }
    }
  }

  /** The takeover record a grant transaction sent now would put, for a tracked request. */
  #newRecord(): RecordWrite | null {
    const { record, name } = this.#request;
    this.#sentRecord = record === undefined ? null : recordWrite(this.#scope.keys, name, record);
    return this.#sentRecord;
  }

  #newKey(): string {
    return `${this.#queue.prefix}${this.#scope.sessionId}-${randomBytes(6).toString("hex")}`;
  }

  async #loop(initial: QueueView): Promise<EtcdGrant | null> {
    const { kind, mode, limit } = this.#request;
    let view = initial;
    for (;;) {
      const decision = decide(view, this.#key, kind, mode, limit);
      switch (decision.type) {
        case "missing":
          throw this.#vanished();
        case "mismatch":
          throw limitMismatch(limit, decision.limit, { backend: BACKEND });
        case "held":
          return this.#heldAlready(decision.me);
        case "grant": {
          const outcome = await this.#record(decision.me, this.#conditions(decision.me, []));
          if (outcome instanceof EtcdGrant) return outcome;
          view = outcome;
          continue;
        }
        case "wait": {
          if (!this.#request.wait) throw new Busy();
          const next = await this.#waitStep(decision);
          if (typeof next === "bigint") return this.#handedOff(decision.me, next);
          if (!Array.isArray(next)) {
            view = next;
            continue;
          }
          const outcome = await this.#record(decision.me, next);
          if (outcome instanceof EtcdGrant) return outcome;
          view = outcome;
        }
      }
    }
  }

  /**
   * Waits for the change that may grant us, and returns the conditions under which we are
   * granted (tried at once, in the recording transaction), a fresh view to decide on, or,
   * for a handoff (handoff.ts), the revision of the deletion that granted us.
   *
   * The watch starts at the server's current revision, so etcd serves it from the start
   * (one started at the view's revision, once anything was written since, is caught up only
   * every 100 ms: the handoff tail of issue 17). Once etcd has created it, the queue is read
   * again: what happened between the view and the watch shows in that read, everything
   * after it in the watch.
   */
  async #waitStep(decision: Extract<Decision, { type: "wait" }>): Promise<ICompare[] | QueueView | bigint> {
    const { kind, mode, limit } = this.#request;
    const signal = this.#signal;
    signal.throwIfAborted();
    let targets: WatchTarget[];
    // The only older key, which an exclusive waiter second in the queue waits on.
    let handoff: string | null = null;
    // What a later decision must share with this one for the watch to still be the right one.
    let same: (again: WaitDecision) => boolean;
    if (kind === "semaphore") {
      targets = [{ key: this.#queue.prefix, prefix: true, deletesOnly: true }];
      same = () => true;
    } else if (mode === "exclusive") {
      // The key just before ours; once it goes we are first unless an older one is still
      // there, which the recording transaction checks.
      const predecessor = decision.earlier.at(-1)!.key;
      // Second in the queue: watch every deletion in it (the head's, and waiters behind
      // giving up: few), so that our own key's going, if it came first, shows in revision
      // order before the head's or in the same batch (see handoff.ts). Not when tracked for
      // takeover: its record must be put by a transaction of its own grant before
      // acquire() resolves (a crash just after must leave it), so it is granted by the
      // recording transaction, which puts it.
      handoff = decision.earlier.length === 1 && this.#request.record === undefined ? predecessor : null;
      targets = [
        handoff === null
          ? { key: predecessor, deletesOnly: true }
          : { key: this.#queue.prefix, prefix: true, deletesOnly: true },
      ];
      same = (again) => again.earlier.at(-1)?.key === predecessor;
    } else {
      // The last older exclusive key going or turning shared, and the upgrade marker going.
      const last = decision.blockers.at(-1)?.key;
      targets = [
        ...(last ? [{ key: last }] : []),
        ...(decision.markerBlocks ? [{ key: this.#queue.marker, deletesOnly: true }] : []),
      ];
      same = (again) => again.blockers.at(-1)?.key === last && again.markerBlocks === decision.markerBlocks;
    }
    const relevant = kind === "semaphore" || mode === "exclusive" ? isDelete : relevantToShared(this.#queue.marker);
    // Semaphores: the older keys still there, and every deletion seen since the watch began.
    let older: Set<string> | null = null;
    const deleted = new Set<string>();
    // The revision of the head's deletion, for a handoff; once woken, later events do not count.
    let deletedAt = 0n;
    let woke = false;
    let read = false;
    let current = decision;
    let settle!: (outcome: "changed" | "broken") => void;
    // Rejects with `signal.reason` when the wait is cancelled; the signal was checked above,
    // so `settle` is bound before the watch can call it.
    const outcome = abortable<"changed" | "broken">(signal, (resolve) => {
      settle = resolve;
      return undefined;
    });
    const watch = new KeyWatch(
      this.#scope.client,
      targets,
      "now",
      {
        events: (events) => {
          if (woke) return;
          if (handoff !== null) {
            const revision = handoffRevision(events, this.#key, handoff);
            if (revision === undefined) return;
            deletedAt = revision;
            woke = true;
            settle("changed");
            return;
          }
          if (kind !== "semaphore") {
            if (events.some(relevant)) settle("changed");
            return;
          }
          for (const event of events) {
            const key = event.kv.key.toString();
            deleted.add(key);
            older?.delete(key);
          }
          if (older && older.size < limit) settle("changed");
        },
        broken: () => settle("broken"),
      },
      this.#scope.watches,
    );
    try {
      const first = await Promise.race([watch.created.then(() => "created" as const), outcome]);
      if (first === "created") {
        const fresh = await this.#read();
        const again = decide(fresh, this.#key, kind, mode, limit);
        if (again.type !== "wait" || !same(again)) return fresh;
        current = again;
        read = true;
        if (kind === "semaphore") {
          older = new Set(again.earlier.map((e) => e.key).filter((key) => !deleted.has(key)));
          if (older.size < limit) settle("changed");
        }
      }
      const settled = await outcome;
      if (settled === "broken" || current.blockers.length > MAX_COMPARED_BLOCKERS) return await this.#read();
      if (handoff !== null && read && deletedAt > 0n) return deletedAt;
      return this.#conditions(current.me, current.blockers);
    } finally {
      // Ends the wait, so its abort listener goes with it.
      settle("broken");
      watch.close();
    }
  }

  /** The conditions under which `me` is granted, beyond what the view already showed. */
  #conditions(me: EtcdEntry, blockers: readonly EtcdEntry[]) {
    const conditions = [when.is(this.#key, me.createRevision)];
    if (this.#request.kind === "semaphore") return conditions;
    if (this.#request.mode === "exclusive") {
      conditions.push(when.noneBefore(this.#queue.prefix, me.createRevision));
    } else {
      conditions.push(when.absent(this.#queue.marker));
      for (const blocker of blockers) conditions.push(when.absent(blocker.key));
    }
    return conditions;
  }

  /** The handoff (handoff.ts): granted by the head's deletion at `revision`. */
  #handedOff(me: EtcdEntry, revision: bigint): EtcdGrant {
    const grant = this.#grant(me.createRevision, revision);
    recordHandoff(this.#scope, grant, this.#value(false, revision));
    return grant;
  }

  /**
   * Records the grant (and puts its takeover record, if tracked) if `conditions` hold;
   * otherwise returns a fresh view.
   */
  async #record(me: EtcdEntry, conditions: ICompare[]): Promise<EtcdGrant | QueueView> {
    const record = this.#newRecord();
    const response = await this.#txn(
      "recording a grant",
      conditions,
      [op.put(this.#key, this.#value(false), this.#scope.leaseId), ...(record ? [putRecordOp(record)] : [])],
      [op.scan(this.#queue.prefix), op.get(this.#queue.marker)],
    );
    if (!response.succeeded) return viewOf(response, 0, 1);
    const revision = BigInt(response.header.revision);
    return this.#grant(me.createRevision, revision, response.responses[1]);
  }

  /**
   * Our key is recorded granted already (a recording whose answer was lost landed). If
   * tracked, the record is read: ours (put by that recording, with our token), a live one
   * found instead, or none, which the core then writes itself.
   */
  async #heldAlready(me: EtcdEntry): Promise<EtcdGrant> {
    const grant = this.#grant(me.createRevision, tokenOf(me));
    const record = this.#sentRecord ?? this.#newRecord();
    if (!record) return grant;
    const response = await this.#txn("reading the takeover record of", [], readRecordOps(record), []);
    return Object.assign(grant, recordFound(record, response, grant.token));
  }

  async #read(): Promise<QueueView> {
    const response = await this.#txn(
      "reading a queue",
      [],
      [op.scan(this.#queue.prefix), op.get(this.#queue.marker)],
      [],
    );
    return viewOf(response, 0, 1);
  }

  #txn(what: string, compare: ICompare[], success: IRequestOp[], failure: IRequestOp[]): Promise<ITxnResponse> {
    const { client } = this.#scope;
    return retrying(
      this.#scope,
      `${what} ${this.#request.kind} "${this.#request.name}"`,
      () => {
        const sent = client.kv.txn({ compare, success, failure });
        this.inflight = sent;
        return sent;
      },
      this.#signal,
    );
  }

  #value(waiting: boolean, token?: bigint): Buffer {
    return encodeQueueValue({
      ...(token === undefined ? {} : { t: token.toString() }),
      m: modeCode(this.#request.mode),
      l: this.#request.limit,
      s: Date.now(),
      id: this.#scope.memberId,
      sid: this.#scope.sessionId,
      ...(waiting ? { w: 1 as const } : {}),
    });
  }

  /** The grant; `recorded` answers its transaction's takeover record op, if it had one. */
  #grant(createRevision: bigint, token: bigint, recorded?: IResponseOp): EtcdGrant {
    const grant = new EtcdGrant(this.#request, this.#queue, this.#key, createRevision, token, Date.now());
    if (this.#sentRecord && recorded) Object.assign(grant, recordOutcome(this.#sentRecord, recorded, token));
    return grant;
  }

  #vanished(): SessionExpiredError {
    const error = new SessionExpiredError(
      `the queue key of ${this.#request.kind} "${this.#request.name}" is gone: the session's lease expired`,
      { backend: BACKEND },
    );
    this.#scope.lost(error);
    return error;
  }
}

/** A try found the queue busy: the key is withdrawn and the caller gets `null`. */
class Busy extends Error {}
