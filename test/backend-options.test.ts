/**
 * Every documented backend-specific option is honoured the same from the URL's query string
 * (where values are text) and from the options object: `connect()` hands the options to a
 * capturing backend, and the etcd and postgres parsers must make the same settings of both.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { parseConfig } from "../src/backends/etcd/config.js";
import { etcdBackend } from "../src/backends/etcd/definition.js";
import { parseSettings } from "../src/backends/postgres/options.js";
import { postgresBackend } from "../src/backends/postgres/definition.js";
import type { DriverContext } from "../src/core/driver.js";
import { type BackendDefinition, connect, InvalidArgumentError, registerBackend } from "../src/index.js";

/** A backend with `like`'s options whose driver only records what it was given. */
function capturing(like: BackendDefinition): { scheme: string; contexts: DriverContext[] } {
  const scheme = `capture-${like.name}`;
  const contexts: DriverContext[] = [];
  registerBackend({
    ...like,
    name: scheme,
    schemes: [scheme],
    load: async () => ({
      createDriver: async (context) => {
        contexts.push(context);
        throw new Error("captured");
      },
    }),
  });
  return { scheme, contexts };
}

/** The options `connect()` passes on, from the query string and from the object. */
async function bothWays(
  target: { scheme: string; contexts: DriverContext[] },
  rest: string,
  query: Record<string, string>,
  object: Record<string, unknown>,
): Promise<[DriverContext, DriverContext]> {
  const url = new URL(`${target.scheme}://${rest}`);
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
  await assert.rejects(connect(url.href), /captured/);
  await assert.rejects(connect(`${target.scheme}://${rest}`, object), /captured/);
  const [fromQuery, fromObject] = target.contexts.splice(-2) as [DriverContext, DriverContext];
  return [fromQuery, fromObject];
}

const dir = mkdtempSync(join(tmpdir(), "baton-options-"));
const pem = (name: string) => {
  const path = join(dir, name);
  writeFileSync(path, `-----BEGIN ${name}-----\n-----END ${name}-----\n`);
  return path;
};

describe("backend options, from the query string and from the options object", () => {
  after(() => rmSync(dir, { recursive: true, force: true }));
  const etcd = capturing(etcdBackend);
  const postgres = capturing(postgresBackend);

  it("etcd: every option gives the same client settings both ways", async () => {
    const [ca, cert, key] = [pem("ca"), pem("cert"), pem("key")];
    const rows: [Record<string, string>, Record<string, unknown>][] = [
      [{ endpoints: "127.0.0.2:2379,127.0.0.3:2380" }, { endpoints: ["127.0.0.2:2379", "127.0.0.3:2380"] }],
      [{ requestTimeoutMs: "3000" }, { requestTimeoutMs: 3000 }],
      [
        { username: "u", password: "p" },
        { username: "u", password: "p" },
      ],
      [
        { ca, cert, key },
        { ca, cert, key },
      ],
    ];
    for (const [query, object] of rows) {
      const contexts = await bothWays(etcd, "127.0.0.1:2379", query, object);
      const [a, b] = contexts.map((c) => parseConfig({ ...c, url: new URL("etcds://127.0.0.1:2379") }));
      assert.deepEqual(a, b, JSON.stringify(query));
      assert.notDeepEqual(a, parseConfig({ ...contexts[0], url: new URL("etcds://127.0.0.1:2379"), options: {} }));
    }
  });

  it("postgres: every option gives the same client settings both ways", async () => {
    const [ca, cert, key] = [pem("root"), pem("pgcert"), pem("pgkey")];
    const rows: [Record<string, string>, Record<string, unknown>][] = [
      [{ schema: "other" }, { schema: "other" }],
      [{ maxConnections: "4" }, { maxConnections: 4 }],
      [{ connectTimeoutMs: "2500" }, { connectTimeoutMs: 2500 }],
      [{ host: "/var/run/postgresql" }, { host: "/var/run/postgresql" }],
      [
        { sslmode: "verify-full", sslrootcert: ca, sslcert: cert, sslkey: key },
        { sslmode: "verify-full", sslrootcert: ca, sslcert: cert, sslkey: key },
      ],
      [{ ssl: "true" }, { ssl: true }],
      [{ ssl: "false" }, { ssl: false }],
    ];
    for (const [query, object] of rows) {
      const contexts = await bothWays(postgres, "u:p@127.0.0.1:5432/db", query, object);
      const [a, b] = contexts.map((c) => parseSettings({ ...c, url: new URL("postgres://u:p@127.0.0.1:5432/db") }));
      assert.deepEqual(a, b, JSON.stringify(query));
      const plain = parseSettings({ ...contexts[0], url: new URL("postgres://u:p@127.0.0.1:5432/db"), options: {} });
      assert.notDeepEqual(a, plain, `${JSON.stringify(query)} changed nothing`);
    }
    assert.throws(
      () =>
        parseSettings({
          url: new URL("postgres://h/db"),
          href: "postgres://h/db",
          memberId: "m",
          namespace: "",
          ttlMs: 10_000,
          options: { ssl: "yes" },
        }),
      InvalidArgumentError,
    );
  });

  it("refuses options the backend does not take, from either source", async () => {
    await assert.rejects(connect(`${etcd.scheme}://h:1?schema=x`), /unknown option "schema"/);
    await assert.rejects(connect(`${etcd.scheme}://h:1`, { schema: "x" }), /unknown option "schema"/);
  });
});
