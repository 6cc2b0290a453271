/**
 * `etcd://host:port[,host:port...]` (`etcds://` for TLS): locks, semaphores, groups and
 * elections on an etcd v3 cluster, through the `etcd3` client's KV, lease, watch and
 * transaction APIs (not its Lock or Election classes). Partition-safe: all state is in
 * etcd's Raft-replicated store; fencing tokens are etcd revisions, increasing cluster-wide.
 * A crashed client's locks are freed when its lease expires (the session TTL). See
 * docs/backends/etcd.md.
 *
 * @module
 */
import { setMaxListeners } from "node:events";
import type { Etcd3 } from "etcd3";
import type {
  Driver,
  DriverCells,
  DriverContext,
  DriverSnapshot,
  QueueKind,
  QueueSnapshot,
  RecordEntry,
  RecordEvent,
  SessionHooks,
} from "../../core/driver.js";
import { etcdCells } from "./cells.js";
import { createClients, type EtcdClients, idempotent, op, rangeAt, readBudget } from "./client.js";
import { parseConfig } from "./config.js";
import { translate } from "./errors.js";
import { Keyspace, namespaceOf, prefixEnd, ROOT } from "./keys.js";
import { isGranted, type EtcdEntry, toEntry, tokenOf } from "./queue.js";
import { listRecords, toRecordEntry, watchRecords } from "./records.js";
import { type DriverShared, EtcdSession } from "./session.js";
import type { KeyWatch, WatchRegistry } from "./watch.js";

/** Creates an etcd driver; checks that etcd answers (and lets this user read the prefix). */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const config = parseConfig(context);
  const clients = createClients(config, context.ttlMs);
  const client = clients.pool;
  const keys = new Keyspace(context.namespace);
  try {
    // Asks every member: the first answer lets connect() return, and whoever has not
    // answered yet is not used until it does.
    await idempotent(
      () =>
        clients.reachAny((member) =>
          member.kv.range({
            key: Buffer.from(keys.prefix),
            range_end: prefixEnd(keys.prefix),
            limit: 1,
            keys_only: true,
            // Answered by the member itself: connecting works during an election too.
            serializable: true,
          }),
        ),
      readBudget(clients.callTimeoutMs),
    );
  } catch (error) {
    clients.close();
    throw translate(error, `connecting to etcd at ${config.hosts.join(",")}`);
  }
  const closing = new AbortController();
  // Every watch and every closing acquisition listens to it.
  setMaxListeners(0, closing.signal);
  const shared = {
    client,
    keepAlives: clients.keepAlives,
    keys,
    memberId: context.memberId,
    ttlMs: context.ttlMs,
    requestTimeoutMs: clients.callTimeoutMs,
    watches: new Set<KeyWatch>(),
    closing: closing.signal,
  };
  return new EtcdDriver(shared, clients, closing);
}

class EtcdDriver implements Driver {
  readonly #shared: DriverShared;
  readonly #client: Etcd3;
  readonly #keys: Keyspace;
  readonly #watches: WatchRegistry;
  readonly #closed: AbortController;
  readonly cells: DriverCells;
  /** Takeover records are put and deleted by the grant's and release's transactions (takeover.ts). */
  readonly nativeRecords = true;
  readonly #clients: EtcdClients;

  constructor(shared: DriverShared, clients: EtcdClients, closed: AbortController) {
    this.#shared = shared;
    this.#clients = clients;
    this.#closed = closed;
    this.#client = shared.client;
    this.#keys = shared.keys;
    this.#watches = shared.watches;
    this.cells = etcdCells(
      shared.client,
      shared.keys,
      shared.watches,
      closed.signal,
      readBudget(shared.requestTimeoutMs),
    );
  }

  /** How long a read keeps retrying transient failures. */
  get #readBudgetMs(): number {
    return readBudget(this.#shared.requestTimeoutMs);
  }

  openSession(hooks: SessionHooks): Promise<EtcdSession> {
    return EtcdSession.open(this.#shared, hooks);
  }

  fenceSession(sessionId: string): Promise<number | null> {
    return EtcdSession.fence(this.#shared, sessionId);
  }

  revokeSession(sessionId: string): Promise<void> {
    return EtcdSession.revoke(this.#shared, sessionId);
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    try {
      return (await listRecords(this.#client, this.#keys, space, this.#readBudgetMs)).entries;
    } catch (error) {
      throw translate(error, `listing ${space}`);
    }
  }

  async watchRecords(
    space: string,
    listener: (event: RecordEvent) => void,
    signal: AbortSignal,
  ): Promise<RecordEntry[]> {
    const stop = AbortSignal.any([signal, this.#closed.signal]);
    try {
      return await watchRecords(this.#client, this.#keys, space, listener, stop, this.#watches, this.#readBudgetMs);
    } catch (error) {
      throw translate(error, `watching ${space}`);
    }
  }

  /** Every namespace with a key (queue entries and records are bound to live leases). */
  async namespaces(): Promise<string[]> {
    let kvs: ReturnType<typeof rangeAt>;
    try {
      const response = await this.#client.kv.txn({ compare: [], success: [op.scan(ROOT)], failure: [] });
      kvs = rangeAt(response, 0);
    } catch (error) {
      throw translate(error, "listing namespaces");
    }
    const found = new Set<string>();
    for (const kv of kvs) {
      const namespace = namespaceOf(kv.key.toString());
      if (namespace !== null) found.add(namespace);
    }
    return [...found];
  }

  /** Everything in the namespace, from the keys themselves, in one read. */
  async inspect(): Promise<DriverSnapshot> {
    let kvs: ReturnType<typeof rangeAt>;
    let revision: bigint;
    try {
      const response = await idempotent(
        () => this.#client.kv.txn({ compare: [], success: [op.scan(this.#keys.prefix)], failure: [] }),
        this.#readBudgetMs,
      );
      kvs = rangeAt(response, 0);
      revision = BigInt(response.header.revision);
    } catch (error) {
      throw translate(error, "inspecting");
    }
    const queues = new Map<string, { kind: QueueKind; name: string; entries: EtcdEntry[] }>();
    const records = new Map<string, RecordEntry[]>();
    for (const kv of kvs) {
      const parsed = this.#keys.parse(kv.key.toString());
      if (parsed?.type === "queue") {
        const id = `${parsed.kind}/${parsed.name}`;
        let queue = queues.get(id);
        if (!queue) queues.set(id, (queue = { kind: parsed.kind, name: parsed.name, entries: [] }));
        queue.entries.push(toEntry(kv)); // oldest first: the scan is sorted by create revision
      } else if (parsed?.type === "record") {
        const entry = toRecordEntry(this.#keys, kv);
        if (!entry) continue;
        const list = records.get(parsed.space) ?? [];
        list.push(entry);
        records.set(parsed.space, list);
      }
    }
    return {
      queues: [...queues.values()].map((queue) => snapshotOf(queue, revision)),
      records: [...records].map(([space, entries]) => ({ space, entries })),
    };
  }

  async close(): Promise<void> {
    this.#closed.abort();
    for (const watch of [...this.#watches]) watch.close();
    this.#clients.close();
  }
}

/**
 * A lock's or election's exclusive key first in the queue holds it even while it still
 * says it waits: it was handed off (handoff.ts) and its recording has not landed yet, or
 * its recording transaction, which cannot fail while it is first, is on its way. Either
 * way nobody else is granted before it goes, so `inspect()` shows it, and `revoke` ends
 * it, as the holder. Its token is not in etcd yet: the read's revision stands in for it
 * (no smaller than the handoff's token, and smaller than any later holder's).
 */
function holding(queue: { kind: QueueKind }, entry: EtcdEntry, index: number): boolean {
  return isGranted(entry) || (index === 0 && queue.kind !== "semaphore" && entry.value.m === "x");
}

function snapshotOf(queue: { kind: QueueKind; name: string; entries: EtcdEntry[] }, revision: bigint): QueueSnapshot {
  const mode = (e: EtcdEntry) => (e.value.m === "x" ? ("exclusive" as const) : ("shared" as const));
  return {
    kind: queue.kind,
    name: queue.name,
    limit: queue.entries.find((e) => !Number.isNaN(e.value.l))?.value.l ?? 1,
    holders: queue.entries
      .filter((e, i) => holding(queue, e, i))
      .map((e) => ({
        memberId: e.value.id,
        sessionId: e.value.sid,
        mode: mode(e),
        token: isGranted(e) ? tokenOf(e) : revision,
        since: e.value.s,
      })),
    waiters: queue.entries
      .filter((e, i) => !holding(queue, e, i))
      .map((e) => ({ memberId: e.value.id, sessionId: e.value.sid, mode: mode(e), since: e.value.s })),
  };
}
