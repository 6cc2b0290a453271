/**
 * Bad input: typed errors at once, never a hang or a silent no-op. Part of the conformance suite (`suite.ts`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type BatonError,
  ClosedError,
  type Guarantees,
  InvalidArgumentError,
  MissingGuaranteeError,
  connect,
} from "../../src/index.js";
import type { RecipeContext } from "./context.js";

export function badInputSuite(context: RecipeContext): void {
  const { guarantees, client, clients, ns, target } = context;

  describe("bad input", () => {
    it("rejects bad names at once with InvalidArgumentError", async () => {
      const [a] = await clients(ns(), 1);
      const bad: unknown[] = [
        "",
        42,
        null,
        undefined,
        {},
        "x".repeat(513),
        "é".repeat(300),
        "a\nb",
        "tab\there",
        "nul\u0000",
        "del\u007f",
        "\ud800",
      ];
      for (const name of bad) {
        assert.throws(() => a!.lock(name as string), InvalidArgumentError, `lock(${JSON.stringify(name)})`);
        assert.throws(() => a!.semaphore(name as string, { limit: 1 }), InvalidArgumentError);
        assert.throws(() => a!.group(name as string), InvalidArgumentError);
        assert.throws(() => a!.election(name as string), InvalidArgumentError);
      }
      assert.ok(a!.lock("x".repeat(512)), "512 bytes is allowed");
      assert.ok(a!.lock("ünïcödé ✓ / .. ' ; DROP TABLE"), "any other text is a fine name");
    });

    it("rejects bad options at once, and the lock still works afterwards", async () => {
      const [a] = await clients(ns(), 1);
      const lock = a!.lock("opts");
      for (const timeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, "10" as unknown as number]) {
        await assert.rejects(lock.acquire({ timeoutMs }), InvalidArgumentError, `timeoutMs ${timeoutMs}`);
      }
      await assert.rejects(lock.acquire({ mode: "writer" as "shared" }), InvalidArgumentError);
      await assert.rejects(lock.acquire({ signal: "nope" as unknown as AbortSignal }), InvalidArgumentError);
      await assert.rejects(lock.acquire("fast" as unknown as object), InvalidArgumentError);
      for (const limit of [0, -1, 1.5, Number.NaN, "3" as unknown as number]) {
        assert.throws(() => a!.semaphore("s", { limit }), InvalidArgumentError, `limit ${limit}`);
      }
      await assert.rejects(
        a!.group("g").join(() => 1),
        InvalidArgumentError,
      );
      await assert.rejects(a!.group("g").join(10n), InvalidArgumentError);
      const h = await lock.acquire({ timeoutMs: 1000 });
      assert.equal((await a!.inspect()).locks.find((l) => l.name === "opts")?.holders.length, 1);
      await h.release();
    });

    it("rejects bad connect() arguments with typed errors", async () => {
      await assert.rejects(connect("nosuch://x"), InvalidArgumentError);
      await assert.rejects(connect("not a url"), InvalidArgumentError);
      await assert.rejects(connect(target.url(), { ttlMs: 10 }), /ttlMs must be between 1000/);
      await assert.rejects(connect(target.url(), { ttlMs: Number.NaN }), InvalidArgumentError);
      await assert.rejects(connect(target.url(), { memberId: "" }), InvalidArgumentError);
      await assert.rejects(connect(target.url(), { namespace: "a\u0001" }), InvalidArgumentError);
      await assert.rejects(connect(target.url(), { bogusOption: 1 }), /unknown option "bogusOption"/);
      await assert.rejects(connect(target.url(), { require: ["teleportation" as "fifo"] }), /unknown guarantee/);
      const lacking = (Object.keys(guarantees) as (keyof Guarantees)[]).filter((k) => guarantees[k] === false);
      if (lacking.length > 0) {
        const error = await connect(target.url(), { require: lacking as never }).then(
          () => assert.fail("should refuse"),
          (e: unknown) => e,
        );
        assert.ok(error instanceof MissingGuaranteeError);
        assert.deepEqual(error.missing, lacking);
      }
      const ok = await connect(target.url(), { require: ["fencing"] });
      await ok.close();
    });

    it("refuses every use after close with ClosedError", async () => {
      const namespace = ns();
      const a = await client(namespace);
      const lock = a.lock("late");
      const h = await lock.acquire();
      await a.close();
      await a.close();
      assert.throws(() => a.lock("x"), ClosedError);
      await assert.rejects(lock.acquire(), ClosedError);
      await assert.rejects(lock.tryAcquire(), ClosedError);
      await assert.rejects(a.inspect(), ClosedError);
      assert.throws(() => a.group("g"), ClosedError);
      assert.throws(() => a.election("e"), ClosedError);
      assert.throws(() => a.semaphore("s", { limit: 2 }), ClosedError);
      assert.equal((await h.release()).status, "lost");
      assert.ok(h.signal.aborted);
      const err = h.signal.reason as BatonError;
      assert.ok(err.cause instanceof ClosedError);
    });
  });
}
