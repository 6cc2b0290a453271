/**
 * Watches a waiter leaves behind, on a private ZooKeeper server. A waiter watches the node
 * ahead of it; when that node is gone by the time the watch is set, an existence watch
 * would wait for a node that will never be created again (queue nodes are sequential), and
 * stay on the server and in the client for the session's life. The 10-minute soak showed
 * it as a heap growing by about 400 bytes per contended grant.
 *
 * And signals an acquisition leaves behind: a composite signal (`AbortSignal.any`) stays
 * referenced by each of its sources until that source aborts (nodejs/node#55351; Node 20
 * never prunes it): one made per acquisition from the session's signal, which lives as long
 * as the session, is kept for the session's life. The soak showed it as a heap growing by
 * about 45 bytes per grant.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect } from "../../src/index.js";
import { startZooKeeper, type ZooKeeperServer } from "../harness/zookeeper.js";
import { totalWatches } from "./fixtures/zookeeper-wchs.js";

describe("zookeeper watches and signals left by waiters", { timeout: 120_000 }, () => {
  let server: ZooKeeperServer;
  const coords: Coordinator[] = [];

  before(async () => {
    server = await startZooKeeper();
  });

  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  it("contended acquisitions, all released, leave no more watches than while idle", async () => {
    for (let i = 0; i < 10; i++) coords.push(await connect(server.url, { namespace: "watches", memberId: `w${i}` }));
    // Sessions open on the first acquisition, each with its one watch for a revocation.
    for (const coord of coords) await (await coord.lock("warm-up").acquire({ timeoutMs: 5000 })).release();
    const idle = await totalWatches(server.address);
    // Bounded: 10 coordinators x 30 acquisitions over 2 names, each waiting its turn.
    await Promise.all(
      coords.map(async (coord, k) => {
        for (let i = 0; i < 30; i++) {
          const handle = await coord.lock(`c-${(i + k) % 2}`).acquire({ timeoutMs: 30_000 });
          await handle.release();
        }
      }),
    );
    const left = await totalWatches(server.address);
    assert.ok(left <= idle + 2, `watches: ${idle} idle, ${left} after 300 released contended acquisitions`);
  });

  it("no signal becomes a source of composite signals once per acquisition, wait or conversion", async () => {
    for (let i = 0; i < 2; i++) coords.push(await connect(server.url, { namespace: "signals", memberId: `s${i}` }));
    for (const coord of coords) await (await coord.lock("warm-up").acquire({ timeoutMs: 5000 })).release();
    // How many composites each signal is a source of, from here on.
    const sources = new Map<AbortSignal, number>();
    const any = AbortSignal.any;
    AbortSignal.any = (signals: Iterable<AbortSignal>) => {
      const list = [...signals];
      for (const s of list) sources.set(s, (sources.get(s) ?? 0) + 1);
      return any.call(AbortSignal, list);
    };
    const rounds = 60;
    try {
      // Bounded: 2 coordinators x 60 acquisitions over 2 names (many wait their turn),
      // then 20 shared -> exclusive -> shared conversions.
      await Promise.all(
        coords.map(async (coord, k) => {
          for (let i = 0; i < rounds; i++) {
            const handle = await coord.lock(`c-${(i + k) % 2}`).acquire({ timeoutMs: 30_000 });
            await handle.release();
          }
        }),
      );
      const coord = coords[0] as Coordinator;
      for (let i = 0; i < 20; i++) {
        const handle = await coord.lock("conv").acquire({ mode: "shared", timeoutMs: 5000 });
        await handle.upgrade({ timeoutMs: 5000 });
        await handle.downgrade();
        await handle.release();
      }
    } finally {
      AbortSignal.any = any;
    }
    const most = Math.max(0, ...sources.values());
    assert.ok(most < 10, `one signal is a source of ${most} composites after ${2 * rounds} acquisitions`);
  });
});
