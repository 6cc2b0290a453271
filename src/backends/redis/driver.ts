/**
 * `redis://host:6379[/db]` (`rediss://` for TLS, `redis+sentinel://host:26379,.../master`
 * through Sentinel): locks, semaphores, groups and elections on one Redis primary, through
 * the `redis` (node-redis) client. Every decision is one Lua script; waiters are woken by a
 * message on their session's channel, published by the script that granted them. Not
 * partition-safe: a failover to an asynchronous replica can lose recent grants. See
 * docs/backends/redis.md.
 *
 * @module
 */
import type {
  Driver,
  DriverCells,
  DriverContext,
  DriverSnapshot,
  LockMode,
  QueueKind,
  RecordEntry,
  RecordEvent,
  SessionHooks,
} from "../../core/driver.js";
import { redisCells } from "./cells.js";
import { parseConfig } from "./config.js";
import { translate } from "./errors.js";
import { Keyspace } from "./keys.js";
import { type Link, openLink } from "./link.js";
import { CLOSE, FENCE, INSPECT } from "./lua.js";
import { listRecords, watchRecords } from "./records.js";
import { type DriverShared, RedisSession } from "./session.js";
import { Wakeups } from "./wakeups.js";

/** Connects and checks that Redis answers (and runs scripts). */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const config = parseConfig(context);
  const link = await openLink(config);
  const keys = new Keyspace(context.namespace);
  const wakeups = new Wakeups();
  const stopChecks = link.onResubscribed(() => wakeups.checkAll());
  try {
    await link.command(["PING"]);
  } catch (error) {
    await link.close().catch(() => {});
    throw translate(error, "connecting to Redis");
  }
  return new RedisDriver(
    {
      link,
      keys,
      memberId: context.memberId,
      ttlMs: context.ttlMs,
      requestTimeoutMs: config.requestTimeoutMs,
      replicas: config.replicas,
      wakeups,
    },
    stopChecks,
  );
}

type Row = [string, string, string, string, string];

class RedisDriver implements Driver {
  readonly cells: DriverCells;
  /** The ACQUIRE and RELEASE scripts write and delete takeover records (lua.ts). */
  readonly nativeRecords = true;
  readonly #shared: DriverShared;
  readonly #link: Link;
  readonly #closed = new AbortController();
  readonly #stopChecks: () => void;

  constructor(shared: DriverShared, stopChecks: () => void) {
    this.#shared = shared;
    this.#link = shared.link;
    this.#stopChecks = stopChecks;
    this.cells = redisCells(shared.link, shared.keys);
  }

  openSession(hooks: SessionHooks): Promise<RedisSession> {
    return RedisSession.open(this.#shared, hooks);
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    try {
      return (await listRecords(this.#link, this.#shared.keys, space)).entries;
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
      return await watchRecords(this.#link, this.#shared.keys, space, this.#shared.ttlMs, listener, stop);
    } catch (error) {
      throw translate(error, `watching ${space}`);
    }
  }

  /**
   * Every namespace with something live: a namespace's `queues` and `spaces` keys exist
   * only while it has queues or records (found with SCAN, never KEYS), and one INSPECT
   * script per candidate drops what dead sessions left. For operators: it reads the whole
   * key space.
   */
  async namespaces(): Promise<string[]> {
    const candidates = new Set<string>();
    try {
      let cursor = "0";
      do {
        const [next, keys] = (await this.#link.command(["SCAN", cursor, "MATCH", "baton:*", "COUNT", "1000"])) as [
          string,
          string[],
        ];
        cursor = String(next);
        for (const key of keys) {
          const match = /^baton:([^:]*):(?:queues|spaces)$/.exec(String(key));
          if (match) candidates.add(match[1]!);
        }
      } while (cursor !== "0");
      const found: string[] = [];
      for (const encoded of candidates) {
        const [queues, spaces] = (await this.#link.run(INSPECT, [`baton:${encoded}:`])) as [unknown[], unknown[]];
        if (queues.length > 0 || spaces.length > 0) found.push(decodeURIComponent(encoded));
      }
      return found;
    } catch (error) {
      throw translate(error, "listing namespaces");
    }
  }

  /** Everything in the namespace, in one script (which also drops dead sessions' entries). */
  async inspect(): Promise<DriverSnapshot> {
    let reply: [
      [string, string, string, Row[], [string, string, string, string][]][],
      [string, [string, string, string, string][]][],
    ];
    try {
      reply = (await this.#link.run(INSPECT, [this.#shared.keys.prefix])) as typeof reply;
    } catch (error) {
      throw translate(error, "inspecting");
    }
    const mode = (m: string): LockMode => (m === "x" ? "exclusive" : "shared");
    const [queues, spaces] = reply;
    return {
      queues: queues.map(([kind, name, limit, holders, waiters]) => ({
        kind: kind as QueueKind,
        name,
        limit: Number(limit),
        holders: holders.map(([memberId, sessionId, m, token, since]) => ({
          memberId,
          sessionId,
          mode: mode(m),
          token: BigInt(token),
          since: Number(since),
        })),
        waiters: waiters.map(([memberId, sessionId, m, since]) => ({
          memberId,
          sessionId,
          mode: mode(m),
          since: Number(since),
        })),
      })),
      records: spaces.map(([space, rows]) => ({
        space,
        entries: rows.map(([key, value, sessionId, createdAt]) => ({
          key,
          value,
          sessionId,
          createdAt: Number(createdAt),
        })),
      })),
    };
  }

  /**
   * Marks another session revoked (one FENCE script): its next keep-alive fails, so its
   * client's signals fire; replies how long until its local deadline has surely passed.
   */
  async fenceSession(sessionId: string): Promise<number | null> {
    try {
      const left = Number(await this.#link.run(FENCE, [this.#shared.keys.prefix, sessionId]));
      return left < 0 ? null : left;
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  /**
   * Ends another session as its own close() would (one CLOSE script: its key deleted, its
   * entries out of the queues the snapshot shows it in, waiters behind granted, its records
   * deleted); anything the snapshot missed counts as a dead session's from then on. Called
   * after {@link RedisDriver.fenceSession}'s wait, so its client already learnt the loss.
   */
  async revokeSession(sessionId: string): Promise<void> {
    const { keys } = this.#shared;
    const snapshot = await this.inspect();
    const mine = (list: readonly { sessionId: string }[]) => list.some((e) => e.sessionId === sessionId);
    const queues = snapshot.queues
      .filter((q) => mine(q.holders) || mine(q.waiters))
      .map((q) => keys.queue(q.kind, q.name));
    const records = snapshot.records.flatMap(({ space, entries }) =>
      entries.filter((e) => e.sessionId === sessionId).map((e) => [keys.space(space), e.key]),
    );
    try {
      await this.#link.run(CLOSE, [keys.prefix, sessionId, JSON.stringify(queues), JSON.stringify(records)]);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  async close(): Promise<void> {
    this.#closed.abort();
    this.#stopChecks();
    await this.#link.close();
  }
}
