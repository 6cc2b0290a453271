/**
 * Connection ids across a server restart, on a private MariaDB server. The server numbers
 * connections from 1 again after a restart, while the `lanes` table keeps the rows of the
 * sessions that were alive before it. A heartbeat that ends such a session kills the
 * connections its rows name: found while analysing the 10-minute chaos run (about 50
 * restarts), where those ids could belong to another client's connections by then.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import mysql from "mysql2/promise";
import { type Coordinator, connect } from "../../src/index.js";
import { waitFor } from "../conformance/helpers.js";
import { Holder } from "../harness/holder.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";

const NAMESPACE = "ids";

describe("mysql connection ids after a restart", { timeout: 90_000 }, () => {
  let server: MariadbServer;
  const coords: Coordinator[] = [];
  const others: mysql.Connection[] = [];

  before(async () => {
    server = await startMariadb();
  });

  after(async () => {
    for (const c of others) c.destroy();
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  it("ending a session from before a restart kills no connection that got one of its lanes' ids", async () => {
    const holder = new Holder(`${server.url}?namespace=${NAMESPACE}`, "x", 2000);
    try {
      await holder.next((e) => e.event === "acquired", "the holder to acquire");
    } finally {
      await holder.stop();
    }
    const [lane] = await server.query<{ conn: number; session_id: string }>(
      "SELECT conn, session_id FROM baton.baton_lanes",
    );
    assert.ok(lane, "the holder's lane is registered");
    await server.kill();
    await server.restart();
    // Another application's connections, numbered from the start again: one gets the id.
    for (let i = 0; i < 64 && !others.some((c) => c.threadId === Number(lane.conn)); i++) {
      const other = await mysql.createConnection({ host: server.host, port: server.port, user: "root" });
      other.on("error", () => {});
      others.push(other);
    }
    const namesake = others.find((c) => c.threadId === Number(lane.conn));
    assert.ok(namesake, `a new connection got id ${lane.conn}: ${others.map((c) => c.threadId).join(",")}`);
    // A live coordinator's heartbeats end the holder's session (expired by now).
    const coord = await connect(server.url, { namespace: NAMESPACE, ttlMs: 2000 });
    coords.push(coord);
    await (await coord.lock("y").acquire()).release();
    await waitFor(
      async () =>
        (await server.query("SELECT 1 FROM baton.baton_sessions WHERE id = ?", [lane.session_id])).length === 0,
      "the holder's session to be ended",
    );
    // The heartbeat that ended it kills before the next one renews: wait for that renewal.
    const lease = async () =>
      String((await server.query<{ e: string }>("SELECT MAX(expires_at) AS e FROM baton.baton_sessions"))[0]?.e);
    const ended = await lease();
    await waitFor(async () => (await lease()) !== ended, "the next heartbeat");
    const [row] = (await namesake.query("SELECT 1 AS alive")) as unknown as [{ alive: number }[]];
    assert.equal(row[0]?.alive, 1);
  });
});
