/**
 * The etcd backend under real faults: a 3-member cluster losing its leader and then its
 * quorum under contention; holder processes killed or paused past their TTL; a client cut
 * off from etcd by a TCP proxy and healed. Every server and process is started here and
 * stopped afterwards.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect, type LockHandle } from "../../src/index.js";
import { OrderLog, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { FencedResource, type Holder } from "../harness/holder.js";
import { holderFaultTests } from "./fixtures/holder-faults.js";
import { type EtcdServer, startEtcd, startEtcdCluster } from "../harness/etcd.js";
import { startProxy } from "../harness/proxy.js";

const TTL_MS = 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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

    const resource = new FencedResource();
    const violations: string[] = [];
    const inside = new Set<LockHandle>();
    const seenSessions = new Set<string>();
    let sessionLosses = 0;
    let granted = 0;
    let lastToken = -1n;
    let running = true;

    const loops = coords.map(async (coord) => {
      const lock = coord.lock("hot");
      while (running) {
        let handle: LockHandle;
        try {
          handle = await lock.acquire({ timeoutMs: 10_000 });
        } catch {
          await sleep(50); // lost session, no quorum, timeout: try again
          continue;
        }
        const session = coord.session;
        if (session && !seenSessions.has(session.id)) {
          seenSessions.add(session.id);
          session.signal.addEventListener("abort", () => sessionLosses++, { once: true });
        }
        granted++;
        if (handle.token <= lastToken) violations.push(`token ${handle.token} granted after ${lastToken}`);
        lastToken = handle.token;
        for (const other of inside) {
          if (!other.signal.aborted) violations.push(`${handle.token} granted while ${other.token} still held`);
        }
        inside.add(handle);
        // A live holder is never fenced out: that would mean a newer holder overlapped it.
        if (!resource.write(handle.token, coord.memberId) && !handle.signal.aborted) {
          violations.push(`live holder ${handle.token} fenced out on entry`);
        }
        await sleep(Math.random() * 4);
        if (!resource.write(handle.token, coord.memberId) && !handle.signal.aborted) {
          violations.push(`live holder ${handle.token} fenced out on exit`);
        }
        inside.delete(handle);
        await handle.release();
      }
    });
    const grants = async (more: number, what: string) => {
      const target = granted + more;
      await waitFor(() => granted >= target, `${more} more grants ${what}`, 60_000);
    };

    await grants(40, "with all three members");
    const leader = await cluster.leader();
    await leader.kill();
    await grants(40, "after SIGKILL of the leader (two of three up)");
    const [follower] = await cluster.followers();
    assert.ok(follower);
    const lossesBefore = sessionLosses;
    await follower.stop();
    // No quorum: keep-alives fail, so the sessions' local deadlines must fire.
    await waitFor(() => sessionLosses > lossesBefore, "a session lost while etcd has no quorum", 30_000);
    await follower.start();
    await grants(30, "after quorum returned");
    await leader.start();
    await grants(20, "with all three members again");

    running = false;
    await Promise.all(loops);
    t.diagnostic(
      `${granted} grants, ${sessionLosses} session losses, ${resource.rejected.length} stale writes rejected`,
    );
    assert.deepEqual(violations, []);
  });
});

describe("etcd client faults", () => {
  let server: EtcdServer;
  const coords: Coordinator[] = [];
  const holders: Holder[] = [];
  const client = async (url: string, options: Record<string, unknown> = {}) => {
    const coord = await connect(url, { namespace: "client-faults", ...options });
    coords.push(coord);
    return coord;
  };

  before(async () => {
    server = await startEtcd();
  });

  after(async () => {
    await Promise.all(holders.map((h) => h.stop()));
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  holderFaultTests({
    url: () => server.url,
    client,
    holders,
    ttlMs: TTL_MS,
    ttlWord: "TTL",
  });

  it("signals a client cut off by the network before anyone else is granted, and recovers it after heal", async () => {
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    try {
      const cut = await client(`etcd://${proxy.address}`, { ttlMs: TTL_MS, memberId: "cut" });
      const other = await client(server.url, { memberId: "other" });
      const log = new OrderLog();
      const held = await cut.lock("cut").acquire();
      const firstSession = cut.session!;
      held.signal.addEventListener("abort", () => log.add("cut-lost"));
      const waiting = other
        .lock("cut")
        .acquire({ timeoutMs: 30_000 })
        .then((h) => {
          log.add("other-granted");
          return h;
        });
      await waitForWaiters(other, "cut", 1);

      proxy.cut();
      const next = await waiting;
      assert.ok(log.indexOf("cut-lost") < log.indexOf("other-granted"), log.events.join(", "));
      assert.ok(held.signal.aborted && firstSession.signal.aborted);
      assert.ok(next.token > held.token);
      assert.equal((await held.release()).status, "lost");

      proxy.heal();
      // gRPC reconnects with a backoff: calls made in the first moments after the heal may
      // still fail fast with BackendUnavailableError. Recovery means a fresh session once
      // it is through (releasing the lost handle above used to take long enough to hide this).
      await waitFor(
        () =>
          cut.openSession().then(
            () => true,
            () => false,
          ),
        "the cut client to reach etcd again",
      );
      const again = cut.lock("cut").acquire({ timeoutMs: 30_000 });
      await next.release();
      const recovered = await again;
      assert.notEqual(cut.session?.id, firstSession.id, "a new session after heal");
      assert.ok(recovered.token > next.token);
      await recovered.release();
      await cut.close();
    } finally {
      await proxy.close();
    }
  });

  it("answers a release it cannot confirm with unconfirmed within one call deadline; the lease frees the lock", async () => {
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    try {
      const cut = await client(`etcd://${proxy.address}`, { ttlMs: TTL_MS, memberId: "cut-release" });
      const other = await client(server.url, { memberId: "other-release" });
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
});
