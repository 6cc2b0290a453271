/**
 * Takeover records of a memory store. A record matters only once its holding ended without
 * a release, so the record of a live holding is plain in-process state on its grant: no cell is written
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
  /** The record before {@link sealRecord}: the grant's token and time complete it. */
  readonly text: string;
  readonly version: bigint;
}

/** A grant of the store's queue table, with its live record if it is tracked. */
type Holder = QueueEntry<HolderMeta> & { live?: Live | undefined };

/** Where the holders are (the store's queue table): a live record lives on its grant. */
export interface HolderIndex {
  holders(key: string): Iterable<QueueEntry<HolderMeta>> | undefined;
  allHolders(): Iterable<QueueEntry<HolderMeta>>;
}

/**
 * The live records of one store, each on its grant (a lock's queue key is its record's cell
 * id), so that tracking a grant costs no map insert or delete.
 */
export class LiveRecords {
  readonly #cells: CellTable;
  readonly #holders: HolderIndex;

  constructor(cells: CellTable, holders: HolderIndex) {
    this.#cells = cells;
    this.#holders = holders;
  }

  /** Whether a record that outlived its holding is there: a takeover the core must claim. */
  hasStored(id: string): boolean {
    return this.#cells.get(id)?.value != null;
  }

  /** Keeps the record of a fresh grant (no stored record is there); answers its version. */
  track(_id: string, name: string, grant: QueueEntry<HolderMeta>, text: string): bigint {
    const version = this.#cells.nextVersion();
    (grant as Holder).live = { name, text, version };
    return version;
  }

  /** Drops the live record of a grant released cleanly; `false` if it has none. */
  untrack(_id: string, grant: QueueEntry<HolderMeta>): boolean {
    const holder = grant as Holder;
    if (!holder.live) return false;
    holder.live = undefined;
    return true;
  }

  /** Stores the live records of a session that ends: its holdings end without a release. */
  storeSession(sessionId: string): void {
    for (const holder of [...this.#holders.allHolders()] as Holder[]) {
      if (holder.live && holder.meta.sessionId === sessionId) this.#store(holder as Holder & { live: Live });
    }
  }

  /** The record as a cell would hold it. */
  get(id: string): CellEntry | null {
    const holder = this.#liveOf(id);
    return holder ? entryOf(holder, holder.live) : this.#cells.get(id);
  }

  /** A write: decided against the record as it is, stored first if it was live. */
  write(id: string, key: string, value: string | null, condition: CellCondition): CellWriteResult {
    const holder = this.#liveOf(id);
    if (holder && value === null && condition.forget) {
      // The holder's own delete (close, downgrade): nothing to store, no tombstone.
      const current = entryOf(holder, holder.live);
      const decision = decideCellWrite(current, condition, true);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
      (holder as Holder).live = undefined;
      return { ok: true, version: 0n };
    }
    if (holder) this.#store(holder);
    return this.#cells.write(id, key, value, condition);
  }

  /** Live entries of ids starting with `prefix`, stored or not (never both: see `track`). */
  list(prefix: string): CellEntry[] {
    const entries = this.#cells.list(prefix);
    for (const holder of this.#holders.allHolders() as Iterable<Holder>) {
      if (holder.live && holder.key.startsWith(prefix)) entries.push(entryOf(holder, holder.live));
    }
    return entries;
  }

  /** Calls `listener` after each stored change of `id` until the returned function is called. */
  watch(id: string, listener: (entry: CellEntry) => void): () => void {
    return this.#cells.watch(id, listener);
  }

  #liveOf(id: string): (Holder & { live: Live }) | undefined {
    for (const holder of (this.#holders.holders(id) ?? []) as Iterable<Holder>) {
      if (holder.live) return holder as Holder & { live: Live };
    }
    return undefined;
  }

  #store(holder: Holder & { live: Live }): void {
    const entry = entryOf(holder, holder.live);
    (holder as Holder).live = undefined;
    this.#cells.restore(holder.key, entry);
  }
}

function entryOf(holder: Holder, live: Live): CellEntry {
  return {
    key: live.name,
    value: sealRecord(live.text, holder.token, holder.since),
    version: live.version,
    fence: holder.token,
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
