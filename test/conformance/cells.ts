/**
 * Cells (durable versioned values with compare-and-set) and multi-name locks. Skipped, by
 * capability, on a backend whose driver has no cells.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type CellChange,
  ConflictError,
  type Coordinator,
  FencedError,
  InvalidArgumentError,
  MAX_CELL_VALUE_BYTES,
  TimeoutError,
  AbortError,
  connect,
  formatStatus,
} from "../../src/index.js";
import { Puppet } from "../fixtures/puppets.js";
import type { SuiteContext } from "./context.js";
import { cellsCheck, take, waitFor } from "./helpers.js";

/** Registers the cells and multi-lock conformance tests. */
export function cellsSuite(suite: SuiteContext, url: () => string): void {
  // Clients are closed after each test: the race alone opens 20, and a server's
  // connection limit must not run out for the tests that follow.
  const mine: Coordinator[] = [];
  const ctx: SuiteContext = {
    ...suite,
    client: async (namespace, options) => {
      const coord = await suite.client(namespace, options);
      mine.push(coord);
      return coord;
    },
  };
  const closeMine = async () => {
    await Promise.all(mine.splice(0).map((c) => c.close()));
  };
  const needCells = cellsCheck(url, "backend has no cells");

  describe("cells", () => {
    afterEach(closeMine);
    it("20 clients race the same transition for ten rounds: exactly one wins each round", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const coords = await Promise.all(Array.from({ length: 20 }, () => ctx.client(namespace)));
      const cells = coords.map((c) => c.cell<string>("volume"));
      let last = (await cells[0]!.set("s0")).version;
      for (let round = 0; round < 10; round++) {
        const to = `s${round + 1}`;
        const results = await Promise.allSettled(cells.map((cell) => cell.transition(`s${round}`, to)));
        const won = results.filter((r) => r.status === "fulfilled");
        assert.equal(won.length, 1, `round ${round}: exactly one winner`);
        const version = (won[0] as PromiseFulfilledResult<{ version: bigint }>).value.version;
        assert.ok(version > last, `round ${round}: version ${version} > ${last}`);
        for (const r of results) {
          if (r.status === "fulfilled") continue;
          assert.ok(r.reason instanceof ConflictError, `loser got ${String(r.reason)}`);
          assert.equal(r.reason.code, "CONFLICT");
          assert.deepEqual(r.reason.current, { value: to, version }, "the loser sees the winner's state");
        }
        last = version;
      }
      assert.deepEqual(await cells[7]!.get(), { value: "s10", version: last });
    });

    it("ifVersion refuses a stale writer and keeps the winner's value", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const [a, b] = [await ctx.client(namespace), await ctx.client(namespace)];
      const cell = a.cell("cfg");
      await assert.rejects(cell.set({ n: 0 }, { ifVersion: 5n }), (e: ConflictError) => e.current === null);
      const v1 = (await cell.set({ n: 1 }, { ifVersion: 0 })).version;
      await assert.rejects(cell.set({ n: 9 }, { ifVersion: 0n }), ConflictError, "ifVersion 0: only if absent");
      const seen = await b.cell("cfg").get();
      assert.deepEqual(seen, { value: { n: 1 }, version: v1 });
      const v2 = (await cell.set({ n: 2 }, { ifVersion: v1 })).version;
      assert.ok(v2 > v1);
      await assert.rejects(b.cell("cfg").set({ n: 3 }, { ifVersion: seen!.version }), (e: unknown) => {
        assert.ok(e instanceof ConflictError);
        assert.deepEqual(e.current, { value: { n: 2 }, version: v2 });
        return true;
      });
      assert.deepEqual(await b.cell("cfg").get(), { value: { n: 2 }, version: v2 });
      await assert.rejects(cell.delete({ ifVersion: v1 }), ConflictError);
      const removed = await cell.delete({ ifVersion: v2 });
      assert.ok(removed.deleted && removed.version! > v2);
      assert.equal(await b.cell("cfg").get(), null);
    });

    it("versions strictly increase across delete and re-create; objects compare by content", async (t) => {
      if (!(await needCells(t))) return;
      const coord = await ctx.client(ctx.ns());
      const cell = coord.cell("v");
      assert.equal(await cell.get(), null);
      assert.deepEqual(await cell.delete(), { deleted: false, version: null });
      const v1 = (await cell.set({ b: 1, a: [1, { d: 2, c: 3 }] })).version;
      const removed = await cell.delete();
      assert.equal(removed.deleted, true);
      assert.ok(removed.version! > v1, "the delete has a higher version");
      assert.equal(await cell.get(), null);
      await assert.rejects(cell.transition("x", "y"), (e: ConflictError) => e.current === null);
      const v3 = (await cell.set({ a: [1, { c: 3, d: 2 }], b: 1 }, { ifVersion: 0n })).version;
      assert.ok(v3 > removed.version!, "a re-created cell continues above its old versions");
      const v4 = (await cell.transition({ b: 1, a: [1, { d: 2, c: 3 }] }, "next")).version;
      assert.ok(v4 > v3);
      assert.deepEqual(await cell.get(), { value: "next", version: v4 });
    });

    it("a fenced write with an older token than one seen is refused, a newer one accepted", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const [a, b] = [await ctx.client(namespace), await ctx.client(namespace)];
      const old = await a.lock("disk").acquire();
      const oldToken = old.token;
      await old.release();
      const fresh = await b.lock("disk").acquire();
      assert.ok(fresh.token > oldToken);
      const v1 = (await b.cell("disk").set("new owner", { fence: fresh.token })).version;
      await assert.rejects(a.cell("disk").set("stale owner", { fence: oldToken }), (e: unknown) => {
        assert.ok(e instanceof FencedError, String(e));
        assert.equal(e.code, "FENCED");
        assert.equal(e.fence, oldToken);
        assert.equal(e.seen, fresh.token);
        assert.deepEqual(e.current, { value: "new owner", version: v1 });
        return true;
      });
      await assert.rejects(a.cell("disk").transition("new owner", "x", { fence: oldToken }), FencedError);
      const v2 = (await b.cell("disk").set("again", { fence: fresh.token })).version;
      assert.ok(v2 > v1, "an equal fence is accepted");
      await fresh.release();
      const newer = await a.lock("disk").acquire();
      assert.ok((await a.cell("disk").set("newest", { fence: newer.token })).version > v2);
      await a.cell("disk").delete({ fence: newer.token });
      await assert.rejects(b.cell("disk").set("ghost", { fence: fresh.token }), FencedError, "fence survives delete");
      await newer.release();
      assert.equal(await b.cell("disk").get(), null);
    });

    it("a cell written by a coordinator that then closed is there for the next one", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const writer = await connect(url(), { namespace });
      const { version } = await writer.cell("durable").set({ state: "in-use" });
      await writer.close();
      const reader = await ctx.client(namespace);
      assert.deepEqual(await reader.cell("durable").get(), { value: { state: "in-use" }, version });
    });

    it("a cell written by a process that was then SIGKILLed is still there", async (t) => {
      if (!(await needCells(t))) return;
      if (!ctx.guarantees.acrossProcesses) return t.skip("backend is not shared across processes");
      const namespace = ctx.ns();
      const puppet = new Puppet(url());
      const reply = await puppet.do("cellSet", { namespace, name: "killed", value: ["attached", 3] });
      puppet.kill("SIGKILL");
      await puppet.exited();
      const reader = await ctx.client(namespace);
      assert.deepEqual(await reader.cell("killed").get(), {
        value: ["attached", 3],
        version: BigInt(String(reply.version)),
      });
    });

    it("watch() starts with the current state, sees later versions in increasing order, ends on return()", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const [a, b] = [await ctx.client(namespace), await ctx.client(namespace)];
      const first = (await a.cell<string>("w").set("v0")).version;
      const watch = b.cell<string>("w").watch();
      const initial = await take(watch, 1);
      assert.deepEqual(initial, [{ type: "set", value: "v0", version: first }]);
      const written = new Map<bigint, CellChange<string>>();
      for (let i = 1; i <= 5; i++) {
        const { version } = await a.cell<string>("w").set(`v${i}`);
        written.set(version, { type: "set", value: `v${i}`, version });
      }
      const removed = await a.cell("w").delete();
      written.set(removed.version!, { type: "delete", version: removed.version! });
      const { version: final } = await a.cell<string>("w").set("end");
      written.set(final, { type: "set", value: "end", version: final });
      const seen: CellChange<string>[] = [];
      for await (const change of watch) {
        seen.push(change);
        if (change.version >= final) break;
      }
      for (let i = 0; i < seen.length; i++) {
        const change = seen[i]!;
        assert.deepEqual(change, written.get(change.version), "each change is a committed write");
        if (i > 0) assert.ok(change.version > seen[i - 1]!.version, "versions increase");
      }
      assert.deepEqual(seen.at(-1), { type: "set", value: "end", version: final }, "the latest state is delivered");
      assert.deepEqual(await watch.next(), { value: undefined, done: true }, "ended by break/return()");
    });

    it("watch() ends when its signal aborts (even before it began) and when the coordinator closes", async (t) => {
      if (!(await needCells(t))) return;
      const namespace = ctx.ns();
      const coord = await ctx.client(namespace);
      await coord.cell("e").set(1);
      const aborted = coord.cell("e").watch({ signal: AbortSignal.abort() });
      assert.deepEqual(await aborted.next(), { value: undefined, done: true });
      const controller = new AbortController();
      const watch = coord.cell("e").watch({ signal: controller.signal });
      assert.equal((await watch.next()).value?.type, "set");
      const pending = watch.next();
      controller.abort();
      assert.deepEqual(await pending, { value: undefined, done: true });
      const closing = await connect(url(), { namespace });
      const open = closing.cell("e").watch();
      assert.equal((await open.next()).value?.type, "set");
      const waiting = open.next();
      await closing.close();
      assert.deepEqual(await waiting, { value: undefined, done: true });
      assert.throws(() => closing.cell("e"), /closed/);
      assert.throws(() => coord.cell("e").watch({ signal: "no" as unknown as AbortSignal }), InvalidArgumentError);
    });

    it("a cell and a lock of one name never interfere; inspect() and status list cells", async (t) => {
      if (!(await needCells(t))) return;
      const coord = await ctx.client(ctx.ns());
      await using _held = await coord.lock("same").acquire();
      await coord.cell("same").set(1);
      assert.deepEqual((await coord.cell("same").get())?.value, 1);
      const info = await coord.inspect();
      assert.equal(info.locks.length, 1);
      const version = (await coord.cell("same").get())!.version;
      assert.deepEqual(info.cells, [{ name: "same", value: 1, version }], "inspect() lists cells");
      assert.deepEqual(JSON.parse(JSON.stringify(info)).cells, [{ name: "same", value: 1, version: String(version) }]);
      assert.match(formatStatus(info), /cells:\n\s*CELL\s+VERSION\s+VALUE\n\s*same\s+\d+\s+1/);
    });

    it("bad input gets typed errors: oversized, non-JSON, bad versions, bad names", async (t) => {
      if (!(await needCells(t))) return;
      const coord = await ctx.client(ctx.ns());
      const cell = coord.cell("bad");
      const big = "x".repeat(MAX_CELL_VALUE_BYTES);
      await assert.rejects(cell.set(big), /65538 bytes as JSON; the limit is 65536/);
      const cases: [unknown, RegExp][] = [
        [Number.NaN, /finite numbers/],
        [{ a: undefined }, /\.a is undefined/],
        [() => 1, /a function/],
        [new Date(), /is a Date/],
        [10n, /bigint|10/],
        [[1, Number.POSITIVE_INFINITY], /\[1\] is Infinity/],
      ];
      for (const [value, message] of cases) {
        await assert.rejects(
          cell.set(value),
          (e: unknown) => e instanceof InvalidArgumentError && message.test(e.message),
        );
      }
      for (const ifVersion of [-1, 1.5, "3", 2n ** 63n]) {
        await assert.rejects(cell.set(1, { ifVersion: ifVersion as bigint }), InvalidArgumentError);
      }
      await assert.rejects(cell.delete({ ifVersion: 0n }), InvalidArgumentError);
      await assert.rejects(cell.set(1, { fence: -2n }), InvalidArgumentError);
      await assert.rejects(cell.transition(Number.NaN, 1), InvalidArgumentError);
      assert.throws(() => coord.cell(""), InvalidArgumentError);
      assert.throws(() => coord.cell(7 as unknown as string), InvalidArgumentError);
      assert.equal(await cell.get(), null, "nothing was written");
    });
  });

  describe("multi-name locks", () => {
    afterEach(closeMine);
    it("[a, b] against [b, a], 200 times, never deadlocks and never overlaps", async () => {
      const namespace = ctx.ns();
      const [x, y] = [await ctx.client(namespace), await ctx.client(namespace)];
      let inside = 0;
      let overlaps = 0;
      const loop = async (coord: Coordinator, names: string[]) => {
        for (let i = 0; i < 200; i++) {
          const handle = await coord.locks(names, { timeoutMs: 30_000 });
          if (++inside > 1) overlaps++;
          assert.deepEqual(handle.names, ["a", "b"]);
          await new Promise((resolve) => setImmediate(resolve));
          inside--;
          await handle.release();
        }
      };
      await Promise.all([loop(x, ["a", "b"]), loop(y, ["b", "a"])]);
      assert.equal(overlaps, 0);
    });

    it("gives a token per name and one signal that aborts when any lock is lost", async () => {
      const coord = await ctx.client(ctx.ns(), { ttlMs: ctx.shortTtlMs });
      const handle = await coord.locks(["p", "q"]);
      assert.ok(handle.held);
      assert.equal(handle.tokens.size, 2);
      assert.equal(handle.token("q"), handle.tokens.get("q"));
      assert.throws(() => handle.token("r"), InvalidArgumentError);
      assert.equal(handle.signal.aborted, false);
      await ctx.loseSession(coord);
      await waitFor(() => handle.signal.aborted, "the multi-lock's signal to abort", ctx.shortTtlMs * 4);
      assert.equal(handle.held, false);
      await assert.doesNotReject(handle.release());
      await assert.doesNotReject(handle.release());
    });

    it("a timeout or abort leaves nothing held", async () => {
      const namespace = ctx.ns();
      const [holder, asker, probe] = [
        await ctx.client(namespace),
        await ctx.client(namespace),
        await ctx.client(namespace),
      ];
      const blocking = await holder.lock("n2").acquire();
      await assert.rejects(asker.locks(["n2", "n1", "n3"], { timeoutMs: 300 }), (e: unknown) => {
        assert.ok(e instanceof TimeoutError);
        assert.equal(e.timeoutMs, 300);
        assert.match(e.message, /waiting for "n2"; nothing is held/);
        return true;
      });
      const abort = new AbortController();
      const pending = asker.locks(["n1", "n2"], { signal: abort.signal });
      setTimeout(() => abort.abort(new Error("stop")), 100);
      await assert.rejects(pending, AbortError);
      const free = await probe.lock("n1").tryAcquire();
      assert.ok(free, "n1 was released after the timeout");
      await free.release();
      await blocking.release();
      const all = await probe.locks(["n3", "n2", "n1"], { timeoutMs: 5000 });
      await all.release();
      const info = await probe.inspect();
      assert.equal(info.locks.filter((l) => l.holders.length > 0).length, 0);
    });

    it("bad names get typed errors", async () => {
      const coord = await ctx.client(ctx.ns());
      for (const names of [[], ["a", "a"], ["a", ""], "a", [1]]) {
        await assert.rejects(coord.locks(names as string[]), InvalidArgumentError);
      }
      await assert.rejects(coord.locks(["a"], { timeoutMs: -1 }), InvalidArgumentError);
    });
  });
}
