/**
 * Several locks taken as one: all or nothing, in one canonical order (names sorted by
 * UTF-16 code units), so that two callers asking for `[a, b]` and `[b, a]` queue in the
 * same order and can never deadlock each other (Curator's InterProcessMultiLock).
 *
 * @module
 */
import type { CoordinatorCore } from "./core.js";
import type { LockMode } from "./driver.js";
import { InvalidArgumentError, TimeoutError } from "./errors.js";
import { Lock, type LockHandle, type ReleaseResult } from "./lock.js";
import { checkDuration, checkMode, checkName, checkOptions, checkSignal, describe } from "./validate.js";

/** Most names one multi-lock may take. */
export const MAX_MULTI_LOCK_NAMES = 1000;

/** Options of `coord.locks()`. */
export interface MultiLockOptions {
  /** `"exclusive"` (default) or `"shared"`, for every name. */
  mode?: LockMode | undefined;
  /**
   * Gives up after this many milliseconds in all (not per name) with a `TimeoutError`;
   * whatever was already taken is released first. Omitted: wait until granted or cancelled.
   */
  timeoutMs?: number | undefined;
  /** Cancels the wait with an `AbortError`; whatever was already taken is released first. */
  signal?: AbortSignal | undefined;
}

/**
 * Locks held together. `release()` releases all of them (never throws); `signal` aborts
 * as soon as any one of them is lost, with that lock's `LockLostError`.
 */
export class MultiLockHandle implements AsyncDisposable {
  /** The names, in the order they were acquired (sorted). */
  readonly names: readonly string[];
  readonly #handles: readonly LockHandle[];
  readonly #signal: AbortSignal;

  /** @internal */
  constructor(handles: readonly LockHandle[]) {
    this.#handles = handles;
    this.names = handles.map((h) => h.name);
    this.#signal = AbortSignal.any(handles.map((h) => h.signal));
  }

  /** The fencing token of each name (use each with the resource that name guards). */
  get tokens(): ReadonlyMap<string, bigint> {
    return new Map(this.#handles.map((h) => [h.name, h.token]));
  }

  /** The fencing token of `name`; `InvalidArgumentError` if it is not one of the names. */
  token(name: string): bigint {
    const handle = this.#handles.find((h) => h.name === name);
    if (!handle) throw new InvalidArgumentError(`${describe(name)} is not one of ${JSON.stringify(this.names)}`);
    return handle.token;
  }

  /** Aborts when any of the locks is lost (reason: that lock's `LockLostError`). */
  get signal(): AbortSignal {
    return this.#signal;
  }

  /** Whether every lock is still held, as far as this client knows. */
  get held(): boolean {
    return this.#handles.every((h) => h.held);
  }

  /** Releases every lock, in reverse order. Idempotent; never throws. */
  async release(): Promise<ReleaseResult[]> {
    const results: ReleaseResult[] = [];
    for (const handle of [...this.#handles].reverse()) results.unshift(await handle.release());
    return results;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/** Acquires `names` all or nothing; see {@link MultiLockOptions}. @internal */
export async function acquireLocks(
  core: CoordinatorCore,
  names: readonly string[],
  options: MultiLockOptions | undefined,
): Promise<MultiLockHandle> {
  const checked = checkOptions("locks options", options);
  const mode = checkMode(checked.mode);
  const timeoutMs = checkDuration("timeoutMs", checked.timeoutMs);
  const signal = checkSignal("signal", checked.signal);
  const sorted = checkNames(names);
  core.assertOpen();
  const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
  const held: LockHandle[] = [];
  try {
    for (const name of sorted) {
      const left = deadline === undefined ? undefined : Math.max(0, Math.floor(deadline - performance.now()));
      try {
        held.push(await Lock.create(core, name).acquire({ mode, timeoutMs: left, signal }));
      } catch (error) {
        if (!(error instanceof TimeoutError) || timeoutMs === undefined) throw error;
        throw new TimeoutError(
          `acquiring locks ${JSON.stringify(sorted)} timed out after ${timeoutMs} ms waiting for "${name}"; nothing is held`,
          timeoutMs,
          { backend: core.backend, cause: error },
        );
      }
    }
  } catch (error) {
    for (const handle of held.reverse()) await handle.release();
    throw error;
  }
  return new MultiLockHandle(held);
}

function checkNames(names: unknown): string[] {
  if (!Array.isArray(names)) throw new InvalidArgumentError(`lock names must be an array, got ${describe(names)}`);
  if (names.length === 0 || names.length > MAX_MULTI_LOCK_NAMES) {
    throw new InvalidArgumentError(`lock names must hold 1 to ${MAX_MULTI_LOCK_NAMES} names, got ${names.length}`);
  }
  const sorted = names
    .map((name, i) => checkName(`lock name [${i}]`, name))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) {
      throw new InvalidArgumentError(`lock names must be distinct; ${JSON.stringify(sorted[i])} appears twice`);
    }
  }
  return sorted;
}
