/**
 * Takeover records of a memory store. A record matters only once its holding ended without
 * a release, so the record of a live holding is plain in-process state: no cell is written
 * by the grant or deleted by the release. It becomes a cell (with the version it was given
 * at the grant, and the token as its fence) when it must outlive the holding: when the
 * holding's session ends (expired, revoked, closed) before the release, in the same
 * synchronous step that frees the lock, or when the core writes to it. Reads of the
 * takeover space see both, so `inspect()` and the core's claim find the same records as
 * with a cell per grant.
 *
 * @module
 * @internal
 */
import { onAbort } from "../../core/abortable.js";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { sealRecord } from "../../core/driver.js";
import type { QueueEntry } from "../../core/queue-table.js";
import type { CellTable } from "./cells.js";
import type { HolderMeta } from "./store.js";

/** A live holding's record, not written anywhere yet. */
interface Live {
  readonly name: string;
  readonly grant: QueueEntry<HolderMeta>;
  /** The record before {@link sealRecord}: the grant's token and time complete it. */
  readonly text: string;
  readonly version: bigint;
}

/** The live records of one store, by cell id (the lock's queue key). */
export class LiveRecords {
  readonly #cells: CellTable;
  readonly #live = new Map<string, Live>();

  constructor(cells: CellTable) {
    this.#cells = cells;
  }

  /** Whether a record that outlived its holding is there: a takeover the core must claim. */
  hasStored(id: string): boolean {
    return this.#cells.get(id)?.value != null;
  }

  /** Keeps the record of a fresh grant (no stored record is there); answers its version. */
  track(id: string, name: string, grant: QueueEntry<HolderMeta>, text: string): bigint {
    const version = this.#cells.nextVersion();
    this.#live.set(id, { name, grant, text, version });
    return version;
  }

  /** Drops the live record of a grant released cleanly; `false` if it has none. */
  untrack(id: string, grant: QueueEntry<HolderMeta>): boolean {
    if (this.#live.get(id)?.grant !== grant) return false;
    this.#live.delete(id);
    return true;
  }

  /** Stores the live records of a session that ends: its holdings end without a release. */
  storeSession(sessionId: string): void {
    for (const [id, live] of this.#live) if (live.grant.meta.sessionId === sessionId) this.#store(id);
  }

  /** The record as a cell would hold it. */
  get(id: string): CellEntry | null {
    const live = this.#live.get(id);
    return live ? entryOf(live) : this.#cells.get(id);
  }

  /** A write: decided against the record as it is, stored first if it was live. */
  write(id: string, key: string, value: string | null, condition: CellCondition): CellWriteResult {
    const live = this.#live.get(id);
    if (live && value === null && condition.forget) {
      // The holder's own delete (close, downgrade): nothing to store, no tombstone.
      const decision = decideCellWrite(entryOf(live), condition, true);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current: entryOf(live) };
      this.#live.delete(id);
      return { ok: true, version: 0n };
    }
    if (live) this.#store(id);
    return this.#cells.write(id, key, value, condition);
  }

  /** Live entries of ids starting with `prefix`, stored or not (never both: see `track`). */
  list(prefix: string): CellEntry[] {
    const entries = this.#cells.list(prefix);
    for (const [id, live] of this.#live) if (id.startsWith(prefix)) entries.push(entryOf(live));
    return entries;
  }

  /** Calls `listener` after each stored change of `id` until the returned function is called. */
  watch(id: string, listener: (entry: CellEntry) => void): () => void {
    return this.#cells.watch(id, listener);
  }

  #store(id: string): void {
    const live = this.#live.get(id) as Live;
    this.#live.delete(id);
    this.#cells.restore(id, entryOf(live));
  }
}

function entryOf(live: Live): CellEntry {
  const { grant } = live;
  return {
    key: live.name,
    value: sealRecord(live.text, grant.token, grant.since),
    version: live.version,
    fence: grant.token,
  };
}

/** The takeover space's cells over the live records; a key's cell id is `prefix` + key. */
export function recordCells(records: LiveRecords, prefix: string): DriverCells {
  const id = (key: string) => prefix + key;
  return {
    async get(_space, key) {
      return records.get(id(key));
    },
    async put(_space, key, value, condition) {
      return records.write(id(key), key, value, condition);
    },
    async delete(_space, key, condition) {
      return records.write(id(key), key, null, condition);
    },
    async list() {
      return records.list(prefix);
    },
    async watch(_space, key, listener, signal) {
      onAbort(signal, records.watch(id(key), listener));
      return records.get(id(key));
    },
  };
}
