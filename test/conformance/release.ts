/**
 * Every release-like call (release, leave, resign, close, and `Symbol.asyncDispose` on each
 * handle) is idempotent and never throws: called twice, concurrently, after the
 * coordinator's `close()`, or by `await using` after an explicit call.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Coordinator } from "../../src/index.js";
import type { SuiteContext } from "./context.js";

interface Releasable extends AsyncDisposable {
  release(): Promise<unknown>;
}

interface HandleKind {
  readonly name: string;
  /** Takes the thing; `release` is its release-like call. */
  take(coord: Coordinator): Promise<Releasable>;
  /** Whether another client sees it free again. */
  freed(other: Coordinator): Promise<boolean>;
}

const kinds: readonly HandleKind[] = [
  {
    name: "lock handle",
    take: async (c) => {
      const h = await c.lock("rel").acquire();
      return { release: () => h.release(), [Symbol.asyncDispose]: () => h[Symbol.asyncDispose]() };
    },
    freed: async (o) => {
      const h = await o.lock("rel").tryAcquire();
      await h?.release();
      return h !== null;
    },
  },
  {
    name: "semaphore permit",
    take: async (c) => {
      const h = await c.semaphore("rel", { limit: 1 }).acquire();
      return { release: () => h.release(), [Symbol.asyncDispose]: () => h[Symbol.asyncDispose]() };
    },
    freed: async (o) => {
      const h = await o.semaphore("rel", { limit: 1 }).tryAcquire();
      await h?.release();
      return h !== null;
    },
  },
  {
    name: "membership",
    take: async (c) => {
      const m = await c.group("rel").join({ n: 1 });
      return { release: () => m.leave(), [Symbol.asyncDispose]: () => m[Symbol.asyncDispose]() };
    },
    freed: async (o) => (await o.group("rel").members()).length === 0,
  },
  {
    name: "leadership",
    take: async (c) => {
      const l = await c.election("rel").campaign("v");
      return { release: () => l.resign(), [Symbol.asyncDispose]: () => l[Symbol.asyncDispose]() };
    },
    freed: async (o) => (await o.election("rel").leader()) === null,
  },
  {
    name: "partitioner",
    take: async (c) => {
      const p = await c.partitioner("rel-ring");
      return { release: () => p.close(), [Symbol.asyncDispose]: () => p[Symbol.asyncDispose]() };
    },
    freed: async (o) => (await o.group("rel-ring").members()).length === 0,
  },
];

/** The ways a release-like call is repeated; each must resolve, never reject. */
const cases: readonly { name: string; run(coord: Coordinator, take: () => Promise<Releasable>): Promise<void> }[] = [
  {
    name: "called twice, then disposed",
    run: async (_c, take) => {
      const h = await take();
      await h.release();
      await h.release();
      await h[Symbol.asyncDispose]();
    },
  },
  {
    name: "called concurrently with its dispose",
    run: async (_c, take) => {
      const h = await take();
      await Promise.all([h.release(), h.release(), h[Symbol.asyncDispose]()]);
    },
  },
  {
    name: "disposed by await using after an explicit call",
    run: async (_c, take) => {
      await using h = await take();
      await h.release();
    },
  },
  {
    name: "called after the coordinator's close()",
    run: async (coord, take) => {
      const h = await take();
      await coord.close();
      await h.release();
      await h.release();
      await h[Symbol.asyncDispose]();
    },
  },
  {
    name: "disposed by await using after close()",
    run: async (coord, take) => {
      await using _h = await take();
      await coord.close();
    },
  },
];

/** Registers the release-like conformance tests. */
export function releaseSuite(ctx: SuiteContext): void {
  describe("release-like calls are idempotent and never throw", () => {
    for (const kind of kinds) {
      for (const each of cases) {
        it(`${kind.name}: ${each.name}`, async () => {
          const namespace = ctx.ns();
          const a = await ctx.client(namespace);
          const b = await ctx.client(namespace);
          await assert.doesNotReject(each.run(a, () => kind.take(a)));
          assert.ok(await kind.freed(b), `the ${kind.name} is free again for another client`);
        });
      }
    }
  });
}
