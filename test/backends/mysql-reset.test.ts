/**
 * A MySQL connection reset (RST) while a statement is in flight, on a private MariaDB
 * server through a TCP proxy. mysql2 hands that error to the statement's callback only (no
 * 'error' or 'end' event), and closes the connection; the 10-minute chaos run found
 * coordinators that went on treating such a connection as alive and failed every
 * acquisition for minutes ("Can't add new command when connection is in closed state").
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect } from "../../src/index.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";
import { type Proxy as TcpProxy, startProxy } from "../harness/proxy.js";

describe("mysql connection reset mid-statement", { timeout: 60_000 }, () => {
  let server: MariadbServer;
  let proxy: TcpProxy;
  let coord: Coordinator | undefined;

  before(async () => {
    server = await startMariadb();
    proxy = await startProxy({ host: server.host, port: server.port });
  });

  after(async () => {
    server.resume();
    await coord?.close();
    await proxy.close();
    await server.stop();
  });

  it("a coordinator whose control connection was reset under a statement reconnects and grants again", async () => {
    const url = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
    coord = await connect(url, { namespace: "reset", ttlMs: 2000 });
    const first = await coord.lock("r").acquire({ timeoutMs: 5000 });
    await first.release();
    // A stopped server answers nothing: the inspection's statement stays in flight on the
    // control connection until the reset ends it.
    server.pause();
    const inspecting = coord.inspect().then(
      () => "answered",
      (error: Error) => error.name,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.reset();
    server.resume();
    assert.notEqual(await inspecting, "answered");
    // Each attempt may fail while the coordinator notices; it must not keep failing. Wait
    // out a TTL too: the session's heartbeats run on the control connection.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const deadline = Date.now() + 15_000;
    const errors: string[] = [];
    for (;;) {
      try {
        await coord.inspect();
        const handle = await coord.lock("r").acquire({ timeoutMs: 2000 });
        await handle.release();
        break;
      } catch (error) {
        errors.push(`${(error as Error).name}: ${(error as Error).message}`);
        if (Date.now() > deadline) assert.fail(`no grant within 15 s: ${errors.slice(-3).join("; ")}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.ok(errors.length < 20, `${errors.length} failed attempts before a grant: ${errors.slice(0, 3).join("; ")}`);
  });
});
