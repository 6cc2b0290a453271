/**
 * The mysql backend under real faults, on a private MariaDB server: holder processes
 * SIGKILLed or paused past their TTL (the shared holder-fault tests), a holder's
 * connection killed by the server (KILL CONNECTION), a server restart under contention,
 * and a holder cut off silently by a TCP proxy (no FIN, no RST).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect, type LockHandle, type Takeover } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { Holder } from "../harness/holder.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";
import { startProxy } from "../harness/proxy.js";
import { holderFaultTests } from "./fixtures/holder-faults.js";

const TTL_MS = 2000;
const NAMESPACE = "client-faults";

describe("mysql faults", { timeout: 120_000 }, () => {
  let server: MariadbServer;
  const coords: Coordinator[] = [];
  const holders: Holder[] = [];
  const client = async (url: string, options: Record<string, unknown> = {}) => {
    const coord = await connect(url, { namespace: NAMESPACE, ...options });
    coords.push(coord);
    return coord;
  };
  /** The server connection whose GET_LOCK holds lock `name`'s grant. */
  const holderConnection = async (name: string): Promise<number> => {
    const rows = await server.query<{ conn: string | number }>(
      `SELECT e.conn FROM baton.baton_entries e JOIN baton.baton_queues q ON q.qid = e.qid
       WHERE q.namespace = ? AND q.kind = 'lock' AND q.name = ? AND e.token IS NOT NULL
         AND IS_USED_LOCK(e.lock_key) = e.conn`,
      [NAMESPACE, name],
    );
    assert.equal(rows.length, 1, `one holder of ${name}: ${JSON.stringify(rows)}`);
    return Number(rows[0]!.conn);
  };

  before(async () => {
    server = await startMariadb();
  });

  after(async () => {
    await Promise.all(holders.map((h) => h.stop()));
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  holderFaultTests({ url: () => server.url, client, holders, ttlMs: TTL_MS, ttlWord: "TTL" });

  it("fires the holder's signal when the server kills its connection, and grants the next waiter", async () => {
    const holder = new Holder(`${server.url}?namespace=${NAMESPACE}`, "killed-conn", TTL_MS);
    holders.push(holder);
    const acquired = await holder.next((e) => e.event === "acquired", "the holder to acquire");
    const waiter = await client(server.url);
    const waiting = observed(waiter.lock("killed-conn").acquire({ timeoutMs: 20_000 }));
    await waitForWaiters(waiter, "killed-conn", 1);
    await server.query(`KILL CONNECTION ${await holderConnection("killed-conn")}`);
    const lost = await holder.next((e) => e.event === "lost", "the holder's signal", 10_000);
    assert.equal(lost.reason, "LockLostError");
    const next = await waiting;
    assert.ok(next.token > BigInt(acquired.token!));
    await next.release();
  });

  it("recovers from a server restart under contention without restarting the clients", async () => {
    // A TTL well past a restart's length on a loaded machine: a session lost while the server
    // is down could not be opened again, which would end the wait (Lock.acquire).
    const loopers = await Promise.all(
      [0, 1, 2, 3].map((i) => client(server.url, { memberId: `r${i}`, ttlMs: 10_000 })),
    );
    const tokens: bigint[][] = loopers.map(() => []);
    let restarted = false;
    let stop = false;
    const loop = async (coord: Coordinator, mine: bigint[]) => {
      let inside = 0;
      while (!stop) {
        let handle: LockHandle;
        try {
          handle = await coord.lock("restart").acquire({ timeoutMs: 30_000 });
        } catch (error) {
          if (stop) return;
          throw error;
        }
        assert.equal(++inside, 1);
        mine.push(handle.token);
        await new Promise((resolve) => setTimeout(resolve, 5));
        inside--;
        await handle.release();
      }
    };
    // Watched from the start: a loop that fails fails the test with its error, at once.
    let failed: unknown = null;
    const running = Promise.all(loopers.map((coord, i) => loop(coord, tokens[i]!))).catch((error: unknown) => {
      failed = error;
      stop = true;
    });
    const progressed = (enough: () => boolean) => () => {
      if (failed) throw failed;
      return enough();
    };
    await waitFor(
      progressed(() => tokens.every((t) => t.length >= 3)),
      "every client to be granted before the restart",
    );
    await server.restart();
    restarted = true;
    const counts = tokens.map((t) => t.length);
    // Every client makes progress again on its own.
    await waitFor(
      progressed(() => tokens.every((t, i) => t.length >= counts[i]! + 3)),
      "progress after the restart",
      60_000,
    );
    stop = true;
    await running;
    if (failed) throw failed;
    assert.ok(restarted);
    const all = tokens.flat();
    assert.equal(new Set(all).size, all.length, "no token is handed out twice");
    for (const mine of tokens) {
      for (let i = 1; i < mine.length; i++) assert.ok(mine[i]! > mine[i - 1]!, `tokens ${mine.join(",")}`);
    }
  });

  it("a blocking acquire whose grant is lost to a server restart during its fencing hook waits on and fences again", async () => {
    const holder = new Holder(`${server.url}?namespace=${NAMESPACE}`, "claim-restart", TTL_MS);
    holders.push(holder);
    const acquired = await holder.next((e) => e.event === "acquired", "the holder to acquire");
    holder.signal("SIGKILL");
    await holder.exited;
    const lostToken = BigInt(acquired.token!);
    const next = await client(server.url, { ttlMs: 10_000 });
    const seen: Takeover[] = [];
    let restarting: Promise<void> | undefined;
    const handle = await next.lock("claim-restart").acquire({
      timeoutMs: 60_000,
      onTakeover: async (previous) => {
        seen.push(previous);
        // The first grant goes with its connection while this runs.
        if (seen.length === 1) {
          restarting = server.restart();
          await restarting;
        }
      },
    });
    assert.ok(restarting, "the hook ran and restarted the server");
    await restarting;
    assert.equal(handle.held, true);
    assert.deepEqual(
      seen.map((p) => p.token),
      [lostToken, lostToken],
      "the lost holder is fenced on the first grant and again on the one after the restart",
    );
    assert.equal(handle.takeover?.token, lostToken, "the lost holder's record was kept through the failed claim");
    assert.ok(handle.token > lostToken);
    await holderConnection("claim-restart"); // asserts one holder on the server
    await handle.release();
  });

  it("signals a silently cut holder before the server frees its lock, and only then grants the waiter", async () => {
    const proxy = await startProxy({ host: server.host, port: server.port });
    try {
      const viaProxy = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
      const holder = new Holder(`${viaProxy}?namespace=${NAMESPACE}`, "cut", TTL_MS);
      holders.push(holder);
      const acquired = await holder.next((e) => e.event === "acquired", "the holder to acquire");
      const waiter = await client(server.url);
      const waiting = observed(waiter.lock("cut").acquire({ timeoutMs: 30_000 }));
      await waitForWaiters(waiter, "cut", 1);
      const cutAt = performance.now();
      proxy.cut();
      const next = await waiting;
      const grantedAfterMs = performance.now() - cutAt;
      // The holder's own deadline fired first: the server kept the lock until then.
      assert.ok(
        holder.events.some((e) => e.event === "lost"),
        `the holder was not told before the waiter was granted ${Math.round(grantedAfterMs)} ms after the cut`,
      );
      assert.ok(next.token > BigInt(acquired.token!));
      assert.ok(grantedAfterMs < 15_000, `takeover took ${Math.round(grantedAfterMs)} ms`);
      await next.release();
    } finally {
      await proxy.close();
    }
  });
  it("a late release of a lost holder leaves its successor's takeover record alone (after a forgotten row)", async () => {
    const proxy = await startProxy({ host: server.host, port: server.port });
    try {
      const viaProxy = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
      // Long TTL and timeouts: the holder must still believe it holds the lock when it
      // releases, after its successors came and went.
      const a = await client(viaProxy, { memberId: "late", ttlMs: 20_000 });
      const [b, c] = [await client(server.url, { memberId: "b" }), await client(server.url, { memberId: "c" })];
      // Tracked (asked for, as well as the default).
      const stale = await a.lock("late").acquire({ takeover: true });
      // The server frees the lock; the client hears nothing (its connections are blackholed).
      proxy.cut();
      await server.query(`KILL CONNECTION ${await holderConnection("late")}`);
      const second = await b.lock("late").acquire({ takeover: true, timeoutMs: 20_000 });
      assert.equal(second.takeover?.token, stale.token, "the lost holding is handed on");
      assert.equal((await second.release()).status, "released");
      const third = await c.lock("late").acquire({ takeover: true, timeoutMs: 20_000 });
      assert.equal(third.takeover, null, "the clean release left nothing");
      assert.ok(stale.held, "the stale holder has not noticed its loss");
      const late = stale.release();
      proxy.heal({ resumeExisting: true });
      await late;
      const record = (await c.inspect()).takeovers?.find((r) => r.name === "late");
      assert.equal(record?.token, third.token, "the successor's record is still there");
      await third.release();
    } finally {
      await proxy.close();
    }
  });
});
