/**
 * Every core option of `connect()` means the same in the URL's query string and in the
 * options object, on every backend.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { type ConnectOptions, connect, GUARANTEE_NAMES, MissingGuaranteeError } from "../../src/index.js";
import type { SuiteContext } from "./context.js";

/** Registers the options tests; `url` is the backend's URL without a query string. */
export function optionsSuite(ctx: SuiteContext, url: () => string): void {
  const withQuery = (query: Record<string, string>) => {
    const u = new URL(url());
    for (const [key, value] of Object.entries(query)) u.searchParams.set(key, value);
    return u.href;
  };
  const missing = GUARANTEE_NAMES.filter((n) => !ctx.guarantees[n]);
  const present = GUARANTEE_NAMES.filter((n) => ctx.guarantees[n]);

  describe("connect options, from the query string and from the options object", () => {
    // Each row: the query-string form, the options-object form, and what must hold.
    const table: [string, Record<string, string>, ConnectOptions, number][] = [
      ["ttl", { ttl: "3s" }, { ttl: "3s" }, 3000],
      ["ttlMs", { ttlMs: "2500" }, { ttlMs: 2500 }, 2500],
      ["ttl in ms", { ttl: "1500ms" }, { ttl: "1500ms" }, 1500],
    ];
    for (const [name, query, object, expected] of table) {
      it(`honours ${name} both ways`, async () => {
        for (const coord of [await connect(withQuery(query)), await connect(url(), object)]) {
          try {
            assert.equal(coord.ttlMs, expected, name);
          } finally {
            await coord.close();
          }
        }
      });
    }

    it("honours memberId and namespace both ways: a lock held through one is seen through the other", async () => {
      const namespace = ctx.ns();
      const member = `opt-${randomUUID().slice(0, 8)}`;
      const viaQuery = await connect(withQuery({ namespace, memberId: member }));
      const viaObject = await connect(url(), { namespace, memberId: `${member}-2` });
      const elsewhere = await connect(url(), { namespace: `${namespace}-other` });
      try {
        assert.equal(viaQuery.namespace, namespace);
        assert.equal(viaQuery.memberId, member);
        assert.equal(viaObject.namespace, namespace);
        assert.equal(viaObject.memberId, `${member}-2`);
        const held = await viaQuery.lock("opt").acquire();
        assert.equal(await viaObject.lock("opt").tryAcquire(), null, "same namespace: the lock is busy");
        const other = await elsewhere.lock("opt").tryAcquire();
        assert.ok(other, "another namespace: the same name is free");
        await other.release();
        const info = await viaObject.inspect();
        assert.equal(info.locks.find((l) => l.name === "opt")?.holders[0]?.memberId, member);
        await held.release();
      } finally {
        await Promise.all([viaQuery.close(), viaObject.close(), elsewhere.close()]);
      }
    });

    it("honours require both ways, as a list or a comma-separated string", async () => {
      const forms = [
        () => connect(withQuery({ require: present.join(",") })),
        () => connect(url(), { require: present }),
        () => connect(url(), { require: present.join(",") }),
      ];
      for (const open of forms) await (await open()).close();
      if (missing.length === 0) return;
      const refusals = [
        () => connect(withQuery({ require: missing.join(",") })),
        () => connect(url(), { require: missing }),
        () => connect(url(), { require: missing.join(",") }),
      ];
      for (const open of refusals) await assert.rejects(open(), MissingGuaranteeError);
    });

    it("treats an option given as undefined as not given, and refuses ttl with ttlMs", async () => {
      const coord = await connect(withQuery({ ttl: "4s" }), { ttlMs: undefined, namespace: undefined });
      try {
        assert.equal(coord.ttlMs, 4000);
        assert.equal(coord.namespace, "");
      } finally {
        await coord.close();
      }
      await assert.rejects(connect(url(), { ttl: "4s", ttlMs: 4000 }), /both ttl and ttlMs/);
      await assert.rejects(connect(url(), { ttl: 4000 as unknown as string }), /ttl must be a duration string/);
    });
  });
}
