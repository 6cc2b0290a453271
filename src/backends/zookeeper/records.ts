/**
 * Records (group members, election values) as ephemeral nodes under `r/<space>/`, and
 * watching a space with no gap: one persistent recursive watch (see `watchRecords`).
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { Stat, ZkHandle } from "./client.js";
import { decodeSegment, encodeSegment, type Layout } from "./paths.js";
import { retrying } from "./scope.js";

/** How many earlier values a record node keeps, so that a watcher misses none of them. */
const HISTORY = 16;

/** The data of a record node. */
interface RecordData {
  readonly sid: string;
  readonly c: number;
  readonly v: string;
  /** Earlier values of this node, as [node version, value], oldest first. */
  readonly h?: readonly (readonly [number, string])[];
}

/** Record node data as stored. */
export function encodeRecord(data: RecordData): string {
  return JSON.stringify(data);
}

/** The data for replacing a record node at `version` with `value`, keeping its history. */
export function nextRecord(previous: string, version: number, sid: string, value: string): string {
  const old = parseRecord(previous);
  const history = [...(old?.h ?? []), [version, old?.v ?? ""] as const].slice(-HISTORY);
  return encodeRecord({ sid, c: old?.c ?? Date.now(), v: value, h: history });
}

function parseRecord(text: string): RecordData | null {
  try {
    const data = JSON.parse(text) as RecordData;
    return typeof data.v === "string" && typeof data.sid === "string" ? data : null;
  } catch {
    return null;
  }
}

/** A record node as a `RecordEntry`; `null` for anything Baton did not write. */
export function decodeRecord(key: string, text: string): RecordEntry | null {
  const data = parseRecord(text);
  return data ? { key, value: data.v, sessionId: data.sid, createdAt: data.c } : null;
}

/** The values a node had after `seenVersion` (-1: since it was created), oldest first. */
function valuesSince(text: string, version: number, seenVersion: number): string[] {
  const data = parseRecord(text);
  if (!data) return [];
  const earlier = (data.h ?? []).filter(([v]) => v > seenVersion).map(([, value]) => value);
  return version > seenVersion ? [...earlier, data.v] : [];
}

/** Every record of `space`, sorted by key. */
export async function listRecords(
  handle: ZkHandle,
  layout: Layout,
  space: string,
  signal: AbortSignal,
): Promise<RecordEntry[]> {
  const parent = layout.recordSpace(space);
  const listed = await retrying(handle, `listing ${space}`, () => handle.children(parent), signal);
  if (!listed) return [];
  const reads = await Promise.all(
    listed.children.map((child) =>
      retrying(handle, `reading ${space}`, () => handle.get(`${parent}/${child}`), signal).then((read) =>
        read ? decodeRecord(decodeSegment(child), read.data) : null,
      ),
    ),
  );
  return reads.filter((e): e is RecordEntry => e !== null).sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** Event types of a watch. */
const DELETED = 2;

/**
 * Pushes the changes of one space to `listener` until `signal` aborts. Resolves with the
 * records present when the watch began.
 *
 * One persistent recursive watch on the space reports every create, delete and change in
 * order, so nothing slips between two reads (one-shot watches must be re-armed by a read,
 * and a record deleted and made again before that read looked merely changed). A delete
 * is reported at once; a create or change is read, and the read counts only if no later
 * event of that record came before its answer (the package may run an answer's callback
 * after an event that arrived behind it in the same packet). After a reconnection the
 * space is read again in full and the differences are reported.
 */
export async function watchRecords(
  handle: ZkHandle,
  layout: Layout,
  space: string,
  listener: (event: RecordEvent) => void,
  signal: AbortSignal,
): Promise<RecordEntry[]> {
  const parent = layout.recordSpace(space);
  const known = new Map<string, RecordEntry>();
  /** What was last reported of each node: which node (czxid) and its version. */
  const seen = new Map<string, { czxid: bigint; version: number }>();
  /** Per child: bumped by each of its events, so that older reads are dropped. */
  const generation = new Map<string, number>();
  let emitting = false;
  const bump = (child: string) => {
    const next = (generation.get(child) ?? 0) + 1;
    generation.set(child, next);
    return next;
  };

  const forget = (key: string) => {
    seen.delete(key);
    if (known.delete(key) && emitting) listener({ type: "delete", key });
  };

  /** Applies a read of `child`, if nothing newer came since it was sent. */
  const apply = (child: string, sentAt: number, read: { stat: Stat; data: string } | null) => {
    if (generation.get(child) !== sentAt || signal.aborted) return;
    const key = decodeSegment(child);
    const entry = read ? decodeRecord(key, read.data) : null;
    if (!read || !entry) return forget(key);
    const last = seen.get(key);
    const from = last && last.czxid === read.stat.czxid ? last.version : -1;
    if (last && last.czxid !== read.stat.czxid) forget(key); // replaced by a new node
    seen.set(key, { czxid: read.stat.czxid, version: read.stat.version });
    known.set(key, entry);
    if (!emitting) return;
    // Every value since the last one reported, so quick successive updates are not merged.
    for (const value of valuesSince(read.data, read.stat.version, from)) {
      listener({ type: "put", entry: { ...entry, value } });
    }
  };

  const read = (child: string): Promise<void> => {
    const sentAt = bump(child);
    return handle.get(`${parent}/${child}`).then(
      (result) => apply(child, sentAt, result),
      () => {
        // A lost connection: the reset after reconnecting reads everything again.
      },
    );
  };

  /** Reads the whole space; reports what differs from what was known. */
  const readAll = async (): Promise<void> => {
    const listed = await retrying(handle, `watching ${space}`, () => handle.children(parent), signal);
    const children = listed?.children ?? [];
    const present = new Set(children.map(decodeSegment));
    for (const key of [...known.keys()]) {
      if (!present.has(key)) {
        bump(encodeChild(children, key));
        forget(key);
      }
    }
    await Promise.all(children.map(read));
  };

  const unwatch = await handle.watchBelow(parent, {
    event(type, path) {
      const child = path.slice(parent.length + 1);
      if (child === "" || child.includes("/") || signal.aborted) return;
      if (type === DELETED) {
        bump(child);
        forget(decodeSegment(child));
      } else {
        void read(child);
      }
    },
    reset() {
      if (!signal.aborted) readAll().catch(() => {});
    },
  });
  onAbort(signal, unwatch);
  try {
    await readAll();
  } catch (error) {
    unwatch();
    throw error;
  }
  emitting = true;
  return [...known.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** The child name of `key`: as listed if it is there, else as Baton encodes keys. */
function encodeChild(children: readonly string[], key: string): string {
  return children.find((c) => decodeSegment(c) === key) ?? encodeSegment(key);
}
