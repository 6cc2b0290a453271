/**
 * Property-based tests of the inputs users hand Baton (names, durations, URLs, options,
 * JSON values), with fast-check: each input is either accepted and then behaves (the lock
 * is held, shows in `inspect()`, is free after release) or refused at once with an
 * `InvalidArgumentError`; never a hang, a crash or another error. Run on the memory backend
 * (inputs are checked in core, the same for every backend) and, for names, on the file
 * backend too, whose keys are hashes.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { type Coordinator, connect, InvalidArgumentError, parseDuration } from "../src/index.js";

const MAX_TIMER_MS = 2_147_483_647;
/** A refusal must be an InvalidArgumentError that says what was wrong. */
function assertRefusal(error: unknown, input: unknown): void {
  assert.ok(
    error instanceof InvalidArgumentError,
    `input ${String(JSON.stringify(input))?.slice(0, 200)} threw ${(error as Error)?.name}: ${(error as Error)?.message}`,
  );
  assert.ok(error.message.length > 10, "the message says what was wrong");
}
/** Runs `fn` and settles within `ms`, or fails as a hang. */
async function bounded<T>(fn: () => Promise<T>, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`hung for ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
/** Any string: full Unicode, lone surrogates, control characters, long ones. */
const anyString = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ maxLength: 700 }),
  fc.constantFrom("", " ", "\u0000", "a\nb", "\ud800", "é".repeat(300), "x".repeat(512), "x".repeat(513)),
);

describe("properties of inputs", () => {
  const dir = fs.mkdtempSync(path.join(process.env.BATON_HARNESS_TMPDIR || os.tmpdir(), "baton-props-"));
  const coords: Coordinator[] = [];
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [backend, url, runs] of [
    ["memory", "memory://props", 300],
    ["file", `file://${dir}`, 60],
  ] as const) {
    it(`${backend}: a lock name is refused at once or held, inspected and freed`, async () => {
      const coord = await connect(url, { namespace: "props" });
      coords.push(coord);
      await fc.assert(
        fc.asyncProperty(anyString, async (name) => {
          let lock: ReturnType<Coordinator["lock"]>;
          try {
            lock = coord.lock(name);
          } catch (error) {
            assertRefusal(error, name);
            return;
          }
          const handle = await bounded(() => lock.acquire({ timeoutMs: 2000 }));
          const held = (await coord.inspect()).locks.find((l) => l.name === name);
          assert.equal(held?.holders.length, 1, `${JSON.stringify(name)} shows as held`);
          assert.equal((await handle.release()).status, "released");
          assert.equal(await lock.tryAcquire().then((h) => h?.release().then(() => true)), true, "free again");
        }),
        { numRuns: runs },
      );
    });
  }

  it("parseDuration returns milliseconds in range or refuses with InvalidArgumentError", () => {
    const durationLike = fc.oneof(
      anyString,
      fc
        .tuple(fc.double(), fc.constantFrom("ms", "s", "m", "h", "d", "", " s", "sec", "S"))
        .map(([n, u]) => `${n}${u}`),
      fc.tuple(fc.nat({ max: 10_000_000 }), fc.constantFrom("ms", "s", "m", "h", "d")).map(([n, u]) => `${n}${u}`),
    );
    fc.assert(
      fc.property(durationLike, (text) => {
        let ms: number;
        try {
          ms = parseDuration(text);
        } catch (error) {
          assertRefusal(error, text);
          return;
        }
        assert.ok(Number.isFinite(ms) && ms >= 0 && ms <= MAX_TIMER_MS, `${JSON.stringify(text)} gave ${ms}`);
      }),
      { numRuns: 2000 },
    );
  });

  it("a timeout of any value is refused at once or the free lock is granted", async () => {
    const coord = await connect("memory://props-timeouts");
    coords.push(coord);
    const value = fc.oneof(
      fc.double(),
      fc.integer(),
      fc.constantFrom(Number.NaN, -0, Number.POSITIVE_INFINITY, MAX_TIMER_MS, MAX_TIMER_MS + 1, 2 ** 53),
      fc.anything(),
    );
    await fc.assert(
      fc.asyncProperty(value, async (timeoutMs) => {
        try {
          const handle = await bounded(() => coord.lock("t").acquire({ timeoutMs: timeoutMs as number }));
          await handle.release();
        } catch (error) {
          assertRefusal(error, timeoutMs);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("connect() with any options object or query string connects or refuses with InvalidArgumentError", async () => {
    const optionKeys = fc.constantFrom("namespace", "memberId", "ttl", "ttlMs", "require", "bogus", "__proto__", "");
    const options = fc.dictionary(optionKeys, fc.oneof(fc.anything(), fc.constantFrom("5s", 1000, 999, ["fencing"])));
    const query = fc
      .array(fc.tuple(optionKeys, fc.oneof(anyString, fc.constantFrom("2s", "1000", "fencing"))), { maxLength: 3 })
      .map((pairs) =>
        pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v.toWellFormed())}`).join("&"),
      );
    await fc.assert(
      fc.asyncProperty(query, options, async (q, opts) => {
        let coord: Coordinator;
        try {
          coord = await bounded(() => connect(`memory://props-opts?${q}`, opts as never));
        } catch (error) {
          assertRefusal(error, { q, opts });
          return;
        }
        try {
          const handle = await bounded(() => coord.lock("x").acquire({ timeoutMs: 2000 }));
          await handle.release();
        } finally {
          await coord.close();
        }
      }),
      { numRuns: 300 },
    );
  });

  it("a URL that is not a backend's is refused at once with InvalidArgumentError", async () => {
    // Only schemes no backend has: nothing may reach the network.
    const scheme = fc.constantFrom("http", "ftp", "mysqlx", "etcdx", "zz", "memory2", "", "file2");
    const rest = fc.oneof(anyString, fc.webPath());
    await fc.assert(
      fc.asyncProperty(scheme, rest, async (s, r) => {
        const url = s === "" ? r : `${s}:${r}`;
        await assert.rejects(
          bounded(() => connect(url)),
          (error) => {
            assertRefusal(error, url);
            return true;
          },
        );
      }),
      { numRuns: 300 },
    );
  });

  it("a group member's capabilities of any JSON value round-trip or are refused", async () => {
    const coord = await connect("memory://props-json", { memberId: "me" });
    coords.push(coord);
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.jsonValue(), fc.anything()), async (value) => {
        let membership: Awaited<ReturnType<ReturnType<Coordinator["group"]>["join"]>>;
        try {
          membership = await bounded(() => coord.group<unknown>("g").join(value as never));
        } catch (error) {
          assertRefusal(error, value);
          return;
        }
        try {
          const members = await coord.group<unknown>("g").members();
          const mine = members.find((m) => m.memberId === "me");
          // join() without capabilities (undefined) joins with {}.
          assert.deepEqual(mine?.capabilities, value === undefined ? {} : JSON.parse(JSON.stringify(value)));
        } finally {
          await membership.leave();
        }
      }),
      { numRuns: 300 },
    );
  });
});
