/**
 * Cells of a memory store: a map of entries under one version counter for the whole store
 * (so versions increase per key across delete and re-create). Deleted keys keep a
 * tombstone, which holds their version and fence. Writes are synchronous, so atomic.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";

/** The cells of one store, keyed by the driver's full key (namespace, space, key). */
export class CellTable {
  readonly #entries = new Map<string, CellEntry>();
  readonly #watchers = new Map<string, Set<(entry: CellEntry) => void>>();
  #version = 0n;

  get(id: string): CellEntry | null {
    return this.#entries.get(id) ?? null;
  }

  write(id: string, key: string, value: string | null, condition: CellCondition): CellWriteResult {
    const current = this.get(id);
    const decision = decideCellWrite(current, condition, value === null);
    if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
    if (decision.action === "noop") return { ok: true, version: 0n };
    const version = this.nextVersion();
    this.restore(id, { key, value, version, fence: decision.fence });
    return { ok: true, version };
  }

  /** A fresh version, above every one given so far (a write not stored yet takes it). */
  nextVersion(): bigint {
    return ++this.#version;
  }

  /** Stores `entry` as it is: its version came from {@link nextVersion}. */
  restore(id: string, entry: CellEntry): void {
    this.#entries.set(id, entry);
    for (const listener of this.#watchers.get(id) ?? []) listener(entry);
  }

  /** Live entries whose id starts with `prefix`. */
  list(prefix: string): CellEntry[] {
    return [...this.#entries].filter(([id, e]) => id.startsWith(prefix) && e.value !== null).map(([, e]) => e);
  }

  watch(id: string, listener: (entry: CellEntry) => void): () => void {
    let set = this.#watchers.get(id);
    if (!set) this.#watchers.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#watchers.delete(id);
    };
  }
}

/** A cell's id in a store's table; `sep` cannot occur in names. */
export function cellId(namespace: string, sep: string, space: string, key: string): string {
  return `${namespace}${sep}${space}${sep}${key}`;
}

/** The `DriverCells` of one namespace over a store's table; `sep` cannot occur in names. */
export function memoryCells(table: CellTable, namespace: string, sep: string): DriverCells {
  const id = (space: string, key: string) => cellId(namespace, sep, space, key);
  return {
    async get(space, key) {
      return table.get(id(space, key));
    },
    async put(space, key, value, condition) {
      return table.write(id(space, key), key, value, condition);
    },
    async delete(space, key, condition) {
      return table.write(id(space, key), key, null, condition);
    },
    async list(space) {
      return table.list(`${namespace}${sep}${space}${sep}`);
    },
    async watch(space, key, listener, signal) {
      const stop = table.watch(id(space, key), listener);
      onAbort(signal, stop);
      return table.get(id(space, key));
    },
  };
}
