/**
 * A PostgreSQL database not encoded in UTF8 is refused at connect time, saying which
 * encoding it found: LATIN1 failed only at the first request with a name or member id
 * outside Latin-1 (a conversion error, as a BackendUnavailableError), and SQL_ASCII stores
 * bytes unchecked. UTF8 names go in and come back exactly.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { type Coordinator, UnsupportedError, connect } from "../../src/index.js";
import { type PgServer, startPostgres } from "../harness/postgres.js";

describe("postgres database encodings", { timeout: 60_000 }, () => {
  let server: PgServer;
  const coords: Coordinator[] = [];
  before(async () => {
    server = await startPostgres();
    const admin = new pg.Client({ connectionString: server.localUrl });
    await admin.connect();
    try {
      for (const encoding of ["LATIN1", "SQL_ASCII"]) {
        await admin.query(
          `CREATE DATABASE ${encoding.toLowerCase()} ENCODING '${encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
        );
      }
    } finally {
      await admin.end();
    }
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  for (const encoding of ["LATIN1", "SQL_ASCII"]) {
    it(`refuses a ${encoding} database at connect, naming its encoding`, async () => {
      await assert.rejects(
        connect(server.urlFor(encoding.toLowerCase()), { memberId: "成員-1" }),
        (e: unknown) =>
          e instanceof UnsupportedError && e.message.includes(`encoding is ${encoding}`) && /UTF8/.test(e.message),
      );
    });
  }

  it("keeps names and member ids outside Latin-1 exactly in a UTF8 database", async () => {
    const coord = await connect(server.url, { memberId: "成員-é-🦀", namespace: "ns-名前" });
    coords.push(coord);
    for (const name of ["é", "名前", "🔒-lock"]) {
      const held = await coord.lock(name).acquire({ fenceInfo: { host: "ホスト" }, timeoutMs: 5000 });
      const seen = await coord.inspect();
      assert.deepEqual(
        seen.locks.find((l) => l.name === name)?.holders.map((h) => h.memberId),
        ["成員-é-🦀"],
      );
      assert.deepEqual(seen.takeovers?.find((r) => r.name === name)?.fenceInfo, { host: "ホスト" });
      await held.release();
    }
  });
});
