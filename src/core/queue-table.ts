import { abortable, type CancelWatch, watchSignal } from "./abortable.js";
import type { LockMode } from "./driver.js";
import { decide, decideUpgrade, type RuleEntry, type RuleQueue } from "./grant-rule.js";
import { limitMismatch, notHeld, releasedWhileUpgrading, upgradeDeadlock } from "./refusals.js";

/**
 * A holder in a {@link QueueTable}. `token` is set by the table's token source at every
 * grant and upgrade.
 */
export interface QueueEntry<M> {
  readonly key: string;
  mode: LockMode;
  token: bigint;
  readonly meta: M;
  /** Epoch ms when it was granted (or started waiting, while it waits). */
  since: number;
}

interface Waiter<M> {
  readonly entry: QueueEntry<M>;
  readonly resolve: (entry: QueueEntry<M>) => void;
  readonly reject: (error: unknown) => void;
  /** The request's `granted` hook, run in the grant's own step. */
  readonly granted: ((entry: QueueEntry<M>) => void) | undefined;
  /** Detaches from the request's cancellation; `null` once settled or cancelled. */
  detach: (() => void) | null;
}

/** What a request may be cancelled by: `cancel` when given, else `signal` (read only then). */
interface Cancellable {
  readonly signal: AbortSignal;
  readonly cancel?: CancelWatch | undefined;
}

interface Upgrade<M> {
  readonly entry: QueueEntry<M>;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface Queue<M> {
  // Not readonly: an idle queue is kept as the table's spare and reused for another key.
  key: string;
  limit: number;
  readonly holders: Set<QueueEntry<M>>;
  readonly waiters: Waiter<M>[];
  upgrading: Upgrade<M> | null;
}

/** Snapshot of one queue of a {@link QueueTable}. */
export interface QueueTableSnapshot<M> {
  readonly key: string;
  readonly limit: number;
  readonly holders: readonly QueueEntry<M>[];
  readonly waiters: readonly QueueEntry<M>[];
}

/**
 * In-process FIFO queues of lock requests, granted by the rule of `grant-rule.ts` (each
 * queue is shown to it as its holders, in grant order, then its waiters): the whole memory
 * backend, and the reference the other backends are checked against. Everything happens
 * synchronously; promises settle on the next microtask.
 */
export class QueueTable<M> {
  readonly #queues = new Map<string, Queue<M>>();
  /**
   * The last queue that went idle, emptied, for the next name that needs one: a lock taken
   * and released in a loop would otherwise make and drop a queue, a Set and an array per
   * cycle. Only one is kept, so memory does not grow with the names ever used.
   */
  #spare: Queue<M> | null = null;
  /**
   * The last queue that went idle, still under its key: a lock taken and released in a
   * loop then finds its queue where it left it (no map insert and delete per cycle). Only
   * one, dropped (to the spare) when another goes idle; it is not a queue of snapshot().
   */
  #idle: Queue<M> | null = null;
  readonly #nextToken: (key: string) => bigint;

  /** @param nextToken called at every grant and upgrade; must strictly increase per key. */
  constructor(nextToken: (key: string) => bigint) {
    this.#nextToken = nextToken;
  }

  /**
   * Asks for `key`. Resolves with the entry once granted; resolves `null` at once when
   * `wait` is false and it is not free; rejects with the cancellation's reason when
   * `cancel` (else `signal`) aborts first, after withdrawing the request. The caller checks
   * cancellation before calling; `cancel` and `signal` are read only if the request has to
   * wait. `granted` runs in the grant's own synchronous step (before anything else can
   * happen to the queue), then the promise resolves.
   */
  acquire(
    key: string,
    request: {
      mode: LockMode;
      limit: number;
      wait: boolean;
      meta: M;
      granted?: ((entry: QueueEntry<M>) => void) | undefined;
    } & Cancellable,
  ): Promise<QueueEntry<M> | null> {
    const now = this.grantNow(key, request);
    if (now) {
      if (request.granted) hook(request.granted, now);
      return Promise.resolve(now);
    }
    const queue = this.#queue(key, request.limit);
    if (!request.wait) {
      this.#dropIfIdle(queue);
      return Promise.resolve(null);
    }
    // Read only when waiting: callers may build the signal lazily for the fast path.
    const cancel = request.cancel ?? watchSignal(request.signal);
    if (cancel.aborted) {
      this.#dropIfIdle(queue);
      return Promise.reject(cancel.reason);
    }
    const entry: QueueEntry<M> = { key, mode: request.mode, token: 0n, meta: request.meta, since: Date.now() };
    return new Promise<QueueEntry<M>>((resolve, reject) => {
      const waiter: Waiter<M> = { entry, resolve, reject, granted: request.granted, detach: null };
      queue.waiters.push(waiter);
      waiter.detach = cancel.onAbort(() => {
        waiter.detach = null;
        // Still queued only when cancelled: a grant or a removal took it out first.
        const index = queue.waiters.indexOf(waiter);
        if (index < 0) return;
        queue.waiters.splice(index, 1);
        // The head waiter leaving may let the ones behind it in.
        this.#process(queue);
        reject(cancel.reason);
      });
    });
  }

  /**
   * Grants `key` synchronously if the rule grants it at once (what {@link acquire} does
   * first); else `null`, leaving no trace. Throws `InvalidArgumentError` on a limit mismatch.
   */
  grantNow(key: string, request: { mode: LockMode; limit: number; meta: M }): QueueEntry<M> | null {
    const queue = this.#queue(key, request.limit);
    if (queue.holders.size === 0 && queue.waiters.length === 0 && !queue.upgrading) {
      // An empty queue grants any request (the rule's own first case): no view to build.
      const entry: QueueEntry<M> = { key, mode: request.mode, token: 0n, meta: request.meta, since: 0 };
      this.#grant(queue, entry);
      return entry;
    }
    if (request.mode === "exclusive" && request.limit === queue.limit) {
      // The rule's verdict without a view: an exclusive request after `limit` or more
      // entries (of the same limit, so no mismatch) waits. The queue is not idle.
      if (queue.holders.size + queue.waiters.length >= request.limit) return null;
    }
    // The request is its own rule entry (mode and limit): no copy per call.
    const view = this.#view(queue, request);
    const verdict = decide(view, view.entries.length - 1);
    if (verdict.type === "mismatch") throw limitMismatch(request.limit, verdict.limit);
    if (verdict.type !== "grant") {
      this.#dropIfIdle(queue);
      return null;
    }
    const entry: QueueEntry<M> = { key, mode: request.mode, token: 0n, meta: request.meta, since: 0 };
    this.#grant(queue, entry);
    return entry;
  }

  /** Frees a held entry and grants whoever may go next. No-op if not held. */
  release(entry: QueueEntry<M>): boolean {
    const queue = this.#queues.get(entry.key);
    if (!queue?.holders.delete(entry)) return false;
    if (queue.upgrading?.entry === entry) {
      const upgrade = queue.upgrading;
      queue.upgrading = null;
      upgrade.reject(releasedWhileUpgrading());
    }
    // Nobody waits: nothing to grant, so no view to build.
    if (queue.waiters.length === 0 && !queue.upgrading) this.#dropIfIdle(queue);
    else this.#process(queue);
    return true;
  }

  /**
   * Upgrades a shared holder to exclusive (waits for the other shared holders, ahead of
   * every waiter; a concurrent second upgrade gets {@link DeadlockError}) or downgrades an
   * exclusive holder to shared (never waits). Cancellation leaves the entry as it was.
   */
  convert(entry: QueueEntry<M>, mode: LockMode, signal: AbortSignal): Promise<void> {
    const queue = this.#queues.get(entry.key);
    if (!queue?.holders.has(entry)) return Promise.reject(notHeld());
    if (entry.mode === mode) return Promise.resolve();
    if (mode === "shared") {
      entry.mode = "shared";
      this.#process(queue);
      return Promise.resolve();
    }
    const verdict = decideUpgrade(this.#view(queue), [...queue.holders].indexOf(entry));
    if (verdict.type === "deadlock") return Promise.reject(upgradeDeadlock());
    if (signal.aborted) return Promise.reject(signal.reason);
    if (verdict.type === "grant") {
      this.#upgradeNow(entry);
      return Promise.resolve();
    }
    return abortable<void>(signal, (resolve, reject) => {
      const upgrade: Upgrade<M> = { entry, resolve, reject };
      queue.upgrading = upgrade;
      return () => {
        if (queue.upgrading !== upgrade) return;
        queue.upgrading = null;
        this.#process(queue);
      };
    });
  }

  /**
   * Removes every holder and waiter whose meta matches (a session that ended): waiters are
   * rejected with `error`, holders are dropped, then queues are re-granted.
   */
  removeWhere(match: (meta: M) => boolean, error: Error): void {
    for (const queue of [...this.#queues.values()]) {
      let changed = false;
      for (const entry of [...queue.holders]) {
        if (!match(entry.meta)) continue;
        queue.holders.delete(entry);
        changed = true;
        if (queue.upgrading?.entry === entry) {
          const upgrade = queue.upgrading;
          queue.upgrading = null;
          upgrade.reject(error);
        }
      }
      for (const waiter of [...queue.waiters]) {
        if (!match(waiter.entry.meta)) continue;
        queue.waiters.splice(queue.waiters.indexOf(waiter), 1);
        waiter.detach?.();
        waiter.detach = null;
        waiter.reject(error);
        changed = true;
      }
      if (changed) this.#process(queue);
    }
  }

  /** The holders of `key`, in grant order (none when it is idle or unknown). */
  holders(key: string): ReadonlySet<QueueEntry<M>> | undefined {
    return this.#queues.get(key)?.holders;
  }

  /** Every holder of every queue. */
  *allHolders(): Generator<QueueEntry<M>> {
    for (const queue of this.#queues.values()) yield* queue.holders;
  }

  /** Every non-idle queue, holders and waiters in order. */
  snapshot(): QueueTableSnapshot<M>[] {
    return [...this.#queues.values()]
      .filter((q) => q !== this.#idle)
      .map((q) => ({
        key: q.key,
        limit: q.limit,
        holders: [...q.holders],
        waiters: q.waiters.map((w) => w.entry),
      }));
  }

  #queue(key: string, limit: number): Queue<M> {
    let queue = this.#queues.get(key);
    if (queue === this.#idle && queue) {
      // In use again: it takes this request's limit, as a new queue would.
      this.#idle = null;
      queue.limit = limit;
    }
    if (!queue) {
      queue = this.#spare ?? { key, limit, holders: new Set(), waiters: [], upgrading: null };
      this.#spare = null;
      queue.key = key;
      queue.limit = limit;
      this.#queues.set(key, queue);
    }
    return queue;
  }

  /**
   * The queue as the rule sees it: holders in grant order, then waiters, then `extra`. A
   * pending upgrade started before every current waiter (they all wait behind it).
   */
  #view(queue: Queue<M>, extra?: RuleEntry): RuleQueue {
    const entries: RuleEntry[] = [];
    let upgrader = -1;
    for (const holder of queue.holders) {
      if (queue.upgrading?.entry === holder) upgrader = entries.length;
      entries.push({ mode: holder.mode, limit: queue.limit });
    }
    for (const waiter of queue.waiters) entries.push({ mode: waiter.entry.mode, limit: queue.limit });
    if (extra) entries.push(extra);
    return queue.upgrading ? { entries, upgrades: [{ holder: upgrader, before: queue.holders.size }] } : { entries };
  }

  #grant(queue: Queue<M>, entry: QueueEntry<M>): void {
    entry.token = this.#nextToken(queue.key);
    entry.since = Date.now();
    queue.holders.add(entry);
  }

  #upgradeNow(entry: QueueEntry<M>): void {
    entry.mode = "exclusive";
    entry.token = this.#nextToken(entry.key);
  }

  #process(queue: Queue<M>): void {
    const upgrade = queue.upgrading;
    if (upgrade) {
      const index = [...queue.holders].indexOf(upgrade.entry);
      if (decideUpgrade(this.#view(queue), index).type !== "grant") return;
      queue.upgrading = null;
      this.#upgradeNow(upgrade.entry);
      upgrade.resolve();
      return;
    }
    const first = queue.waiters[0];
    if (first && queue.limit === 1 && first.entry.mode === "exclusive") {
      // A lock's exclusive head waiter, the rule's verdict without a view: granted when
      // nobody holds, and then it is the only grant (everyone behind it waits for it).
      if (queue.holders.size > 0) return;
      queue.waiters.shift();
      this.#grant(queue, first.entry);
      this.#settle(first);
      return;
    }
    // Granting the head waiter makes it the newest holder: the view's order stays right.
    const view = this.#view(queue);
    for (let index = queue.holders.size; ; index++) {
      const head = queue.waiters[0];
      if (!head || decide(view, index).type !== "grant") break;
      queue.waiters.shift();
      this.#grant(queue, head.entry);
      this.#settle(head);
    }
    this.#dropIfIdle(queue);
  }

  /** A granted waiter: detached from its cancellation, told in the grant's step, resolved. */
  #settle(waiter: Waiter<M>): void {
    waiter.detach?.();
    waiter.detach = null;
    if (waiter.granted) hook(waiter.granted, waiter.entry);
    waiter.resolve(waiter.entry);
  }

  #dropIfIdle(queue: Queue<M>): void {
    if (queue.holders.size === 0 && queue.waiters.length === 0 && !queue.upgrading) {
      // A stale reference (a queue already dropped, maybe reused) must not drop another's.
      if (this.#queues.get(queue.key) !== queue || this.#idle === queue) return;
      const previous = this.#idle;
      this.#idle = queue;
      if (previous) {
        this.#queues.delete(previous.key);
        this.#spare = previous;
      }
    }
  }
}

/** Runs a request's `granted` hook; one that throws cannot break the queue (its error is rethrown asynchronously). */
function hook<M>(granted: (entry: QueueEntry<M>) => void, entry: QueueEntry<M>): void {
  try {
    granted(entry);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}
