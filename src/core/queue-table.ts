import { DeadlockError, InvalidArgumentError, InvalidStateError } from "./errors.js";
import type { LockMode } from "./driver.js";

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
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

interface Upgrade<M> {
  readonly entry: QueueEntry<M>;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

interface Queue<M> {
  readonly key: string;
  readonly limit: number;
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
 * In-process FIFO queues of lock requests: the granting rules every Baton lock follows,
 * written once. Used as the whole memory backend, and by the file backend to arbitrate
 * between the coordinators of one process before it touches the kernel's locks.
 *
 * Rules: a request is granted when it is compatible with the current holders and nobody
 * queued before it is still waiting (FIFO, so writers are not starved by readers). Shared
 * requests are compatible with shared holders; exclusive ones need fewer than `limit`
 * holders and no shared holder (`limit` > 1 makes a semaphore). A pending upgrade goes
 * ahead of every waiter; a second concurrent upgrade on one queue is a deadlock.
 * Everything happens synchronously; promises settle on the next microtask.
 */
export class QueueTable<M> {
  readonly #queues = new Map<string, Queue<M>>();
  readonly #nextToken: (key: string) => bigint;

  /** @param nextToken called at every grant and upgrade; must strictly increase per key. */
  constructor(nextToken: (key: string) => bigint) {
    this.#nextToken = nextToken;
  }

  /**
   * Asks for `key`. Resolves with the entry once granted; resolves `null` at once when
   * `wait` is false and it is not free; rejects with `signal.reason` when `signal` aborts
   * first, after withdrawing the request. The caller checks cancellation before calling;
   * `signal` is read only if the request has to wait.
   */
  acquire(
    key: string,
    request: { mode: LockMode; limit: number; wait: boolean; signal: AbortSignal; meta: M },
  ): Promise<QueueEntry<M> | null> {
    const granted = this.grantNow(key, request);
    if (granted) return Promise.resolve(granted);
    const queue = this.#queue(key, request.limit);
    const entry: QueueEntry<M> = { key, mode: request.mode, token: 0n, meta: request.meta, since: Date.now() };
    if (!request.wait) {
      this.#dropIfIdle(queue);
      return Promise.resolve(null);
    }
    // Read only when waiting: callers may build the signal lazily for the fast path.
    const { signal } = request;
    if (signal.aborted) {
      this.#dropIfIdle(queue);
      return Promise.reject(signal.reason);
    }
    return new Promise<QueueEntry<M>>((resolve, reject) => {
      const onAbort = () => {
        const index = queue.waiters.indexOf(waiter);
        if (index >= 0) queue.waiters.splice(index, 1);
        reject(signal.reason);
        // The head waiter leaving may let the ones behind it in.
        this.#process(queue);
      };
      const waiter: Waiter<M> = { entry, resolve, reject, signal, onAbort };
      signal.addEventListener("abort", onAbort, { once: true });
      queue.waiters.push(waiter);
    });
  }

  /**
   * Grants `key` synchronously if {@link acquire} would grant it at once; else `null`,
   * leaving no trace. Throws `InvalidArgumentError` on a limit mismatch, as `acquire` does.
   */
  grantNow(key: string, request: { mode: LockMode; limit: number; meta: M }): QueueEntry<M> | null {
    const queue = this.#queue(key, request.limit);
    if (queue.waiters.length === 0 && this.#compatible(queue, request.mode)) {
      const entry: QueueEntry<M> = { key, mode: request.mode, token: 0n, meta: request.meta, since: 0 };
      this.#grant(queue, entry);
      return entry;
    }
    this.#dropIfIdle(queue);
    return null;
  }

  /** Frees a held entry and grants whoever may go next. No-op if not held. */
  release(entry: QueueEntry<M>): boolean {
    const queue = this.#queues.get(entry.key);
    if (!queue?.holders.delete(entry)) return false;
    if (queue.upgrading?.entry === entry) {
      const upgrade = queue.upgrading;
      queue.upgrading = null;
      upgrade.signal.removeEventListener("abort", upgrade.onAbort);
      upgrade.reject(new InvalidStateError("the lock was released while its upgrade was pending"));
    }
    this.#process(queue);
    return true;
  }

  /** Whether `entry` is currently held. */
  holds(entry: QueueEntry<M>): boolean {
    return this.#queues.get(entry.key)?.holders.has(entry) ?? false;
  }

  /**
   * Upgrades a shared holder to exclusive (waits for the other shared holders, ahead of
   * every waiter; a concurrent second upgrade gets {@link DeadlockError}) or downgrades an
   * exclusive holder to shared (never waits). Cancellation leaves the entry as it was.
   */
  convert(entry: QueueEntry<M>, mode: LockMode, signal: AbortSignal): Promise<void> {
    const queue = this.#queues.get(entry.key);
    if (!queue?.holders.has(entry)) return Promise.reject(new InvalidStateError("the lock is not held"));
    if (entry.mode === mode) return Promise.resolve();
    if (mode === "shared") {
      entry.mode = "shared";
      this.#process(queue);
      return Promise.resolve();
    }
    if (queue.upgrading) {
      return Promise.reject(
        new DeadlockError(
          "another shared holder of this lock is already upgrading; both would wait for each other forever. Release the shared lock and acquire it exclusively instead",
        ),
      );
    }
    if (signal.aborted) return Promise.reject(signal.reason);
    if (queue.holders.size === 1) {
      this.#upgradeNow(entry);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        if (queue.upgrading !== upgrade) return;
        queue.upgrading = null;
        reject(signal.reason);
        this.#process(queue);
      };
      const upgrade: Upgrade<M> = { entry, resolve, reject, signal, onAbort };
      signal.addEventListener("abort", onAbort, { once: true });
      queue.upgrading = upgrade;
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
          upgrade.signal.removeEventListener("abort", upgrade.onAbort);
          upgrade.reject(error);
        }
      }
      for (const waiter of [...queue.waiters]) {
        if (!match(waiter.entry.meta)) continue;
        queue.waiters.splice(queue.waiters.indexOf(waiter), 1);
        waiter.signal.removeEventListener("abort", waiter.onAbort);
        waiter.reject(error);
        changed = true;
      }
      if (changed) this.#process(queue);
    }
  }

  /** Every non-idle queue, holders and waiters in order. */
  snapshot(): QueueTableSnapshot<M>[] {
    return [...this.#queues.values()].map((q) => ({
      key: q.key,
      limit: q.limit,
      holders: [...q.holders],
      waiters: q.waiters.map((w) => w.entry),
    }));
  }

  #queue(key: string, limit: number): Queue<M> {
    let queue = this.#queues.get(key);
    if (!queue) {
      queue = { key, limit, holders: new Set(), waiters: [], upgrading: null };
      this.#queues.set(key, queue);
    } else if (queue.limit !== limit) {
      throw new InvalidArgumentError(
        `limit ${limit} does not match the limit ${queue.limit} its current holders and waiters use; every user of one semaphore must give the same limit`,
      );
    }
    return queue;
  }

  #compatible(queue: Queue<M>, mode: LockMode): boolean {
    if (queue.upgrading) return false;
    let shared = 0;
    for (const holder of queue.holders) if (holder.mode === "shared") shared++;
    if (mode === "shared") return shared === queue.holders.size;
    return shared === 0 && queue.holders.size < queue.limit;
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
      if (queue.holders.size !== 1) return;
      queue.upgrading = null;
      upgrade.signal.removeEventListener("abort", upgrade.onAbort);
      this.#upgradeNow(upgrade.entry);
      upgrade.resolve();
      return;
    }
    for (;;) {
      const head = queue.waiters[0];
      if (!head || !this.#compatible(queue, head.entry.mode)) break;
      queue.waiters.shift();
      head.signal.removeEventListener("abort", head.onAbort);
      this.#grant(queue, head.entry);
      head.resolve(head.entry);
    }
    this.#dropIfIdle(queue);
  }

  #dropIfIdle(queue: Queue<M>): void {
    if (queue.holders.size === 0 && queue.waiters.length === 0 && !queue.upgrading) {
      this.#queues.delete(queue.key);
    }
  }
}
