/**
 * Records (group members, election values) as ephemeral nodes under `r/<space>/`: their
 * data, with the values a watcher may not have read yet, and the epitaph a record's delete
 * leaves in the space node (record-watch.ts watches a space).
 *
 * @module
 */
import type { RecordEntry } from "../../core/driver.js";
import type { ZkHandle } from "./client.js";
import { decodeSegment, type Layout } from "./paths.js";
import { retrying } from "./scope.js";

/**
 * How many earlier values a record node keeps, so that a watcher misses none of them, and
 * up to how many bytes (UTF-8, the node's whole data): the newest earlier values that fit
 * are kept, the current value always. A value is up to 64 KiB of JSON, escaped again in the
 * node's JSON (up to twice that), so sixteen of them kept whole could pass the server's
 * node limit (jute.maxbuffer, 1 MB by default) and the update would fail. A watcher
 * further behind than the kept values skips the dropped ones, never the latest.
 */
const HISTORY = 16;
const RECORD_BYTES = 512 * 1024;

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
  const c = old?.c ?? Date.now();
  // Newest first: each entry costs its JSON and a comma; none kept is `"h":[]`.
  let bytes = Buffer.byteLength(encodeRecord({ sid, c, v: value, h: [] }));
  let from = history.length;
  while (from > 0) {
    const cost = Buffer.byteLength(JSON.stringify(history[from - 1])) + (from < history.length ? 1 : 0);
    if (bytes + cost > RECORD_BYTES) break;
    bytes += cost;
    from--;
  }
  return encodeRecord({ sid, c, v: value, h: history.slice(from) });
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

/**
 * The values a node had after `seenVersion` (-1: since it was created), oldest first, as
 * far back as its history goes (earlier ones dropped past its bound are skipped); the
 * current value last.
 */
export function valuesSince(text: string, version: number, seenVersion: number): string[] {
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

/**
 * A deleted record node as its delete left it in the space node's data: which node (child
 * name and czxid), its last version and its data. A watcher that was told of a change it
 * could not read before the delete finds the values it missed there (record-watch.ts).
 */
export interface Epitaph {
  readonly child: string;
  readonly czxid: bigint;
  readonly version: number;
  readonly data: string;
}

/**
 * How many epitaphs a space node keeps, and up to how many bytes (UTF-8, as sent). The
 * newest is always kept, but without its data when it alone is past the bound: the space
 * node's set goes in one multi with the record's delete, and a request past the server's
 * limit (1 MB) drops the connection, so the leave would never land. A watcher that needed
 * that data then reports just the leave (record-watch.ts), which the docs allow.
 */
const EPITAPHS = 8;
const EPITAPH_BYTES = 128 * 1024;

/** A space node's epitaphs, oldest first; none for anything else (a space node never written). */
export function parseEpitaphs(text: string): Epitaph[] {
  let list: unknown;
  try {
    list = (JSON.parse(text) as { e?: unknown }).e;
  } catch {
    return [];
  }
  if (!Array.isArray(list)) return [];
  const out: Epitaph[] = [];
  for (const e of list as { k?: unknown; z?: unknown; n?: unknown; d?: unknown }[]) {
    if (typeof e?.k !== "string" || typeof e.z !== "string" || typeof e.n !== "number" || typeof e.d !== "string") {
      continue;
    }
    try {
      out.push({ child: e.k, czxid: BigInt(e.z), version: e.n, data: e.d });
    } catch {
      // not a zxid: not Baton's
    }
  }
  return out;
}

/** The space node's data with `epitaph` added as the newest, the oldest dropped past the bounds. */
export function withEpitaph(text: string, epitaph: Epitaph): string {
  const encode = (e: Epitaph) => ({ k: e.child, z: e.czxid.toString(), n: e.version, d: e.data });
  const kept = [...parseEpitaphs(text), epitaph].slice(-EPITAPHS).map(encode);
  const size = () => Buffer.byteLength(JSON.stringify({ e: kept }));
  while (kept.length > 1 && size() > EPITAPH_BYTES) kept.shift();
  const newest = kept[0];
  if (newest && size() > EPITAPH_BYTES) kept[0] = { ...newest, d: "" };
  return JSON.stringify({ e: kept });
}
