/** Unit tests of the core's pure parts: durations, URL options, the docs table. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { connect, InvalidArgumentError, MissingGuaranteeError, parseDuration } from "../src/index.js";
import { guaranteesTable } from "../scripts/guarantees-table.js";

describe("core", () => {
  it("parses durations and rejects malformed ones", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("10s"), 10_000);
    assert.equal(parseDuration("2m"), 120_000);
    assert.equal(parseDuration("1.5s"), 1500);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.equal(parseDuration("250"), 250);
    for (const bad of ["", "s", "-1s", "10 parsecs", "1e3", "NaN"]) {
      assert.throws(() => parseDuration(bad), InvalidArgumentError, bad);
    }
  });

  it("takes options from the query string, with explicit options winning", async () => {
    const coord = await connect("memory://q?namespace=fromurl&ttl=3s&memberId=url-member");
    assert.equal(coord.namespace, "fromurl");
    assert.equal(coord.ttlMs, 3000);
    assert.equal(coord.memberId, "url-member");
    await coord.close();
    const explicit = await connect("memory://q?namespace=fromurl&ttl=3s", { namespace: "explicit", ttlMs: 2000 });
    assert.equal(explicit.namespace, "explicit");
    assert.equal(explicit.ttlMs, 2000);
    await explicit.close();
    await assert.rejects(connect("memory://q?require=acrossHosts,fencing"), (error: unknown) => {
      assert.ok(error instanceof MissingGuaranteeError);
      assert.deepEqual(error.missing, ["acrossHosts"]);
      assert.match(error.message, /backend "memory" does not guarantee: acrossHosts/);
      return true;
    });
    await assert.rejects(connect("memory://q", { require: { crashReleaseMs: 100 } }), /crashReleaseMs<=100/);
    await assert.rejects(connect("memory://q?ttl=soon"), InvalidArgumentError);
    // A host list is for the backends that declare one (etcd, ZooKeeper, Redis Sentinel).
    await assert.rejects(
      connect("memory://a:1,b:2"),
      /names several hosts; the memory backend takes one \(host lists are for etcd:\/\//,
    );
    await assert.rejects(connect("postgres://u@a:1,b:2/db"), /the postgres backend takes one/);
    // ... and is still given to those as their endpoints option.
    await assert.rejects(connect("etcd://127.0.0.1:1,127.0.0.1:2", { endpoints: 3 }), /endpoints/);
  });

  it("uses BATON_URL when no URL is given", async () => {
    const saved = process.env.BATON_URL;
    process.env.BATON_URL = "memory://from-env";
    try {
      const coord = await connect();
      assert.equal(coord.backend, "memory");
      await coord.close();
    } finally {
      if (saved === undefined) delete process.env.BATON_URL;
      else process.env.BATON_URL = saved;
    }
  });

  it("keeps docs/guarantees.md in step with the backends' declarations", () => {
    const committed = readFileSync(new URL("../docs/guarantees.md", import.meta.url), "utf8");
    assert.equal(committed, guaranteesTable(), "run `npm run docs:guarantees`");
  });
});
