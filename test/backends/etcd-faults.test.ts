/**
 * The etcd backend under real faults: a 3-member cluster losing its leader and then its
 * quorum under contention; holder processes killed or paused past their TTL; a client cut
 * off from etcd by a TCP proxy and healed. Every server and process is started here and
 * stopped afterwards.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { type Coordinator, connect } from "../../src/index.js";
import { waitFor, waitForWaiters } from "../conformance/helpers.js";
import { clientFaultSuite } from "./fixtures/client-faults.js";
import { contend } from "./fixtures/contention.js";
import { type EtcdServer, startEtcd, startEtcdCluster } from "../harness/etcd.js";
import { startProxy } from "../harness/proxy.js";

const TTL_MS = 2000;

/** The first member's host and port, for a proxy in front of it. */
const endpoint = (server: EtcdServer) => {
  const [host, port] = server.endpoints[0]!.split(":");
  return { host: host!, port: Number(port) };
};

describe("etcd cluster faults", () => {
  it("keeps one holder at a time and growing tokens while the leader, then a second member, stop and return", async (t) => {
    const cluster = await startEtcdCluster(3);
    const coords: Coordinator[] = [];
    t.after(async () => {
      await Promise.all(coords.map((c) => c.close()));
      await cluster.stop();
    });
    // The etcd convention: every member, comma-separated (connect() turns it into endpoints).
    const url = cluster.url;
    const namespace = `faults-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 20; i++) {
      coords.push(await connect(url, { namespace, ttlMs: 3000, memberId: `c${i}`, requestTimeoutMs: 2000 }));
    }

    const contention = contend(coords);

    await contention.grants(40, "with all three members");
    const leader = await cluster.leader();
    await leader.kill();
    await contention.grants(40, "after SIGKILL of the leader (two of three up)");
    const [follower] = await cluster.followers();
    assert.ok(follower);
    const lossesBefore = contention.sessionLosses;
    await follower.stop();
    // No quorum: keep-alives fail, so the sessions' local deadlines must fire.
    await waitFor(() => contention.sessionLosses > lossesBefore, "a session lost while etcd has no quorum", 30_000);
    await follower.start();
    await contention.grants(30, "after quorum returned");
    await leader.start();
    await contention.grants(20, "with all three members again");
    await contention.finish(t);
  });
});

clientFaultSuite(
  {
    backend: "etcd",
    scheme: "etcd",
    ttlMs: TTL_MS,
    ttlWord: "TTL",
    start: () => startEtcd(),
    target: endpoint,
    // gRPC reconnects with a backoff: calls made in the first moments after the heal may
    // still fail fast with BackendUnavailableError. Recovery means a fresh session once
    // it is through.
    reconnected: (cut) =>
      waitFor(
        () =>
          cut.openSession().then(
            () => true,
            () => false,
          ),
        "the cut client to reach etcd again",
      ),
  },
  ({ server, client }) => {
    it("answers a release it cannot confirm with unconfirmed within one call deadline; the lease frees the lock", async () => {
      const proxy = await startProxy(endpoint(server()));
      try {
        const cut = await client(`etcd://${proxy.address}`, { ttlMs: TTL_MS, memberId: "cut-release" });
        const other = await client(server().url, { memberId: "other-release" });
        const held = await cut.lock("release").acquire();
        const waiting = other.lock("release").acquire({ timeoutMs: 30_000 });
        await waitForWaiters(other, "release", 1);

        proxy.cut();
        const started = performance.now();
        const result = await held.release();
        const tookMs = performance.now() - started;
        assert.equal(result.status, "unconfirmed");
        // One call attempt (at most a quarter of the TTL), not retries for seconds.
        assert.ok(tookMs < TTL_MS / 2, `release took ${Math.round(tookMs)} ms`);
        const next = await waiting;
        assert.ok(next.token > held.token);
        await next.release();
      } finally {
        await proxy.close();
      }
    });
  },
);
