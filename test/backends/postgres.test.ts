/**
 * The postgres backend against a private PostgreSQL server (see test/harness/postgres.ts):
 * the whole conformance suite, then what only this backend has.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, it } from "node:test";
import pg from "pg";
import { PgConnection } from "../../src/backends/postgres/connection.js";
import { advisoryKey } from "../../src/backends/postgres/keys.js";
import { SCHEMA_VERSION } from "../../src/backends/postgres/schema.js";
import {
  type Coordinator,
  connect,
  InvalidArgumentError,
  InvalidStateError,
  TimeoutError,
  UnsupportedError,
} from "../../src/index.js";
import { conformance } from "../conformance/suite.js";
import { sharedServer } from "./fixtures/backend-suite.js";
import { take, waitForWaiters } from "../conformance/helpers.js";
import { startPostgres } from "../harness/postgres.js";

const shared = sharedServer(() => startPostgres());
const ensureServer = shared.ensure;

conformance({
  name: "postgres",
  url: () => shared.current()?.url ?? "postgres://127.0.0.1:1/unstarted",
  // Short enough to keep loss tests quick, long enough that a loaded CI machine (two test
  // files at once on 2 cores) does not miss a keep-alive deadline by accident.
  shortTtlMs: 4000,
  contention: { clients: 20, rounds: 30 },
  setup: async () => {
    await ensureServer();
  },
});

describe("postgres backend", () => {
  const open: Coordinator[] = [];
  let admin: pg.Client;
  const client = async (options: Record<string, unknown> = {}) => {
    const coord = await connect((await ensureServer()).url, { namespace: `p-${randomUUID().slice(0, 8)}`, ...options });
    open.push(coord);
    return coord;
  };
  const adminClient = async () => {
    if (!admin) {
      admin = new pg.Client({ connectionString: (await ensureServer()).url });
      admin.on("error", () => {});
      await admin.connect();
    }
    return admin;
  };

  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await admin?.end().catch(() => {});
  });

  it("detects two names sharing one 64-bit key instead of letting them exclude each other", async () => {
    const coord = await client();
    const db = await adminClient();
    // A real SHA-256 collision cannot be produced: plant a registry row claiming the key.
    const key = advisoryKey("baton", coord.namespace, "lock", "victim", 0);
    await db.query(`INSERT INTO baton.keys (key, namespace, kind, name, part) VALUES ($1, $2, 'lock', 'impostor', 0)`, [
      key,
      coord.namespace,
    ]);
    const error = await coord
      .lock("victim")
      .acquire({ timeoutMs: 2000 })
      .then(
        () => assert.fail("should refuse"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof InvalidStateError, String(error));
    assert.match(error.message, /collides with lock "impostor"/);
    const held = await db.query(
      "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = $1",
      [key],
    );
    assert.equal(held.rows[0].n, 0, "nothing stays locked after the refusal");
  });

  it("computes the same advisory keys as the server", async () => {
    await client();
    const db = await adminClient();
    const result = await db.query("SELECT baton.key($1, $2, $3, $4)::text AS key", ["ns ✓", "lock", "a'b", 7]);
    assert.equal(result.rows[0].key, advisoryKey("baton", "ns ✓", "lock", "a'b", 7));
  });

  it("keeps schemas apart, migrates concurrently once, and validates the schema name", async () => {
    const url = (await ensureServer()).url;
    const schema = `s_${randomUUID().slice(0, 8)}`;
    const coords = await Promise.all(Array.from({ length: 5 }, () => connect(url, { schema })));
    open.push(...coords);
    const db = await adminClient();
    const versions = await db.query(`SELECT count(*)::int AS n FROM ${schema}.migrations`);
    assert.equal(versions.rows[0].n, SCHEMA_VERSION, "each migration applied once");
    // Same namespace and name in two schemas: two different locks.
    const a = await coords[0]!.lock("shared-name").acquire();
    const plain = await connect(url);
    open.push(plain);
    const b = await plain.lock("shared-name").tryAcquire();
    assert.ok(b, "the default schema's lock is not the other schema's");
    await b.release();
    await a.release();
    for (const bad of ["Upper", "a-b", "pg_x", "x".repeat(64), "1a", 'a"b']) {
      await assert.rejects(connect(url, { schema: bad }), InvalidArgumentError, bad);
    }
    await assert.rejects(connect(url, { maxConnections: 1 }), InvalidArgumentError);
  });

  it("refuses a connection whose statements run in different backends (transaction pooling)", async () => {
    // No PgBouncer here: a client whose second statement reports another backend pid.
    let calls = 0;
    class PooledClient {
      on() {}
      async connect() {}
      async query() {
        calls++;
        return { rows: [calls === 1 ? { pid: 100, version: 150000, standby: false } : { pid: 200 }] };
      }
      async end() {}
    }
    await assert.rejects(
      PgConnection.open(PooledClient as unknown as ConstructorParameters<never>[0], {}, 2000),
      (e: unknown) => e instanceof UnsupportedError && /transaction-pooling/.test(e.message),
    );
  });

  it("stays within maxConnections, queueing further waits client-side with timeouts working", async () => {
    const coord = await client({ maxConnections: 3 }); // control + 2 lanes
    const url = (await ensureServer()).url;
    const blockers = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const other = await connect(url, { namespace: coord.namespace });
        open.push(other);
        return other.lock(`b${i}`).acquire();
      }),
    );
    // Three contended waits: two occupy the two lanes, the third queues in the client.
    const waits = [0, 1, 2].map((i) => coord.lock(`b${i}`).acquire({ timeoutMs: 30_000 }));
    await waitForWaiters(coord, "b0", 1);
    await waitForWaiters(coord, "b1", 1);
    const db = await adminClient();
    const count = async () =>
      (await db.query("SELECT count(*)::int AS n FROM baton.backends WHERE member_id = $1", [coord.memberId])).rows[0]
        .n as number;
    assert.equal(await count(), 2, "two lanes");
    // A queued wait still times out.
    await assert.rejects(coord.lock("b2").acquire({ timeoutMs: 100 }), TimeoutError);
    for (const b of blockers) await b.release();
    const granted = await Promise.all(waits);
    assert.equal(granted.length, 3);
    assert.ok((await count()) <= 2);
    for (const g of granted) await g.release();
  });

  it("pushes records too big for a NOTIFY payload", async () => {
    const a = await client();
    const watcher = await connect((await ensureServer()).url, { namespace: a.namespace });
    open.push(watcher);
    const events = watcher.group("big").watch();
    await a.group("big").join({ blob: "x".repeat(20_000) });
    const [joined] = await take(events, 1);
    assert.equal(joined?.type, "join");
    assert.equal((joined as { member: { capabilities: { blob: string } } }).member.capabilities.blob.length, 20_000);
    await events.return?.();
  });

  it("measures uncontended acquire + release against raw pg_advisory_lock + unlock", async (t) => {
    const coord = await client();
    const db = await adminClient();
    const lock = coord.lock("bench");
    for (let i = 0; i < 20; i++) await (await lock.acquire()).release(); // warm up
    const timed = async (cycle: () => Promise<unknown>) => {
      const t0 = performance.now();
      for (let i = 0; i < 60; i++) await cycle();
      return (performance.now() - t0) / 60;
    };
    // Rounds side by side, and the best round's ratio: a load spike from other processes on
    // the machine slows one round, not every one.
    const ratios: number[] = [];
    for (let round = 0; round < 5; round++) {
      const raw = await timed(async () => {
        await db.query("SELECT pg_advisory_lock($1)", ["4242"]);
        await db.query("SELECT pg_advisory_unlock($1)", ["4242"]);
      });
      const baton = await timed(async () => (await lock.acquire()).release());
      ratios.push(baton / raw);
      t.diagnostic(
        `uncontended acquire+release: baton ${(baton * 1000).toFixed(0)} us, raw ${(raw * 1000).toFixed(0)} us`,
      );
    }
    assert.ok(Math.min(...ratios) < 10, `not wildly slower than raw: ${ratios.map((r) => r.toFixed(2)).join(", ")}`);
  });
});
