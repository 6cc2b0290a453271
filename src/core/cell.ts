/**
 * Cells: durable, versioned JSON values with compare-and-set, native on each backend (see
 * `DriverCells` in driver.ts). The replacement for most write locks: a state change such as
 * `available -> attaching` succeeds for exactly one of many concurrent workers, the others
 * get a {@link ConflictError} naming the state they lost to.
 *
 * @module
 */
import { onAbort } from "./abortable.js";
import type { CoordinatorCore } from "./core.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "./driver.js";
import { ConflictError, FencedError, InvalidArgumentError, UnsupportedError } from "./errors.js";
import { canonicalJson } from "./json-value.js";
import { EventStream } from "./stream.js";
import { checkOptions, checkSignal, describe } from "./validate.js";

/** Largest cell value, in UTF-8 bytes of its JSON text. */
export const MAX_CELL_VALUE_BYTES = 65_536;

/** The driver space cells live in; other durable records use spaces of their own. @internal */
export const CELL_SPACE = "cell";
const SPACE = CELL_SPACE;

/** A cell's value and the version of the write that stored it. */
export interface CellState<T = unknown> {
  readonly value: T;
  /** Strictly increases with every write to this cell, across delete and re-create. */
  readonly version: bigint;
}

/** Options of {@link Cell.set}. */
export interface CellSetOptions {
  /**
   * Write only if the cell's current version is this one (`0n`/`0`: only if the cell does
   * not exist). Otherwise rejects with {@link ConflictError} and writes nothing.
   */
  ifVersion?: bigint | number | undefined;
  /**
   * A lock's fencing token (`handle.token`). Refused with {@link FencedError} if the cell
   * has already seen a higher one, so a writer whose lock was taken over cannot overwrite
   * its successor's state. The cell remembers the highest fence, even across delete.
   */
  fence?: bigint | number | undefined;
}

/** Options of {@link Cell.transition}. */
export interface CellTransitionOptions {
  /** As for {@link CellSetOptions.fence}. */
  fence?: bigint | number | undefined;
}

/** Options of {@link Cell.delete}. */
export interface CellDeleteOptions {
  /** Delete only if the cell's current version is this one (>= 1). */
  ifVersion?: bigint | number | undefined;
  /** As for {@link CellSetOptions.fence}. */
  fence?: bigint | number | undefined;
}

/** A change seen by {@link Cell.watch}. */
export type CellChange<T = unknown> =
  | { readonly type: "set"; readonly value: T; readonly version: bigint }
  | { readonly type: "delete"; readonly version: bigint };

/** Options of {@link Cell.watch}. */
export interface CellWatchOptions {
  /** Ends the iteration. */
  signal?: AbortSignal | undefined;
}

/**
 * A named cell (no I/O until used). Its name is its own family: a cell and a lock of one
 * name never interfere. Values are JSON (plain objects, arrays, strings, finite numbers,
 * booleans, null) up to {@link MAX_CELL_VALUE_BYTES}; objects are compared by content, not
 * key order. Every write is atomic and durable when it resolves; a rejection other than
 * `ConflictError`/`FencedError`/`InvalidArgumentError` (e.g. `BackendUnavailableError`)
 * means the write may or may not have happened: read the cell to find out. Calls take no
 * signal: each is one short round trip, bounded by the backend's request timeout.
 */
export class Cell<T = unknown> {
  /** The cell's name. */
  readonly name: string;
  readonly #core: CoordinatorCore;
  readonly #cells: DriverCells;

  private constructor(core: CoordinatorCore, cells: DriverCells, name: string) {
    this.#core = core;
    this.#cells = cells;
    this.name = name;
  }

  /** @internal Use `coord.cell()`. */
  static create<T>(core: CoordinatorCore, name: string): Cell<T> {
    const cells = core.driver.cells;
    if (!cells) {
      throw new UnsupportedError(`the ${core.backend} backend has no cells yet`, { backend: core.backend });
    }
    return new Cell<T>(core, cells, name);
  }

  /** The current value and version, or `null` if the cell does not exist. */
  async get(): Promise<CellState<T> | null> {
    this.#core.assertOpen();
    return toState<T>(await this.#call(() => this.#cells.get(SPACE, this.name)));
  }

  /**
   * Stores `value`, unconditionally or under `ifVersion` / `fence`, and resolves with the
   * new version. Rejects with {@link ConflictError} (carrying the current state) when
   * `ifVersion` does not match, {@link FencedError} when a higher fence was seen.
   */
  async set(value: T, options?: CellSetOptions): Promise<{ version: bigint }> {
    const checked = checkOptions("set options", options);
    const text = canonicalJson("cell value", value, MAX_CELL_VALUE_BYTES);
    const condition: CellCondition = {
      ifVersion: checkVersion("ifVersion", checked.ifVersion, 0n),
      fence: checkVersion("fence", checked.fence, 0n),
    };
    this.#core.assertOpen();
    const result = await this.#call(() => this.#cells.put(SPACE, this.name, text, condition));
    return this.#outcome(result, condition, `setting cell "${this.name}"`);
  }

  /**
   * Sets the cell to `to` only if its current value equals `from` (by content), in one
   * atomic step: of many concurrent callers of one transition, exactly one succeeds. The
   * others, and any caller when the cell is absent or holds another value, get a
   * {@link ConflictError} whose `current` is the state they found.
   */
  async transition(from: T, to: T, options?: CellTransitionOptions): Promise<{ version: bigint }> {
    const checked = checkOptions("transition options", options);
    const fromText = canonicalJson("transition's from value", from, MAX_CELL_VALUE_BYTES);
    const toText = canonicalJson("transition's to value", to, MAX_CELL_VALUE_BYTES);
    const condition: CellCondition = { ifValue: fromText, fence: checkVersion("fence", checked.fence, 0n) };
    this.#core.assertOpen();
    const result = await this.#call(() => this.#cells.put(SPACE, this.name, toText, condition));
    return this.#outcome(result, condition, `transition of cell "${this.name}" from ${fromText}`);
  }

  /**
   * Deletes the cell. Resolves `{ deleted: false }` when it did not exist (and no
   * `ifVersion` was given). The version keeps increasing: a re-created cell's version is
   * higher than any it had before.
   */
  async delete(options?: CellDeleteOptions): Promise<{ deleted: boolean; version: bigint | null }> {
    const checked = checkOptions("delete options", options);
    const condition: CellCondition = {
      ifVersion: checkVersion("ifVersion", checked.ifVersion, 1n),
      fence: checkVersion("fence", checked.fence, 0n),
    };
    this.#core.assertOpen();
    const result = await this.#call(() => this.#cells.delete(SPACE, this.name, condition));
    const { version } = this.#outcome(result, condition, `deleting cell "${this.name}"`);
    return version === 0n ? { deleted: false, version: null } : { deleted: true, version };
  }

  /**
   * The cell's changes: first its current state (a `set`, if it exists), then every
   * committed change in increasing version order. Never yields a version twice or out of
   * order. After a gap (a reconnect, an etcd compaction, or writes faster than the file
   * backend's re-read) intermediate versions may be skipped, but the latest state is always
   * delivered. Ends on `return()`/`break`, when `signal` aborts or the coordinator closes;
   * a backend failure ends it with that error.
   */
  watch(options?: CellWatchOptions): AsyncIterableIterator<CellChange<T>> {
    const { signal } = checkOptions("watch options", options);
    const userSignal = checkSignal("signal", signal);
    this.#core.assertOpen();
    const stop = new AbortController();
    const stream = new EventStream<CellChange<T>>(() => stop.abort());
    const end = () => stream.end();
    for (const s of [userSignal, this.#core.closedSignal]) if (s) onAbort(s, end, stop.signal);
    // Ended before it began (an aborted signal): attach nothing that could outlive it.
    if (stop.signal.aborted) return stream;
    let last = 0n;
    let started = false;
    const early: CellEntry[] = [];
    const emit = (entry: CellEntry | null) => {
      if (!entry || entry.version <= last) return;
      last = entry.version;
      stream.push(
        entry.value === null
          ? { type: "delete", version: entry.version }
          : { type: "set", value: JSON.parse(entry.value) as T, version: entry.version },
      );
    };
    this.#cells
      .watch(SPACE, this.name, (entry) => (started ? emit(entry) : early.push(entry)), stop.signal)
      .then((initial) => {
        started = true;
        // A tombstone is no state to report: the watch starts with the next write.
        if (initial?.value === null) last = initial.version;
        else emit(initial);
        for (const entry of early.splice(0)) emit(entry);
      })
      .catch((error: unknown) => stream.end(stop.signal.aborted ? undefined : this.#core.translate(error)));
    return stream;
  }

  async #call<R>(fn: () => Promise<R>): Promise<R> {
    try {
      return await fn();
    } catch (error) {
      throw this.#core.translate(error);
    }
  }

  #outcome(result: CellWriteResult, condition: CellCondition, what: string): { version: bigint } {
    if (result.ok) return { version: result.version };
    const current = toState(result.current);
    const found = current ? `version ${current.version} holding ${result.current?.value}` : "no cell";
    const backend = this.#core.backend;
    if (result.reason === "fenced") {
      const seen = result.current?.fence ?? 0n;
      return fail(
        new FencedError(
          `${what} was refused: its fence ${condition.fence} is lower than the fence ${seen} the cell has already seen (a later lock holder wrote)`,
          condition.fence ?? 0n,
          seen,
          current,
          { backend },
        ),
      );
    }
    const expected =
      condition.ifVersion === undefined
        ? ""
        : condition.ifVersion === 0n
          ? " (expected no cell)"
          : ` (expected version ${condition.ifVersion})`;
    return fail(new ConflictError(`${what} conflicted${expected}: found ${found}`, current, { backend }));
  }
}

function fail(error: Error): never {
  throw error;
}

function toState<T>(entry: CellEntry | null): CellState<T> | null {
  if (!entry || entry.value === null) return null;
  return { value: JSON.parse(entry.value) as T, version: entry.version };
}

const MAX_VERSION = 2n ** 63n - 1n;

/** Checks a version or fence: a bigint or safe integer from `min` to 2^63-1, or omitted. */
export function checkVersion(what: string, value: unknown, min: bigint): bigint | undefined {
  if (value === undefined) return undefined;
  let version: bigint | undefined;
  if (typeof value === "bigint") version = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) version = BigInt(value);
  if (version === undefined || version < min || version > MAX_VERSION) {
    throw new InvalidArgumentError(
      `${what} must be an integer (bigint or safe integer) from ${min} to 2^63-1, got ${describe(value)}`,
    );
  }
  return version;
}
