/**
 * Names, member ids and fence info outside Latin-1 on a database whose default character
 * set is latin1 (schema version 5, src/backends/mysql/procedures-v5.ts): a procedure's
 * text parameters and variables took the database's character set, and every such request
 * failed with error 1366. The same on a utf8mb4 database; then the migration from version 4
 * on a latin1 database holding version 4 state. One server for all.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import mysql from "mysql2/promise";
import { PROCEDURES_V1, PROCEDURES_V2 } from "../../src/backends/mysql/procedures.js";
import { PROCEDURES_V3 } from "../../src/backends/mysql/procedures-v3.js";
import { PROCEDURES_V4 } from "../../src/backends/mysql/procedures-v4.js";
import { utf8mb4 } from "../../src/backends/mysql/procedures-v5.js";
import { SCHEMA_VERSION, render, replacesAtomically, replacing } from "../../src/backends/mysql/schema.js";
import { type Coordinator, connect } from "../../src/index.js";
import { waitFor } from "../conformance/helpers.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";

const MEMBER = "成員-é-🦀";
const NAMESPACE = "ns-名前-é";
const NAMES = ["é", "名前", "🔒-lock"];
const FENCE = { host: "ホスト-é", note: "🔥" };

describe("mysql names outside Latin-1", { timeout: 120_000 }, () => {
  let server: MariadbServer;
  const coords: Coordinator[] = [];
  const client = async (db: string, memberId: string, namespace = NAMESPACE) => {
    const url = new URL(server.url);
    url.pathname = `/${db}`;
    url.searchParams.set("namespace", namespace);
    const coord = await connect(url.href, { memberId, ttlMs: 10_000 });
    coords.push(coord);
    return coord;
  };

  before(async () => {
    server = await startMariadb();
    await server.query("CREATE DATABASE l1 CHARACTER SET latin1 COLLATE latin1_swedish_ci");
    await server.query("CREATE DATABASE u8 CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci");
    await server.query("CREATE DATABASE up CHARACTER SET latin1 COLLATE latin1_swedish_ci");
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  for (const db of ["l1", "u8"]) {
    it(`${db}: locks, shared locks, a semaphore, tracked fence info, a takeover and cells keep the exact text`, async () => {
      const a = await client(db, MEMBER);
      const b = await client(db, `${MEMBER}-2`);
      for (const name of NAMES) {
        // Exclusive and tracked (the default), with fence info: inspect shows it all back.
        const held = await a.lock(name).acquire({ fenceInfo: FENCE, timeoutMs: 5000 });
        const seen = await a.inspect();
        assert.equal(seen.namespace, NAMESPACE);
        const lock = seen.locks.find((l) => l.name === name);
        assert.deepEqual(
          lock?.holders.map((h) => h.memberId),
          [MEMBER],
          `${name}: ${JSON.stringify(seen.locks.map((l) => l.name))}`,
        );
        const record = seen.takeovers?.find((r) => r.name === name);
        assert.equal(record?.memberId, MEMBER);
        assert.deepEqual(record?.fenceInfo, FENCE);
        assert.equal((await held.release()).status, "released");
        // Shared: two holders, their member ids.
        const s1 = await a.lock(name).acquire({ mode: "shared", timeoutMs: 5000 });
        const s2 = await b.lock(name).acquire({ mode: "shared", timeoutMs: 5000 });
        const shared = (await a.inspect()).locks.find((l) => l.name === name);
        assert.deepEqual(shared?.holders.map((h) => h.memberId).sort(), [MEMBER, `${MEMBER}-2`].sort());
        await s1.release();
        await s2.release();
        // A semaphore of the same name (its own queue), both permits.
        const p1 = await a.semaphore(name, { limit: 2 }).acquire({ timeoutMs: 5000 });
        const p2 = await b.semaphore(name, { limit: 2 }).acquire({ timeoutMs: 5000 });
        const sem = (await a.inspect()).semaphores.find((l) => l.name === name);
        assert.equal(sem?.holders.length, 2);
        assert.ok(sem?.holders.some((h) => h.memberId === `${MEMBER}-2`));
        await p1.release();
        await p2.release();
        // A cell.
        const cell = a.cell<string>(name);
        await cell.set(`${name}=é名🔒`);
        assert.equal((await cell.get())?.value, `${name}=é名🔒`);
        assert.equal((await b.inspect()).cells?.find((c) => c.name === name)?.value, `${name}=é名🔒`);
      }
      // A takeover: the holder's lane connection ends, and the next holder is handed its record.
      const name = NAMES[1] ?? "";
      const lost = await a.lock(name).acquire({ fenceInfo: FENCE, timeoutMs: 5000 });
      const [entry] = await server.query<{ conn: string }>(
        `SELECT e.conn FROM ${db}.baton_entries e JOIN ${db}.baton_queues q ON q.qid = e.qid WHERE q.name = ? AND q.kind = 'lock' AND e.token IS NOT NULL`,
        [name],
      );
      await server.query(`KILL CONNECTION ${Number(entry?.conn)}`);
      await waitFor(() => lost.signal.aborted, "the lost holding noticed", 5000);
      const next = await b.lock(name).acquire({ timeoutMs: 10_000 });
      assert.equal(next.takeover?.memberId, MEMBER);
      assert.deepEqual(next.takeover?.fenceInfo, FENCE);
      assert.equal(next.takeover?.token, lost.token);
      await next.release();
    });
  }

  it("migrates a latin1 database from version 4 with state in it, and the version 4 signatures stay", async () => {
    const parameters = () =>
      server.query<{ name: string; n: number; mode: string; type: string; cs: string | null }>(
        `SELECT SPECIFIC_NAME AS name, ORDINAL_POSITION AS n, PARAMETER_MODE AS mode, DTD_IDENTIFIER AS type,
           CHARACTER_SET_NAME AS cs FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = 'up' ORDER BY name, n`,
      );
    // Tables at version 4: version 5's procedures replaced by the ones of versions 1 to 4
    // (their statements are idempotent), as a version 4 migration left them.
    // ASCII member ids and namespace: version 4's procedures take them on a latin1 database.
    const first = await client("up", "old", "upgrade");
    for (const sql of [...PROCEDURES_V1, ...PROCEDURES_V2, ...PROCEDURES_V3, ...PROCEDURES_V4]) {
      await server.query(render(sql, "up.baton_"));
    }
    await server.query("DELETE FROM up.baton_migrations WHERE version = 5");
    const before = await parameters();
    assert.ok(
      before.some((p) => p.cs === "latin1"),
      "version 4's procedures have latin1 parameters",
    );
    await assert.rejects(first.lock("名前").tryAcquire(), /Incorrect string value/);
    // Version 4 state: a lock held (a tracked record), a semaphore permit, a cell.
    const held = await first.lock("plain").acquire({ fenceInfo: { v: 4 }, timeoutMs: 5000 });
    const permit = await first.semaphore("sem", { limit: 2 }).acquire({ timeoutMs: 5000 });
    await first.cell<string>("cell").set("v4");
    // A new client migrates the tables to version 5, while version 4 clients call on (the
    // procedures are replaced, never missing: CREATE OR REPLACE on MariaDB).
    const olds = await Promise.all(
      [1, 2].map(() => mysql.createConnection({ socketPath: server.socket, user: "root", database: "up" })),
    );
    let calling = true;
    let calls = 0;
    const failures: string[] = [];
    const loops = olds.map(async (old) => {
      while (calling) {
        await old.query("CALL baton_withdraw('no-such-key')").then(
          () => calls++,
          (e: Error) => failures.push(e.message),
        );
      }
    });
    const second = await client("up", "new", "upgrade").finally(() => {
      calling = false;
    });
    await Promise.all(loops);
    await Promise.all(olds.map((old) => old.end()));
    assert.deepEqual(failures, [], `${failures.length} of ${calls + failures.length} calls failed`);
    assert.ok(calls > 0);
    const [version] = await server.query<{ v: number }>("SELECT MAX(version) AS v FROM up.baton_migrations");
    assert.equal(Number(version?.v), SCHEMA_VERSION);
    assert.equal(SCHEMA_VERSION, 5);
    const after = await parameters();
    // Same procedures, parameters, modes and types: a version 4 client's calls are unchanged.
    const shape = (rows: typeof before) => rows.map(({ name, n, mode, type }) => `${name}/${n}/${mode}/${type}`);
    assert.deepEqual(shape(after), shape(before));
    assert.deepEqual(
      after.filter((p) => p.cs !== null && p.cs !== "utf8mb4"),
      [],
      "every text parameter is utf8mb4",
    );
    // The state goes on: the held lock is still held, then released to the new client.
    assert.equal(await second.lock("plain").tryAcquire(), null);
    assert.equal((await held.release()).status, "released");
    const plain = await second.lock("plain").acquire({ timeoutMs: 5000 });
    assert.ok(plain.token > held.token);
    assert.equal(plain.takeover, null);
    await plain.release();
    const permit2 = await second.semaphore("sem", { limit: 2 }).acquire({ timeoutMs: 5000 });
    await permit.release();
    await permit2.release();
    assert.equal((await second.cell<string>("cell").get())?.value, "v4");
    // And names outside Latin-1 now work, for the client connected before the migration too.
    for (const coord of [first, second]) {
      const h = await coord.lock("名前").acquire({ timeoutMs: 5000 });
      assert.equal((await coord.inspect()).locks.find((l) => l.name === "名前")?.holders[0]?.memberId, coord.memberId);
      await h.release();
    }
  });
});

describe("mysql version 5's checked transformation", () => {
  it("adds the character set where missing, and refuses a definition it does not expect", () => {
    const sql = `CREATE PROCEDURE @pt(IN p_a VARCHAR(8), IN p_b BINARY(32), OUT o_c TEXT CHARACTER SET utf8mb4)
  BEGIN
    DECLARE v_d CHAR(36);
    DECLARE v_e BIGINT UNSIGNED;
    DECLARE done CURSOR FOR SELECT 1;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_e = 1;
  END`;
    const out = utf8mb4("t", sql, 2);
    assert.match(
      out,
      /IN p_a VARCHAR\(8\) CHARACTER SET utf8mb4, IN p_b BINARY\(32\), OUT o_c TEXT CHARACTER SET utf8mb4\)/,
    );
    assert.match(out, /DECLARE v_d CHAR\(36\) CHARACTER SET utf8mb4;/);
    assert.equal(out.split("CHARACTER SET").length, 4);
    assert.throws(() => utf8mb4("t", sql, 1), /2 declarations without a character set/);
    assert.throws(
      () => utf8mb4("t", sql.replace("BIGINT UNSIGNED", "DECIMAL(10,2)"), 2),
      /not known here|not understood/,
    );
    assert.throws(() => utf8mb4("t", "CREATE FUNCTION @pf() RETURNS INT RETURN 1", 0), /no CREATE PROCEDURE head/);
  });

  it("replaces a procedure in one statement on MariaDB 10.1.3 and later only", () => {
    assert.equal(replacesAtomically("10.11.19-MariaDB-0+deb12u1"), true);
    assert.equal(replacesAtomically("11.4.2-MariaDB"), true);
    assert.equal(replacesAtomically("10.1.3-MariaDB"), true);
    assert.equal(replacesAtomically("10.0.38-MariaDB"), false);
    assert.equal(replacesAtomically("8.0.36"), false);
    const statements = [
      "DROP PROCEDURE IF EXISTS @pa",
      "CREATE PROCEDURE @pa() BEGIN END",
      "DROP TRIGGER IF EXISTS @pt",
      "X",
    ];
    assert.deepEqual(replacing(statements, true), [
      "CREATE OR REPLACE PROCEDURE @pa() BEGIN END",
      ...statements.slice(2),
    ]);
    assert.deepEqual(replacing(statements, false), statements);
    assert.deepEqual(replacing(["DROP PROCEDURE IF EXISTS @pa", "CREATE PROCEDURE @pab() BEGIN END"], true), [
      "DROP PROCEDURE IF EXISTS @pa",
      "CREATE PROCEDURE @pab() BEGIN END",
    ]);
  });
});
