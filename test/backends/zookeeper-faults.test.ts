/**
 * The ZooKeeper backend under real faults: a 3-member ensemble losing its leader and then
 * its quorum under 20 contending clients; holder processes killed or paused past their
 * session timeout; a client cut off by a TCP proxy; a server restart; a create whose answer
 * is lost; a takeover claim's write landing after its acquire gave up; a request queued
 * while reconnecting to a session the server expired. Every server and process is started
 * here and stopped afterwards.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import type { TraceEntry } from "../../src/backends/zookeeper/client.js";
import { Layout } from "../../src/backends/zookeeper/paths.js";
import { type Coordinator, connect, SessionExpiredError, TimeoutError } from "../../src/index.js";
import { settlesWithin, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { clientFaultSuite } from "./fixtures/client-faults.js";
import { contend } from "./fixtures/contention.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper, startZooKeeperEnsemble } from "../harness/zookeeper.js";
import { traceHandles } from "./fixtures/zookeeper-trace.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const TTL_MS = 2000;

/**
 * How long after a member is stopped an answer it sent before may still be handled (a
 * grant whose write committed before): generous, on a loaded machine the event loop lags.
 */
const IN_FLIGHT_MS = 1500;

/** Where a proxy in front of `server` forwards to. */
function proxyTarget(server: { readonly address: string }): { host: string; port: number } {
  const [host, port] = server.address.split(":");
  return { host: host as string, port: Number(port) };
}

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

    const contention = contend(coords);

    await contention.grants(40, "with all three members");
    const leader = await ensemble.leader();
    await leader.kill();
    await contention.grants(40, "after SIGKILL of the leader (two of three up)");
    const second = await ensemble.leader();
    const lossesBefore = contention.sessionLosses;
    const killedAt = performance.now();
    await second.kill();
    // One member left: no quorum, so no write commits, and a grant needs one (its
    // predecessor's delete, its record): nothing may be granted from here until a member is
    // started again, bar answers the killed member had sent already (IN_FLIGHT_MS). Sessions
    // cannot be renewed either, so their local deadlines fire (before the ensemble, once
    // back, could expire them and grant to anyone else); the loops' waits end with them.
    await waitFor(() => contention.sessionLosses > lossesBefore, "a session lost while there is no quorum", 30_000);
    await waitFor(
      () => coords.every((c) => !c.session || c.session.signal.aborted),
      "every client's session lost while there is no quorum",
      30_000,
    );
    const restartAt = performance.now();
    assert.deepEqual(
      contention.grantedBetween(killedAt + IN_FLIGHT_MS, restartAt),
      [],
      "tokens granted while one member of three was left",
    );
    await second.start();
    await contention.grants(30, "after quorum returned");
    await leader.start();
    await contention.grants(20, "with all three members again");

    await contention.finish(t);
  });
});

clientFaultSuite(
  {
    backend: "zookeeper",
    scheme: "zookeeper",
    ttlMs: TTL_MS,
    ttlWord: "session timeout",
    timeoutMs: 180_000,
    start: () => startZooKeeper(),
    target: (server) => proxyTarget(server),
  },
  ({ server, client }) => {
    it("keeps locks and queues across a server restart shorter than the session timeout", async () => {
      const holder = await client(server().url, { ttlMs: 15_000, memberId: "restart-holder" });
      const waiter = await client(server().url, { ttlMs: 15_000, memberId: "restart-waiter" });
      const held = await holder.lock("restart").acquire();
      const waiting = waiter.lock("restart").acquire({ timeoutMs: 60_000 });
      await waitForWaiters(holder, "restart", 1);
      const session = holder.session!;
      await server().restart();
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
      const [host, port] = server().address.split(":");
      const lossy = await startLossyProxy(host!, Number(port));
      try {
        const holder = await client(server().url, { memberId: "lc-holder" });
        const asker = await client(`zookeeper://${lossy.address}`, { ttlMs: 6000, memberId: "lc-asker" });
        const held = await holder.lock("lost-create").acquire();
        await (await asker.lock("warm-up").acquire()).release(); // the session is open
        lossy.dropReplies = true;
        // Untracked: a tracked one's first message is the first try's multi, which the
        // holder's record refuses (zookeeper-first-try.test.ts has its lost answer).
        const waiting = asker.lock("lost-create").acquire({ timeoutMs: 30_000, takeover: false });
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

    it("a takeover claim landing after its acquire gave up keeps a record: the lost holding's is not erased", async () => {
      const proxy = await startProxy(proxyTarget(server()));
      const name = "late-claim";
      const recordPath = new Layout("", "client-faults").cell("takeover", name);
      try {
        const lost = await client(server().url, { ttlMs: TTL_MS, memberId: "late-lost" });
        const operator = await client(server().url, { memberId: "late-operator" });
        // Every handle of the claimer (its session's, and its driver's, which writes cells) traced.
        const trace = traceHandles();
        const entries = trace.entries;
        let claimer: Coordinator;
        try {
          claimer = await client(`zookeeper://${proxy.address}`, { ttlMs: 4 * TTL_MS, memberId: "late-claimer" });
          await claimer._core.liveSession();
        } finally {
          trace.stop();
        }
        const held = await lost.lock(name).acquire({ takeover: true });
        await operator.revoke(name, { immediate: true });
        await waitFor(() => held.signal.aborted, "the revoked holder's loss");
        const outcome = claimer
          .lock(name)
          .acquire({ timeoutMs: 1000, onTakeover: () => proxy.cut() })
          .then(
            () => null,
            (error: unknown) => error,
          );
        // The hook fenced the revoked holding; its claim's write, cut off, outlives the acquire.
        const error = await outcome;
        assert.ok(error instanceof TimeoutError, `a TimeoutError, got ${String(error)}`);
        proxy.heal(); // the write is sent again once its connection is back, and lands
        const write = `writing ${recordPath}`;
        await waitFor(
          () => entries.some((e) => e.kind === "answer" && e.what === write) && quiet(entries),
          "the late claim's write answered, and whatever the claimer sent after it",
        );
        const next = await operator.lock(name).acquire({ takeover: true, timeoutMs: 30_000 });
        assert.ok(next.token > held.token);
        // The late record names the claimer (its grant was given back unclaimed): a takeover
        // reported of a holding nobody was handed, the cautious side. Deleting it, as a clean
        // holding's, erased the revoked holding's record with it: no takeover reported at all.
        assert.equal(next.takeover?.memberId ?? null, "late-claimer");
        await next.release();
      } finally {
        await proxy.close();
      }
    });

    it("fails a request queued while reconnecting once the server says the session expired (never answered)", async () => {
      const [host, port] = server().address.split(":");
      const proxy = await startProxy({ host: host!, port: Number(port) });
      try {
        const ttlMs = 4000;
        const cut = await client(`zookeeper://${proxy.address}`, { ttlMs, memberId: "queued" });
        const observer = await client(server().url, { memberId: "queued-observer" });
        const cell = cut.cell("queued");
        assert.equal(await cell.get(), null);
        // Its node shows when the server has expired the cut client's sessions.
        const held = await cut.lock("queued").acquire();
        proxy.cut();
        // Past the local deadline every connection of the cut client was dropped long ago
        // (a silent one goes after a quarter of the timeout), so it is reconnecting: the
        // read is queued unsent.
        await waitFor(() => held.signal.aborted, "the cut client's local deadline", 15_000);
        const reading = cell.get().then(
          () => null,
          (error: unknown) => error,
        );
        await (await observer.lock("queued").acquire({ timeoutMs: 30_000 })).release();
        // The cells' handle was last heard at most a ping interval after the session's: one
        // more timeout and the server has expired it too.
        await sleep(ttlMs);
        proxy.heal();
        assert.ok(await settlesWithin(reading, 15_000), "a read queued while reconnecting was never answered");
        const error = await reading;
        assert.ok(error instanceof SessionExpiredError, `a SessionExpiredError, got ${String(error)}`);
        // The next call opens a fresh handle.
        assert.equal(await cell.get(), null);
      } finally {
        await proxy.close();
      }
    });
  },
);

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

/** Every request in `entries` has had its answer. */
function quiet(entries: readonly TraceEntry[]): boolean {
  const open = new Map<string, number>();
  for (const e of entries) {
    if (e.kind === "request") open.set(e.what, (open.get(e.what) ?? 0) + 1);
    else if (e.kind === "answer") open.set(e.what, (open.get(e.what) ?? 0) - 1);
  }
  return [...open.values()].every((n) => n <= 0);
}
