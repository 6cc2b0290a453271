import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClient } from "redis";
import { startRedis } from "../harness/redis.js";
import { ownServer } from "./fixtures/backend-suite.js";

/** Calls per command since the last CONFIG RESETSTAT, from INFO commandstats. */
async function commandCalls(admin: { sendCommand(args: string[]): Promise<unknown> }): Promise<Map<string, number>> {
  const info = String(await admin.sendCommand(["INFO", "commandstats"]));
  const calls = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(match[1]!, Number(match[2]));
  return calls;
}

// The server-side cost of the uncontended path, counted by Redis itself (commands run inside
// scripts are counted too): one ACQUIRE and one RELEASE script, and the commands in them.
// Speed itself is measured by `npm run bench`; this pins down the work that makes it.
describe("redis uncontended cost", () => {
  const { server, client } = ownServer(() => startRedis());

  it("is one script each way, 8 commands to acquire and 4 to release", async () => {
    // A TTL that no renewal interrupts during the loop.
    const coord = await client({ ttlMs: 60_000 });
    await coord.openSession();
    await (await coord.lock("warm").acquire({ takeover: false })).release();
    const cycles = 20;
    const admin = createClient({ url: server().url });
    await admin.connect();
    await admin.sendCommand(["CONFIG", "RESETSTAT"]);
    for (let i = 0; i < cycles; i++) {
      const handle = await coord.lock("cost").acquire({ takeover: false });
      assert.equal((await handle.release()).status, "released");
    }
    const calls = await commandCalls(admin);
    await admin.close();
    const scripts = calls.get("evalsha") ?? 0;
    let inside = 0;
    for (const [name, n] of calls) if (!/^(evalsha|eval|info|config\|.*)$/.test(name)) inside += n;
    assert.equal(scripts, 2 * cycles, `scripts: ${JSON.stringify([...calls])}`);
    // ACQUIRE on a free name: the session's and the queue's EXISTS, TIME, the token's GET
    // and SET, one HSET (the queue's fields and the entry), the queues SADD, the ZADD.
    // RELEASE of the only entry: HEXISTS, ZCARD, DEL, SREM.
    assert.equal(inside, 12 * cycles, `commands: ${JSON.stringify([...calls])}`);
  });

  it("arms no per-command AbortSignal.timeout (node-redis's default) on the command connection", async () => {
    const coord = await client({ ttlMs: 60_000 });
    await coord.openSession();
    await (await coord.lock("warm").acquire({ takeover: false })).release();
    // Counted, not replaced: the signals are still made and work.
    const original = AbortSignal.timeout;
    let armed = 0;
    AbortSignal.timeout = (ms: number) => {
      armed++;
      return original.call(AbortSignal, ms);
    };
    try {
      for (let i = 0; i < 20; i++) {
        const handle = await coord.lock("timers").acquire({ takeover: false });
        assert.equal((await handle.release()).status, "released");
      }
    } finally {
      AbortSignal.timeout = original;
    }
    assert.equal(armed, 0);
  });
});
