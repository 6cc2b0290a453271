/**
 * The mysql backend against a private MariaDB server (see test/harness/mariadb.ts): the
 * whole conformance suite, then what only this backend has.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, it } from "node:test";
import { galeraReason } from "../../src/backends/mysql/control.js";
import { nameHash } from "../../src/backends/mysql/schema.js";
import {
  type Coordinator,
  connect,
  InvalidArgumentError,
  InvalidStateError,
  UnsupportedError,
} from "../../src/index.js";
import { waitForWaiters } from "../conformance/helpers.js";
import { conformance } from "../conformance/suite.js";
import { sharedServer } from "./fixtures/backend-suite.js";
import { startMariadb } from "../harness/mariadb.js";

const shared = sharedServer(() => startMariadb());
const ensureServer = shared.ensure;

conformance({
  name: "mysql",
  url: () => shared.current()?.url ?? "mysql://127.0.0.1:1/unstarted",
  shortTtlMs: 4000,
  contention: { clients: 20, rounds: 30 },
  setup: async () => {
    await ensureServer();
  },
});

describe("mysql backend", () => {
  const open: Coordinator[] = [];
  const client = async (options: Record<string, unknown> = {}) => {
    const coord = await connect((await ensureServer()).url, { namespace: `m-${randomUUID().slice(0, 8)}`, ...options });
    open.push(coord);
    return coord;
  };
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
  });

  it("refuses a Galera node at connect time, saying why", async () => {
    const galera = await startMariadb({ args: ["--wsrep-on=ON", "--wsrep-provider=none", "--binlog-format=ROW"] });
    try {
      await assert.rejects(connect(galera.url), (error: unknown) => {
        assert.ok(error instanceof UnsupportedError, String(error));
        assert.match(error.message, /Galera.*does not replicate GET_LOCK/);
        return true;
      });
    } finally {
      await galera.stop();
    }
  });

  it("reads Galera from the wsrep variables, and nothing else", () => {
    for (const [variables, galera] of [
      [{ wsrep_on: "ON", wsrep_provider: "/usr/lib/galera/libgalera_smm.so" }, true],
      [{ wsrep_on: "ON" }, true],
      [{ wsrep_on: "OFF", wsrep_provider: "none" }, false],
      [{}, false],
    ] as const) {
      assert.equal(galeraReason(variables) !== null, galera, JSON.stringify(variables));
    }
  });

  it("detects two names sharing one hash instead of letting them exclude each other", async () => {
    const coord = await client();
    const server = await ensureServer();
    // A real SHA-256 collision cannot be produced: plant a registry row claiming the hash.
    await server.query(
      "INSERT INTO baton.baton_queues (qkey, namespace, kind, name) VALUES (?, ?, 'lock', 'impostor')",
      [nameHash(coord.namespace, "lock", "victim"), coord.namespace],
    );
    await assert.rejects(coord.lock("victim").acquire({ timeoutMs: 2000 }), InvalidStateError);
    assert.equal((await coord.inspect()).locks.length, 0, "nothing stays queued or held");
  });

  it("keeps waits server-side: a waiter's connection sleeps in GET_LOCK, with no statements while it waits", async () => {
    const a = await client();
    const b = await client({ namespace: a.namespace });
    const held = await a.lock("sleep").acquire();
    const waiting = b.lock("sleep").acquire({ timeoutMs: 20_000 });
    await waitForWaiters(a, "sleep", 1);
    const server = await ensureServer();
    const sleeping = await server.query<{ state: string }>(
      "SELECT state FROM information_schema.processlist WHERE info LIKE 'CALL baton_%' OR state = 'User lock'",
    );
    assert.ok(
      sleeping.some((row) => row.state === "User lock"),
      `a connection waits in GET_LOCK: ${JSON.stringify(sleeping)}`,
    );
    await held.release();
    await (await waiting).release();
  });

  it("refuses a bad prefix, or a URL without a database or a host, with InvalidArgumentError", async () => {
    const url = (await ensureServer()).url;
    await assert.rejects(connect(`${url}?prefix=Bad-Prefix`), InvalidArgumentError);
    await assert.rejects(connect(url.replace(/\/baton$/, "/")), InvalidArgumentError);
    await assert.rejects(connect(`${url}?maxConnections=1`), InvalidArgumentError);
    // No host and no socket: refused before anything reaches the network.
    await assert.rejects(connect("mysql:$"), InvalidArgumentError);
    await assert.rejects(connect("mysql:///baton"), InvalidArgumentError);
  });

  it("answers mariadb:// like mysql://", async () => {
    const coord = await connect((await ensureServer()).url.replace(/^mysql:/, "mariadb:"));
    open.push(coord);
    assert.equal(coord.backend, "mysql");
    const handle = await coord.lock("alias").acquire();
    assert.ok(handle.token > 0n);
    await handle.release();
  });
});
