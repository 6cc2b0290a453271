/**
 * Records (group members, election leaders): fields of `r:<space>`, each naming its
 * session and counting only while that session's key exists. Every change increments the
 * space's change counter and is published with it, so a watch that subscribes, then lists
 * (getting the counter), applies exactly the changes after its snapshot.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { Keyspace } from "./keys.js";
import type { Link } from "./link.js";
import { LIST_RECORDS } from "./lua.js";
import { sleep } from "./scope.js";
import { recheckDelay } from "./wakeups.js";

interface Listing {
  readonly counter: number;
  /** When a record's session could expire next (-1: never). */
  readonly soonestMs: number;
  readonly entries: RecordEntry[];
}

export async function listRecords(link: Link, keys: Keyspace, space: string): Promise<Listing> {
  const [counter, soonest, rows] = (await link.run(LIST_RECORDS, [keys.prefix, keys.space(space)])) as [
    string,
    string,
    [string, string, string, string][],
  ];
  return {
    counter: Number(counter),
    soonestMs: Number(soonest),
    entries: rows.map(([key, value, sessionId, createdAt]) => ({
      key,
      value,
      sessionId,
      createdAt: Number(createdAt),
    })),
  };
}

interface Change {
  readonly n: number;
  readonly t: "p" | "d";
  readonly k: string;
  readonly s?: string;
  readonly c?: number;
  readonly v?: string;
}

/**
 * Subscribes to the space's channel, then lists it; changes published after the listing
 * become events. After a resubscription (messages may be lost), a gap in the counter, or
 * when a record's session could have expired (Redis announces nothing then), it lists
 * again and reports the difference as events.
 */
export async function watchRecords(
  link: Link,
  keys: Keyspace,
  space: string,
  ttlMs: number,
  listener: (event: RecordEvent) => void,
  signal: AbortSignal,
): Promise<RecordEntry[]> {
  const channel = keys.recordChannel(space);
  /** key -> the entry as last reported. */
  const known = new Map<string, RecordEntry>();
  let counter = 0;
  let syncing = true;
  let buffered: Change[] = [];
  let timer: NodeJS.Timeout | undefined;

  const report = (entry: RecordEntry) => {
    known.set(entry.key, entry);
    listener({ type: "put", entry });
  };
  const apply = (change: Change) => {
    if (change.n <= counter) return;
    if (change.n > counter + 1) {
      void resync();
      return;
    }
    counter = change.n;
    if (change.t === "d") {
      if (known.delete(change.k)) listener({ type: "delete", key: change.k });
    } else {
      report({ key: change.k, value: change.v ?? "", sessionId: change.s ?? "", createdAt: change.c ?? 0 });
    }
  };
  const onMessage = (text: string) => {
    if (signal.aborted) return;
    const change = JSON.parse(text) as Change;
    if (syncing) buffered.push(change);
    else apply(change);
  };
  const drain = () => {
    const pending = buffered;
    buffered = [];
    syncing = false;
    for (const change of pending) apply(change);
  };
  const schedule = (soonestMs: number) => {
    clearTimeout(timer);
    if (signal.aborted) return;
    timer = setTimeout(() => void resync(), recheckDelay(soonestMs, ttlMs));
    timer.unref();
  };
  const resync = async () => {
    if (signal.aborted || syncing) return;
    syncing = true;
    for (let pause = 50; !signal.aborted; pause = Math.min(1000, pause * 2)) {
      let listing: Listing;
      try {
        listing = await listRecords(link, keys, space);
      } catch {
        await sleep(pause, signal).catch(() => {});
        continue;
      }
      if (signal.aborted) return;
      const present = new Set(listing.entries.map((e) => e.key));
      for (const key of [...known.keys()]) {
        if (present.has(key)) continue;
        known.delete(key);
        listener({ type: "delete", key });
      }
      for (const entry of listing.entries) {
        const old = known.get(entry.key);
        if (
          old &&
          old.value === entry.value &&
          old.sessionId === entry.sessionId &&
          old.createdAt === entry.createdAt
        ) {
          continue;
        }
        report(entry);
      }
      counter = listing.counter;
      schedule(listing.soonestMs);
      drain();
      return;
    }
  };

  await link.subscribe(channel, onMessage);
  const stopResync = link.onResubscribed(() => void resync());
  const stop = () => {
    clearTimeout(timer);
    stopResync();
    void link.unsubscribe(channel, onMessage).catch(() => {});
  };
  onAbort(signal, stop);
  let first: Listing;
  try {
    first = await listRecords(link, keys, space);
  } catch (error) {
    signal.removeEventListener("abort", stop);
    stop();
    throw error;
  }
  for (const entry of first.entries) known.set(entry.key, entry);
  counter = first.counter;
  schedule(first.soonestMs);
  // Changes that arrived while listing are delivered after the snapshot is returned.
  setImmediate(drain);
  return first.entries;
}
