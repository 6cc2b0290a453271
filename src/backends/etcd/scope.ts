/**
 * What the queue and record operations of one session share, and the retry and cleanup
 * rules they all follow.
 *
 * @module
 */
import type { Etcd3, IRequestOp } from "etcd3";
import { SessionExpiredError } from "../../core/errors.js";
import { op, raceSignal, sleep } from "./client.js";
import { isTransient, translate } from "./errors.js";
import type { Keyspace } from "./keys.js";
import type { WatchRegistry } from "./watch.js";

// Lives in core; re-exported for the etcd modules that import it from here.
export { linked } from "../../core/abortable.js";

export interface Scope {
  readonly client: Etcd3;
  readonly keys: Keyspace;
  /** The lease id, in decimal as etcd3 wants it. */
  readonly leaseId: string;
  /** The lease id in hex: the session id, and the start of every queue key it writes. */
  readonly sessionId: string;
  readonly memberId: string;
  readonly ttlMs: number;
  readonly requestTimeoutMs: number;
  readonly watches: WatchRegistry;
  /** Aborts when the session ends (closed, or found lost). */
  readonly ended: AbortSignal;
  /** Aborts when the driver closes (the last step of a coordinator's close()). */
  readonly closing: AbortSignal;
  /**
   * Reports that the lease is gone, or that ending the session is the only way left to
   * free a key: the core then aborts every signal of the session and closes it.
   */
  lost(error: Error): void;
}

/** First delay before retrying a transient failure. */
export const FIRST_RETRY_DELAY_MS = 50;

/**
 * The delay after `delay`: doubling up to a quarter second, so that a caller is back
 * within that long of the cluster's recovery (a new leader, a healed network).
 */
export function nextDelay(delay: number): number {
  return Math.min(250, delay * 2);
}

/**
 * Runs `attempt` until it succeeds, retrying transient failures (with backoff: 50 ms
 * doubling to 250 ms) for as long as `signal` allows. Rejects with `signal.reason` once it
 * aborts, with a `SessionExpiredError` (after telling the session) when the lease is gone,
 * and with the translated error for anything else.
 */
export async function retrying<T>(
  scope: Scope,
  what: string,
  attempt: () => Promise<T>,
  signal: AbortSignal,
): Promise<T> {
  let delay = FIRST_RETRY_DELAY_MS;
  for (;;) {
    try {
      return await raceSignal(attempt(), signal);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const translated = translate(error, what);
      if (translated instanceof SessionExpiredError) {
        scope.lost(translated);
        throw translated;
      }
      if (!isTransient(error)) throw translated;
      await sleep(delay, signal);
      delay = nextDelay(delay);
    }
  }
}

/**
 * Deletes keys this session wrote and must not leave behind (an abandoned waiter, an
 * upgrade marker), after `inflight` (a write that may still create them) settled. Retries
 * for up to one TTL; if etcd still refuses, ends the session, whose lease takes the keys
 * with it. When `inflight` failed its outcome is unknown (etcd may apply it late), so the
 * keys are deleted once more a request timeout later. `also`: conditional deletions
 * (a takeover record `inflight` may have put) sent in the same transaction.
 */
export async function removeKeys(
  scope: Scope,
  keys: readonly string[],
  inflight?: Promise<unknown>,
  also: readonly IRequestOp[] = [],
): Promise<void> {
  let ambiguous = false;
  if (inflight) await inflight.catch(() => (ambiguous = true));
  await deleteOrEnd(scope, keys, also);
  if (ambiguous && !scope.ended.aborted) {
    setTimeout(() => void deleteOrEnd(scope, keys, also), scope.requestTimeoutMs).unref();
  }
}

function deleteOrEnd(scope: Scope, keys: readonly string[], also: readonly IRequestOp[]): Promise<void> {
  return persistOrEnd(scope, "removing an abandoned queue key", () =>
    also.length === 0
      ? Promise.all(keys.map((key) => scope.client.kv.deleteRange({ key: Buffer.from(key) })))
      : scope.client.kv.txn({ compare: [], success: [...keys.map((key) => op.del(key)), ...also], failure: [] }),
  );
}

/**
 * Fences off an attempt to create `key` whose outcome is unknown: one transaction puts
 * `fence` (which that attempt required to be absent) and deletes `key`. Whenever etcd
 * applies the attempt, before this transaction (then the key is deleted) or after it
 * (then the attempt fails), the key does not outlive the fence. Retries like `removeKeys`;
 * `also` as there (the attempt's takeover record, deleted with its key).
 */
export function fenceOff(scope: Scope, fence: string, key: string, also: readonly IRequestOp[] = []): Promise<void> {
  return persistOrEnd(scope, "fencing off an abandoned queue key", () =>
    scope.client.kv.txn({
      compare: [],
      success: [op.put(fence, Buffer.alloc(0), scope.leaseId), op.del(key), ...also],
      failure: [],
    }),
  );
}

/** Retries `action` for up to one TTL; if etcd still refuses, ends the session. */
async function persistOrEnd(scope: Scope, what: string, action: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + scope.ttlMs;
  let delay = FIRST_RETRY_DELAY_MS;
  for (;;) {
    if (scope.ended.aborted) return; // the lease is revoked or expiring: it takes the keys
    try {
      await action();
      return;
    } catch (error) {
      if (Date.now() + delay > deadline || !isTransient(error)) {
        scope.lost(translate(error, `${what}; ending the session to free it`));
        return;
      }
      await sleep(delay);
      delay = nextDelay(delay);
    }
  }
}
