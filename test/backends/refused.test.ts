/**
 * Schemes Baton refuses on purpose (src/backends/refused.ts): `connect()` answers with a
 * typed error that says why and what to use instead, never "unknown scheme" or a hang.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, UnsupportedError } from "../../src/index.js";

describe("refused backends", () => {
  for (const [url, why] of [
    ["memcached://127.0.0.1:11211", /eviction.*two holders.*fencing token/s],
    ["memcache://127.0.0.1:11211", /eviction/],
    ["consul://127.0.0.1:8500", /not packaged.*could not be verified/],
  ] as const) {
    it(`refuses ${url} with the reason and the backends to use instead`, async () => {
      await assert.rejects(connect(url), (error: unknown) => {
        assert.ok(error instanceof UnsupportedError, String(error));
        assert.match(error.message, why);
        assert.match(error.message, /redis:\/\/.*postgres:\/\/.*mysql:\/\/.*etcd:\/\//);
        return true;
      });
    });
  }

  it("still answers an unknown scheme with the list of known ones", async () => {
    await assert.rejects(connect("nosuch://x"), /known schemes: .*mysql:\/\//);
  });
});
