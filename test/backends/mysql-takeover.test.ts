/**
 * MySQL's native takeover records (schema version 4, src/backends/mysql/procedures-v4.ts)
 * against the hardest crash: a holder process that SIGKILLs itself in the very tick its
 * plain `acquire()` resolved, so nothing it could send after the grant went out. Its
 * record must already be in the cells table, written by the call that granted it, both
 * for a free lock (the enqueue grants) and for a waiter second in line (its own re-check
 * in the server-side wait grants). Then what must leave no record: a clean release, a
 * wait given up (also one granted as it was given up), a grant whose answer came too late;
 * and the upgrade from version 3 with a version 3 client holding a lock across it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import mysql from "mysql2/promise";
import { PROCEDURES_V1, PROCEDURES_V2 } from "../../src/backends/mysql/procedures.js";
import { PROCEDURES_V3 } from "../../src/backends/mysql/procedures-v3.js";
import { SCHEMA_VERSION, nameHash, render } from "../../src/backends/mysql/schema.js";
import { PROCEDURES_V4 } from "../../src/backends/mysql/procedures-v4.js";
import { type Coordinator, connect } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { Holder } from "../harness/holder.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";
import { startProxy } from "../harness/proxy.js";

/** Short: the killed holder's connections end with it; its session row outlives it. */
const HOLDER_TTL_MS = 2000;

describe("mysql takeover records, written by the granting call", { timeout: 120_000 }, () => {
  let server: MariadbServer;
  const coords: Coordinator[] = [];
  const holders: Holder[] = [];
  const at = (namespace: string, via = server.url) => {
    const url = new URL(via);
    url.searchParams.set("namespace", namespace);
    return url.href;
  };
  const client = async (namespace: string, options: Record<string, unknown> = {}, via = server.url) => {
    const coord = await connect(at(namespace, via), { memberId: "next", ttlMs: 10_000, ...options });
    coords.push(coord);
    return coord;
  };
  /** The takeover rows of lock `name` in `namespace`, as the server has them. */
  const rows = (namespace: string, name: string) =>
    server.query<{ value: string | null; version: string; fence: string; grant_key: string | null }>(
      "SELECT value, version, fence, grant_key FROM baton.baton_cells WHERE namespace = ? AND space = 'takeover' AND cname = ?",
      [namespace, name],
    );
  /** A holder process that acquires `name` by a plain `acquire()` and dies as soon as it is granted. */
  const dyingHolder = (namespace: string, name: string, options?: Record<string, unknown>): Holder => {
    process.env.BATON_HOLDER_DIE = "1";
    try {
      const holder = new Holder(at(namespace), name, HOLDER_TTL_MS, undefined, options);
      holders.push(holder);
      return holder;
    } finally {
      delete process.env.BATON_HOLDER_DIE;
    }
  };

  before(async () => {
    server = await startMariadb();
  });
  after(async () => {
    await Promise.all(holders.map((h) => h.stop()));
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  const handedOn = async (coord: Coordinator, name: string, holder: Holder, given: unknown = null) => {
    const granted = await holder.next((e) => e.event === "acquired", "the holder's grant");
    // Written by the granting call: a fresh record's version is its token and its row names
    // the grant's entry key (a cell write by the core after the grant would have neither).
    const [stored, ...more] = await rows(coord.namespace, name);
    assert.deepEqual(
      { version: String(stored?.version), byGrant: typeof stored?.grant_key, more: more.length },
      { version: granted.token, byGrant: "string", more: 0 },
    );
    const handle = await coord.lock(name).acquire({ timeoutMs: 30_000 });
    const { memberId, token, fenceInfo } = handle.takeover ?? assert.fail("the killed holder's loss was not handed on");
    assert.deepEqual(
      { memberId, token, fenceInfo },
      { memberId: `holder-${holder.child.pid}`, token: BigInt(granted.token!), fenceInfo: given },
    );
    assert.ok(handle.token > token, `new token ${handle.token} must exceed ${token}`);
    // The server can hand the lock on (the killed holder's connections end with it) before
    // this process has handled the holder's exit: wait for that, then read how it ended.
    await holder.exited;
    assert.equal(holder.child.signalCode, "SIGKILL", "the holder killed itself");
    assert.equal((await handle.release()).status, "released");
    assert.deepEqual(await rows(coord.namespace, name), [], "the clean release deleted the record, row and all");
  };

  it("tracks a plain acquire() by default", async () => {
    const coord = await client("default");
    assert.equal(coord.takeoverByDefault, true);
  });

  it("a holder killed in the tick its acquire() of a free lock resolved is handed to the next holder", async () => {
    const coord = await client("free");
    await handedOn(coord, "job", dyingHolder("free", "job"));
  });

  it("so is one granted as the waiter second in line, killed in the tick it was granted", async () => {
    const coord = await client("queued");
    const held = await coord.lock("job").acquire();
    const holder = dyingHolder("queued", "job");
    await waitForWaiters(coord, "job", 1);
    assert.equal((await held.release()).status, "released");
    await handedOn(coord, "job", holder);
  });

  it("fence info beyond Latin-1, and one that looks like a sealed record's end, is handed on exactly", async () => {
    const coord = await client("fence-info");
    const fenceInfo = { host: "节点-ü-🔒", tail: ',"t":"0","at":1}' };
    await handedOn(coord, "job", dyingHolder("fence-info", "job", { fenceInfo }), fenceInfo);
  });

  it("a given-up wait leaves no record and takes none away", async () => {
    const coord = await client("given-up");
    // A lost holding's record, and the lock held by an untracked holder that leaves it.
    const lost = dyingHolder("given-up", "job");
    const lostToken = BigInt((await lost.next((e) => e.event === "acquired", "the holder's grant")).token!);
    await waitFor(() => lost.child.signalCode !== null, "the holder's death");
    const blind = await coord.lock("job").acquire({ takeover: false, timeoutMs: 30_000 });
    const before = await rows("given-up", "job");
    assert.equal(before.length, 1);
    const waiter = await client("given-up", { memberId: "waiter" });
    const giveUp = new AbortController();
    const waiting = waiter.lock("job").acquire({ signal: giveUp.signal });
    await waitForWaiters(coord, "job", 1);
    giveUp.abort(new Error("given up"));
    await assert.rejects(waiting, /cancelled/);
    const timedOut = waiter.lock("job").acquire({ timeoutMs: 300 });
    await assert.rejects(timedOut, /timed out/);
    assert.deepEqual(await rows("given-up", "job"), before, "the lost holder's record, as it was");
    await blind.release();
    const next = await waiter.lock("job").acquire({ timeoutMs: 10_000 });
    assert.equal(next.takeover?.token, lostToken, "still handed the lost holding");
    await next.release();
  });

  it("a wait given up as its grant's answer is on its way deletes the record that grant wrote", async () => {
    const proxy = await startProxy({ host: server.host, port: server.port });
    try {
      const a = await client("raced");
      const k = await client(
        "raced",
        { memberId: "k", ttlMs: 20_000 },
        server.url.replace(`:${server.port}/`, `:${proxy.port}/`),
      );
      const held = await a.lock("job").acquire();
      const giveUp = new AbortController();
      const waiting = k.lock("job").acquire({ signal: giveUp.signal });
      await waitForWaiters(a, "job", 1);
      // From now on K hears everything 0.8 s late (the answer of the wait that grants it
      // too), within the 2 s its interrupt of the wait may take.
      proxy.setLatency({ down: { ms: 800 } });
      assert.equal((await held.release()).status, "released");
      await waitFor(async () => (await rows("raced", "job"))[0]?.value?.includes('"m":"k"') === true, "K's grant");
      giveUp.abort(new Error("given up"));
      await assert.rejects(waiting, /cancelled/);
      proxy.setLatency({});
      assert.deepEqual(await rows("raced", "job"), [], "a grant never handed out leaves no record");
      const next = await a.lock("job").acquire({ timeoutMs: 10_000 });
      assert.equal(next.takeover, null, "a grant never handed out was not lost either");
      await next.release();
    } finally {
      await proxy.close();
    }
  });

  it("a tracked grant whose answer came too late (its connection dropped) takes its record with it", async () => {
    const proxy = await startProxy({ host: server.host, port: server.port });
    try {
      const a = await client("late");
      // TTL 9 s: a statement gets 3 s to answer; the answer below is held back 5 s.
      const k = await client(
        "late",
        { memberId: "k", ttlMs: 9000 },
        server.url.replace(`:${server.port}/`, `:${proxy.port}/`),
      );
      // Its lane connected before the answers are held back.
      await (await k.lock("warm-up").acquire({ takeover: false })).release();
      proxy.setLatency({ down: { ms: 5000 } });
      // The answer came after the statement's timeout: the backend is reported unavailable.
      const trying = observed(
        assert.rejects(
          k.lock("job").tryAcquire(),
          (e: Error) => e.name === "ConnectionLostError" && /did not answer within/.test(e.message),
        ),
      );
      await waitFor(async () => (await rows("late", "job")).length === 1, "the tracked grant to commit");
      // A waiter queued behind the grant nobody was handed: granted the moment the orphan's
      // connection ends, it must not find the orphan's record (the clean-up deletes it
      // before it ends that connection).
      const waiting = observed(a.lock("job").acquire({ timeoutMs: 20_000 }));
      await waitFor(
        async () => ((await a.inspect()).locks.find((l) => l.name === "job")?.waiters.length ?? 0) === 1,
        "the waiter queued",
      );
      proxy.setLatency({});
      await trying;
      const next = await waiting;
      assert.equal(next.takeover, null, "no false takeover");
      // Its connection was not killed by the clean-up (it held the orphan's key for a
      // moment, as it was woken).
      assert.equal((await next.release()).status, "released");
      assert.deepEqual(await rows("late", "job"), [], "no record left");
    } finally {
      await proxy.close();
    }
  });
});

describe("mysql schema version 4 upgrade", { timeout: 60_000 }, () => {
  let server: MariadbServer;
  const coords: Coordinator[] = [];
  before(async () => {
    server = await startMariadb();
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  it("a version 3 client holding a lock across the migration releases it to a tracked waiter, and its procedures stay", async () => {
    // Tables at version 3: a client migrates them to 4, then version 4 is undone as far as
    // a version 3 client could tell (its procedures dropped, its record and column gone).
    const first = await connect(server.url, { namespace: "upgrade", ttlMs: 10_000 });
    await first.close();
    // (Version 5 is undone too: versions 1 to 3's procedures made again, as they were.)
    for (const sql of PROCEDURES_V4.filter((s) => s.startsWith("DROP PROCEDURE"))) {
      await server.query(render(sql, "baton.baton_"));
    }
    for (const sql of [...PROCEDURES_V1, ...PROCEDURES_V2, ...PROCEDURES_V3].filter((s) =>
      /^(DROP|CREATE) PROCEDURE/.test(s),
    )) {
      await server.query(render(sql, "baton.baton_"));
    }
    await server.query("ALTER TABLE baton.baton_cells DROP COLUMN grant_key");
    await server.query("DELETE FROM baton.baton_migrations WHERE version >= 4");
    // The version 3 client: its session and enqueue, as version 3's driver calls them.
    const old = await mysql.createConnection({ socketPath: server.socket, user: "root", database: "baton" });
    const session = "00000000-0000-0000-0000-000000000003";
    const enqueue = async (key: string): Promise<bigint> => {
      const [sets] = await old.query(
        "CALL baton_acquire(?, 'upgrade', 'lock', 'job', 'exclusive', 1, ?, ?, 'old', 0, 0)",
        [nameHash("upgrade", "lock", "job"), key, session],
      );
      const token = (sets as { token: string | null }[][])[0]?.[0]?.token;
      return BigInt(token ?? assert.fail("the version 3 enqueue was not granted"));
    };
    try {
      await old.query(
        "INSERT INTO baton_sessions (id, namespace, member_id, ttl_ms, expires_at) VALUES (?, 'upgrade', 'old', 60000, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) + 60000)",
        [session],
      );
      const oldToken = await enqueue("old-key");
      // A new client migrates the tables to version 4 (and on) while the old one holds the lock.
      const coord = await connect(server.url, { namespace: "upgrade", memberId: "new", ttlMs: 10_000 });
      coords.push(coord);
      const [version] = await server.query<{ v: number }>("SELECT MAX(version) AS v FROM baton.baton_migrations");
      assert.equal(Number(version?.v), SCHEMA_VERSION);
      const waiting = coord.lock("job").acquire({ timeoutMs: 20_000 });
      await waitForWaiters(coord, "job", 1);
      await old.query("CALL baton_withdraw('old-key')");
      const handle = await waiting;
      assert.equal(handle.takeover, null, "the version 3 holding was released, not lost");
      assert.ok(handle.token > oldToken, "the token goes on");
      assert.equal((await coord.inspect()).takeovers?.find((r) => r.name === "job")?.token, handle.token);
      assert.equal((await handle.release()).status, "released");
      // Version 3's procedures still grant (a client started before the upgrade).
      assert.ok((await enqueue("old-key-2")) > handle.token);
      await old.query("CALL baton_withdraw('old-key-2')");
    } finally {
      await old.end();
    }
  });
});
