/**
 * Records (group members, election leaders) and their watches. MySQL has no LISTEN/NOTIFY,
 * so a watch reads its space again every {@link POLL_MS} on the control connection and
 * pushes the difference: the backend declares `pushEvents: false`. One reader per space
 * per coordinator, however many watches share it.
 *
 * @module
 */
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { Control } from "./control.js";
import { nameHash } from "./schema.js";

/** How often a watched space is read again. */
export const POLL_MS = 100;

interface RecordRow {
  rname: string;
  value: string;
  session_id: string;
  created_at: string | number;
}

/** The live records of `space` (of sessions whose lease has not run out), oldest first. */
export async function listRecords(
  control: Control,
  prefix: string,
  namespace: string,
  space: string,
): Promise<RecordEntry[]> {
  const rows = await control.query<RecordRow>(
    `SELECT r.rname, r.value, r.session_id, r.created_at FROM ${prefix}records r
     JOIN ${prefix}sessions s ON s.id = r.session_id AND s.expires_at >= ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000)
     WHERE r.sp = ? ORDER BY r.created_at, r.rname`,
    [nameHash(namespace, space)],
  );
  return rows.map((row) => ({
    key: row.rname,
    value: row.value,
    sessionId: row.session_id,
    createdAt: Number(row.created_at),
  }));
}

interface SpaceReader {
  readonly listeners: Set<(event: RecordEvent) => void>;
  known: Map<string, RecordEntry>;
  timer: NodeJS.Timeout | null;
}

/** Watches of record spaces by polling, shared per space. */
export class RecordWatches {
  readonly #control: Control;
  readonly #prefix: string;
  readonly #namespace: string;
  readonly #spaces = new Map<string, SpaceReader>();

  constructor(control: Control, prefix: string, namespace: string) {
    this.#control = control;
    this.#prefix = prefix;
    this.#namespace = namespace;
  }

  /** Starts pushing `space`'s changes to `listener`; resolves with the records now. */
  async watch(space: string, listener: (event: RecordEvent) => void, signal: AbortSignal): Promise<RecordEntry[]> {
    let reader = this.#spaces.get(space);
    if (!reader) {
      reader = { listeners: new Set(), known: new Map(), timer: null };
      this.#spaces.set(space, reader);
      const entries = await listRecords(this.#control, this.#prefix, this.#namespace, space);
      reader.known = new Map(entries.map((e) => [e.key, e]));
      this.#schedule(space, reader);
    }
    if (signal.aborted) return [...reader.known.values()];
    const current = reader;
    current.listeners.add(listener);
    signal.addEventListener(
      "abort",
      () => {
        current.listeners.delete(listener);
        if (current.listeners.size === 0 && this.#spaces.get(space) === current) {
          if (current.timer) clearTimeout(current.timer);
          this.#spaces.delete(space);
        }
      },
      { once: true },
    );
    // Every listener starts from the reader's state, so the first event follows it without a gap.
    return [...current.known.values()];
  }

  /** Stops every watch. */
  close(): void {
    for (const reader of this.#spaces.values()) if (reader.timer) clearTimeout(reader.timer);
    this.#spaces.clear();
  }

  #schedule(space: string, reader: SpaceReader): void {
    reader.timer = setTimeout(() => void this.#poll(space, reader), POLL_MS);
    reader.timer.unref();
  }

  async #poll(space: string, reader: SpaceReader): Promise<void> {
    if (this.#spaces.get(space) !== reader) return;
    try {
      const entries = await listRecords(this.#control, this.#prefix, this.#namespace, space);
      const next = new Map(entries.map((e) => [e.key, e]));
      const events: RecordEvent[] = [];
      for (const key of reader.known.keys()) if (!next.has(key)) events.push({ type: "delete", key });
      for (const entry of entries) {
        const old = reader.known.get(entry.key);
        if (!old || old.value !== entry.value || old.sessionId !== entry.sessionId) {
          events.push({ type: "put", entry });
        }
      }
      reader.known = next;
      for (const event of events) for (const listener of [...reader.listeners]) listener(event);
    } catch {
      // The control connection is down: the next poll reads again (and reconnects).
    }
    if (this.#spaces.get(space) === reader) this.#schedule(space, reader);
  }
}
