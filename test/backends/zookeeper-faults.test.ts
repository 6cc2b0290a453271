/**
 * The ZooKeeper backend under real faults: a 3-member ensemble losing its leader and then
 * its quorum under 20 contending clients; holder processes killed or paused past their
 * session timeout; a client cut off by a TCP proxy; a server restart; a create whose answer
 * is lost. Every server and process is started here and stopped afterwards.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect, type LockHandle } from "../../src/index.js";
import { OrderLog, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { FencedResource, type Holder } from "../harness/holder.js";
import { holderFaultTests } from "./fixtures/holder-faults.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper, startZooKeeperEnsemble, type ZooKeeperServer } from "../harness/zookeeper.js";

const TTL_MS = 2000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("zookeeper ensemble faults", { timeout: 180_000 }, () => {
  it("keeps one holder at a time and growing tokens while the leader, then a second member, die and return", async (t) => {
    const ensemble = await startZooKeeperEnsemble(3);
    const coords: Coordinator[] = [];
    t.after(async () => {
      await Promise.all(coords.map((c) => c.close()));
      await ensemble.stop();
    });
    const namespace = `faults-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 20; i++) {
      coords.push(await connect(ensemble.url, { namespace, ttlMs: 3000, memberId: `c${i}` }));
    }

    const resource = new FencedResource();
    const violations: string[] = [];
    const inside = new Set<LockHandle>();
    const seenSessions = new Set<string>();
    let sessionLosses = 0;
    let granted = 0;
    let lastToken = -1n;
    let running = true;
    /** Set while no quorum can exist: any grant then is a violation. */
    let noQuorum = false;

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
        if (noQuorum) violations.push(`token ${handle.token} granted without a quorum`);
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
    const leader = await ensemble.leader();
    await leader.kill();
    await grants(40, "after SIGKILL of the leader (two of three up)");
    const second = await ensemble.leader();
    const lossesBefore = sessionLosses;
    await second.kill();
    // One member left: no quorum. Sessions cannot be renewed, so their local deadlines fire
    // (before the ensemble, once back, could expire them and grant to anyone else).
    await waitFor(() => sessionLosses > lossesBefore, "a session lost while there is no quorum", 30_000);
    // From here until a member is started again, nothing may be granted; the waits go on.
    noQuorum = true;
    await waitFor(
      () => coords.every((c) => !c.session || c.session.signal.aborted),
      "every client's session lost while there is no quorum",
      30_000,
    );
    noQuorum = false;
    await second.start();
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

describe("zookeeper client faults", { timeout: 180_000 }, () => {
  let server: ZooKeeperServer;
  const coords: Coordinator[] = [];
  const holders: Holder[] = [];
  const client = async (url: string, options: Record<string, unknown> = {}) => {
    const coord = await connect(url, { namespace: "client-faults", ...options });
    coords.push(coord);
    return coord;
  };

  before(async () => {
    server = await startZooKeeper();
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
    ttlWord: "session timeout",
  });

  it("signals a client cut off by the network before anyone else is granted, and recovers it after heal", async () => {
    const [host, port] = server.address.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    try {
      const cut = await client(`zookeeper://${proxy.address}`, { ttlMs: TTL_MS, memberId: "cut" });
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
      assert.ok(log.indexOf("cut-lost") >= 0, log.events.join(", "));
      assert.ok(log.indexOf("cut-lost") < log.indexOf("other-granted"), log.events.join(", "));
      assert.ok(held.signal.aborted && firstSession.signal.aborted);
      assert.ok(next.token > held.token);
      assert.equal((await held.release()).status, "lost");

      proxy.heal();
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

  it("keeps locks and queues across a server restart shorter than the session timeout", async () => {
    const holder = await client(server.url, { ttlMs: 15_000, memberId: "restart-holder" });
    const waiter = await client(server.url, { ttlMs: 15_000, memberId: "restart-waiter" });
    const held = await holder.lock("restart").acquire();
    const waiting = waiter.lock("restart").acquire({ timeoutMs: 60_000 });
    await waitForWaiters(holder, "restart", 1);
    const session = holder.session!;
    await server.restart();
    // The server restores sessions from its log; the clients reconnect to the same ones.
    const info = await holder.inspect();
    const lock = info.locks.find((l) => l.name === "restart");
    assert.deepEqual(
      [lock?.holders.map((h) => h.memberId), lock?.waiters.map((w) => w.memberId)],
      [["restart-holder"], ["restart-waiter"]],
    );
    assert.equal(held.signal.aborted, false);
    assert.equal(holder.session?.id, session.id);
    assert.equal((await held.release()).status, "released");
    const next = await waiting;
    assert.ok(next.token > held.token);
    await next.release();
  });

  it("finds its node again after a create whose answer was lost: no orphan, no duplicate", async () => {
    const [host, port] = server.address.split(":");
    const lossy = await startLossyProxy(host!, Number(port));
    try {
      const holder = await client(server.url, { memberId: "lc-holder" });
      const asker = await client(`zookeeper://${lossy.address}`, { ttlMs: 6000, memberId: "lc-asker" });
      const held = await holder.lock("lost-create").acquire();
      await (await asker.lock("warm-up").acquire()).release(); // the session is open
      lossy.dropReplies = true;
      const waiting = asker.lock("lost-create").acquire({ timeoutMs: 30_000 });
      // The create reached the server (its node is queued) but its answer was dropped.
      await waitForWaiters(holder, "lost-create", 1);
      lossy.reset();
      lossy.dropReplies = false;
      // The client reconnects to the same session and finds its node by its tag.
      await waitFor(async () => lossy.accepted > 1, "the client to reconnect");
      const info = await holder.inspect();
      const queue = info.locks.find((l) => l.name === "lost-create");
      assert.deepEqual(
        queue?.waiters.map((w) => w.memberId),
        ["lc-asker"],
        "exactly one node of the asker",
      );
      await held.release();
      const mine = await waiting;
      assert.ok(mine.token > held.token);
      await mine.release();
      await waitFor(
        async () => !(await holder.inspect()).locks.some((l) => l.name === "lost-create"),
        "the queue to be empty: no orphan node",
      );
    } finally {
      lossy.close();
    }
  });
});

/**
 * A proxy that can drop the server's answers while still forwarding the client's requests,
 * so a request reaches the server and its answer is lost.
 */
async function startLossyProxy(host: string, port: number) {
  const sockets = new Set<net.Socket>();
  const state = {
    dropReplies: false,
    accepted: 0,
    address: "",
    reset() {
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
    },
    close() {
      state.reset();
      server.close();
    },
  };
  const server = net.createServer((clientSocket) => {
    state.accepted++;
    const upstream = net.connect({ host, port });
    sockets.add(clientSocket);
    sockets.add(upstream);
    clientSocket.on("error", () => {});
    upstream.on("error", () => {});
    clientSocket.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      if (!state.dropReplies) clientSocket.write(chunk);
    });
    clientSocket.on("close", () => upstream.destroy());
    upstream.on("close", () => clientSocket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as net.AddressInfo;
  state.address = `127.0.0.1:${address.port}`;
  return state;
}
