/**
 * Records (group members, election values) as ephemeral nodes under `r/<space>/`, and
 * watching a space with no gap: the children watch and one watch per record are re-armed
 * by every read, each read is compared with what was last reported, and the differences
 * are pushed. A change made while a watch was being re-armed is seen by that read.
 *
 * @module
 */
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { ZkHandle } from "./client.js";
import { decodeSegment, type Layout } from "./paths.js";
import { ensurePath, retrying } from "./scope.js";

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

/**
 * Pushes the changes of one space to `listener` until `signal` aborts. Resolves with the
 * records present when the watch began.
 */
export async function watchRecords(
  handle: ZkHandle,
  layout: Layout,
  chroot: string,
  space: string,
  listener: (event: RecordEvent) => void,
  signal: AbortSignal,
): Promise<RecordEntry[]> {
  const parent = layout.recordSpace(space);
  const known = new Map<string, RecordEntry>();
  /** What was last reported of each node: which node (czxid) and its version. */
  const seen = new Map<string, { czxid: bigint; version: number }>();
  /** Children whose data watch is armed and has not fired. */
  const watched = new Set<string>();
  // Set before a watch is sent, cleared by its event: the event may run before the answer's
  // continuation does.
  let childArmed = false;
  // The children are listed again only when they changed: a changed record alone is read
  // at once, before a quick delete can take it.
  let childrenDirty = true;
  let lastChildren: string[] = [];
  const listChildren = () => {
    if (childArmed) return handle.children(parent);
    childArmed = true;
    return handle
      .children(parent, () => {
        childArmed = false;
        childrenDirty = true;
        schedule();
      })
      .catch((error: unknown) => {
        childArmed = false;
        throw error;
      });
  };
  let running: Promise<void> | null = null;
  let again = false;

  const sync = async (emit: boolean): Promise<void> => {
    if (signal.aborted) return;
    if (childrenDirty || !childArmed) {
      childrenDirty = false;
      let listed = await retrying(handle, `watching ${space}`, listChildren, signal);
      if (!listed) {
        // The space's container is gone (it was emptied): make it again and watch that.
        childArmed = false;
        await ensurePath(handle, chroot, parent, signal);
        listed = await retrying(handle, `watching ${space}`, listChildren, signal);
      }
      lastChildren = listed?.children ?? [];
    }
    const present = new Set(lastChildren);
    // Every new or changed record is read (and watched) at once, in one round trip: a
    // record that lives only a few round trips must be read before it goes.
    const fresh = [...present].filter((child) => !watched.has(child));
    for (const child of fresh) watched.add(child);
    const reads = await Promise.all(
      fresh.map((child) =>
        retrying(
          handle,
          `watching ${space}`,
          () =>
            handle.get(`${parent}/${child}`, () => {
              watched.delete(child);
              schedule();
            }),
          signal,
        ),
      ),
    ).catch((error: unknown) => {
      for (const child of fresh) watched.delete(child);
      throw error;
    });
    for (const [i, child] of fresh.entries()) {
      const read = reads[i] ?? null;
      const key = decodeSegment(child);
      const entry = read ? decodeRecord(key, read.data) : null;
      if (!read || !entry) {
        if (!read) watched.delete(child); // gone: no watch was set
        present.delete(child);
        continue;
      }
      const last = seen.get(key);
      const from = last && last.czxid === read.stat.czxid ? last.version : -1;
      seen.set(key, { czxid: read.stat.czxid, version: read.stat.version });
      known.set(key, entry);
      if (!emit) continue;
      // Every value since the last one reported, so quick successive updates are not merged.
      for (const value of valuesSince(read.data, read.stat.version, from)) {
        listener({ type: "put", entry: { ...entry, value } });
      }
    }
    for (const key of [...known.keys()]) {
      const child = [...present].find((c) => decodeSegment(c) === key);
      if (child !== undefined) continue;
      known.delete(key);
      seen.delete(key);
      if (emit) listener({ type: "delete", key });
    }
  };

  const schedule = () => {
    if (signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await sync(true);
        } catch {
          // Retried at the next event; a broken handle ends the driver's watches.
          if (!signal.aborted) setTimeout(schedule, 100).unref();
        }
      } while (again && !signal.aborted);
      running = null;
    })();
  };

  await ensurePath(handle, chroot, parent, signal);
  // Events during the first read are folded into a second one, which reports them.
  running = sync(false);
  try {
    await running;
  } finally {
    running = null;
  }
  if (again) schedule();
  return [...known.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
}
