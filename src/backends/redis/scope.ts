/**
 * What the operations of one session share, and the retry rule they follow.
 *
 * @module
 */
import { sleep as abortableSleep } from "../../core/abortable.js";
import { SessionExpiredError } from "../../core/errors.js";
import { isTransient, translate } from "./errors.js";
import type { Keyspace } from "./keys.js";
import type { Link } from "./link.js";
import type { Script } from "./lua.js";
import type { Wakeups } from "./wakeups.js";

export interface Scope {
  readonly link: Link;
  readonly keys: Keyspace;
  readonly sessionId: string;
  readonly memberId: string;
  readonly ttlMs: number;
  readonly requestTimeoutMs: number;
  /** Replicas a grant must reach before it is returned (`WAIT`); 0: do not wait. */
  readonly replicas: number;
  readonly wakeups: Wakeups;
  /** Aborts when the session ends (closed, or found lost). */
  readonly ended: AbortSignal;
  /** Reports that the session is gone, or that ending it is the only way left to free something. */
  lost(error: Error): void;
  /** Counts the session's entries in `queue` (+1 before queueing, -1 when freed), for close(). */
  track(queue: string, delta: 1 | -1): void;
}

/**
 * Runs `script` until it answers, retrying transient failures (every script is idempotent)
 * with a growing pause, until `signal` aborts: then rejects with its reason.
 */
export async function runRetrying(
  scope: Scope,
  what: string,
  script: Script,
  args: readonly string[],
  signal: AbortSignal,
): Promise<unknown> {
  let delay = 25;
  for (;;) {
    if (signal.aborted) throw signal.reason;
    try {
      return await scope.link.run(script, [scope.keys.prefix, ...args]);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const translated = translate(error, what);
      if (translated instanceof SessionExpiredError) {
        scope.lost(translated);
        throw translated;
      }
      if (!isTransient(error)) throw translated;
      await sleep(delay, signal);
      delay = Math.min(500, delay * 2);
    }
  }
}

/**
 * Runs a freeing script (release, withdrawal) in the background until it succeeds. If
 * Redis keeps refusing for a TTL, the session is ended so that its TTL frees what it held.
 */
export async function freeOrEnd(scope: Scope, what: string, script: Script, args: readonly string[]): Promise<void> {
  const deadline = Date.now() + scope.ttlMs;
  let delay = 25;
  for (;;) {
    if (scope.ended.aborted) return; // the session's end takes everything
    try {
      await scope.link.run(script, [scope.keys.prefix, ...args]);
      return;
    } catch (error) {
      if (Date.now() + delay > deadline || !isTransient(error)) {
        scope.lost(translate(error, `${what}; ending the session to free it`));
        return;
      }
      await sleep(delay);
      delay = Math.min(500, delay * 2);
    }
  }
}

/** `WAIT` for `scope.replicas` replicas, if asked; a grant not replicated in time is an error. */
export async function replicated(scope: Scope, what: string): Promise<void> {
  if (scope.replicas === 0) return;
  const acked = Number(
    await scope.link.command(["WAIT", String(scope.replicas), String(Math.max(1, scope.requestTimeoutMs - 100))]),
  );
  if (acked < scope.replicas) {
    throw translate(
      new Error(`only ${acked} of the ${scope.replicas} replicas asked for (option replicas) acknowledged it in time`),
      what,
    );
  }
}

/** An abortable sleep that does not keep the process alive (background retries). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return abortableSleep(ms, signal, { unref: true });
}
