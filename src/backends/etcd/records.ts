/**
 * Records (group members, election leaders): `r/<space>/<key>` bound to the writer's
 * lease, so they vanish with its session. Reading and watching need no session.
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import type { Etcd3, IKeyValue } from "etcd3";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import { idempotent, op, rangeAt, sleep } from "./client.js";
import { decodeRecordValue, type Keyspace } from "./keys.js";
import { FIRST_RETRY_DELAY_MS, nextDelay } from "./scope.js";
import { KeyWatch, type WatchRegistry } from "./watch.js";

/** A record key-value as a `RecordEntry`; `null` for anything Baton did not write. */
export function toRecordEntry(keys: Keyspace, kv: IKeyValue): RecordEntry | null {
  const parsed = keys.parse(kv.key.toString());
  const value = decodeRecordValue(kv.value);
  if (parsed?.type !== "record" || !value) return null;
  return { key: parsed.key, value: value.v, sessionId: value.sid, createdAt: value.c };
}

interface Listing {
  readonly revision: bigint;
  readonly entries: RecordEntry[];
  /** Record key -> mod revision. */
  readonly versions: Map<string, bigint>;
}

/** Reads a record space, retrying transient failures for up to `budgetMs`. */
export async function listRecords(client: Etcd3, keys: Keyspace, space: string, budgetMs: number): Promise<Listing> {
  const response = await idempotent(
    () => client.kv.txn({ compare: [], success: [op.scan(keys.recordPrefix(space))], failure: [] }),
    budgetMs,
  );
  const entries: RecordEntry[] = [];
  const versions = new Map<string, bigint>();
  for (const kv of rangeAt(response, 0)) {
    const entry = toRecordEntry(keys, kv);
    if (!entry) continue;
    entries.push(entry);
    versions.set(entry.key, BigInt(kv.mod_revision));
  }
  return { revision: BigInt(response.header.revision), entries, versions };
}

/**
 * Lists `space` at revision R and watches it from R + 1, so no change falls between the
 * snapshot and the first event. When the watch breaks (stream lost, compaction), it lists
 * again and reports the difference as events before watching on: listeners see every
 * record that changed, though not every intermediate value.
 */
export async function watchRecords(
  client: Etcd3,
  keys: Keyspace,
  space: string,
  listener: (event: RecordEvent) => void,
  signal: AbortSignal,
  registry: WatchRegistry,
  budgetMs: number,
): Promise<RecordEntry[]> {
  const prefix = keys.recordPrefix(space);
  const known = new Map<string, bigint>();
  let watch: KeyWatch | null = null;
  const stop = () => watch?.close();
  onAbort(signal, stop);

  const follow = (revision: bigint) => {
    if (signal.aborted) return;
    watch = new KeyWatch(
      client,
      [{ key: prefix, prefix: true }],
      revision + 1n,
      {
        events: (events) => {
          for (const { type, kv } of events) {
            const parsed = keys.parse(kv.key.toString());
            if (parsed?.type !== "record") continue;
            if (type === "delete") {
              if (known.delete(parsed.key)) listener({ type: "delete", key: parsed.key });
              continue;
            }
            const entry = toRecordEntry(keys, kv);
            if (!entry) continue;
            known.set(entry.key, BigInt(kv.mod_revision));
            listener({ type: "put", entry });
          }
        },
        broken: () => void resync(),
      },
      registry,
    );
  };

  const resync = async () => {
    for (let delay = FIRST_RETRY_DELAY_MS; !signal.aborted; delay = nextDelay(delay)) {
      let listing: Listing;
      try {
        listing = await listRecords(client, keys, space, budgetMs);
      } catch {
        await sleep(delay, signal).catch(() => {});
        continue;
      }
      if (signal.aborted) return;
      for (const key of [...known.keys()]) {
        if (listing.versions.has(key)) continue;
        known.delete(key);
        listener({ type: "delete", key });
      }
      for (const entry of listing.entries) {
        const version = listing.versions.get(entry.key)!;
        if (known.get(entry.key) === version) continue;
        known.set(entry.key, version);
        listener({ type: "put", entry });
      }
      follow(listing.revision);
      return;
    }
  };

  const first = await listRecords(client, keys, space, budgetMs);
  for (const [key, version] of first.versions) known.set(key, version);
  follow(first.revision);
  return first.entries;
}
