/**
 * The etcd one-round-trip handoff (src/backends/etcd/handoff.ts) at its edges, on a real
 * etcd: a lease revoked deletes the head and the waiter second in line in one revision,
 * and the window between a handoff grant and its recording is seen by `inspect()` and
 * `revoke`.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Etcd3, Range } from "etcd3";
import { type Coordinator, connect, type LockHandle } from "../../src/index.js";
import { waitFor, waitForWaiters } from "../conformance/helpers.js";
import { type EtcdServer, startEtcd } from "../harness/etcd.js";
import { startProxy } from "../harness/proxy.js";

/** etcd's own counters (from /metrics) of live watchers and of MVCC transactions. */
async function counters(server: EtcdServer): Promise<{ watchers: number; txns: number }> {
  const text = await (await fetch(`http://${server.endpoints[0]}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  return { watchers: value("etcd_debugging_mvcc_watcher_total"), txns: value("etcd_mvcc_txn_total") };
}

/**
 * Starts an exclusive wait that will be second in line, and waits until etcd has served
 * its watch and the read after it: its join (a transaction nested in the fence's, which
 * etcd counts as two) and that read (one).
 */
async function queueSecond(
  server: EtcdServer,
  coord: Coordinator,
  name: string,
): Promise<{ waiting: Promise<LockHandle> }> {
  const start = await counters(server);
  // Untracked: these tests are about the handoff's own recording. A tracked grant adds the
  // core's takeover record write after it (etcd writes it as a cell), which a delayed or
  // refused write would fail first, before the recording under test.
  const waiting = coord.lock(name).acquire({ timeoutMs: 60_000, takeover: false });
  waiting.catch(() => {});
  await waitFor(async () => {
    const now = await counters(server);
    return now.watchers > start.watchers && now.txns >= start.txns + 3;
  }, "the waiter's watch and its read after it");
  // Wrapped: an async function returning the promise itself would wait for the grant.
  return { waiting };
}

describe("etcd handoff", () => {
  let server: EtcdServer;
  let raw: Etcd3;
  const coords: Coordinator[] = [];
  const client = async (memberId: string, url = server.url) => {
    const coord = await connect(url, { namespace: "handoff", memberId, ttlMs: 10_000 });
    coords.push(coord);
    return coord;
  };
  before(async () => {
    server = await startEtcd();
    raw = new Etcd3({ hosts: server.endpoints });
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    raw.close();
    await server.stop();
  });

  // The holder H and the waiter K second in line share a lease (one coordinator); L waits
  // third on another. Ending that lease deletes H and K in one revision, in key order: when
  // H's key sorts first, its deletion event comes first in that revision's batch.
  const revokes: [string, (a: Coordinator, b: Coordinator, name: string) => Promise<unknown>][] = [
    [
      "etcdctl lease revoke",
      async (a, _b, name) => {
        const { kvs } = await raw.getAll().prefix(`baton/handoff/q/lock/${name}/`).exec();
        const lease = kvs.find((kv) => kv.key.toString().includes(a.session!.id))!.lease;
        return raw.leaseClient.leaseRevoke({ ID: lease });
      },
    ],
    ["coord.revoke immediate", (a, b, name) => b.revoke(name, { memberId: a.memberId, immediate: true })],
  ];
  for (const [how, revoke] of revokes) {
    it(`never grants a waiter by the revision that deleted its own key too (${how})`, async () => {
      const b = await client(`b-${how}`);
      let headFirst = 0;
      // Until the head's key sorted first three times (keys end in random bytes: p = 1/2).
      for (let trial = 0; headFirst < 3 && trial < 24; trial++) {
        const name = `same-${how.split(" ")[0]}-${trial}`;
        const a = await client(`a-${how}-${trial}`);
        const h = await a.lock(name).acquire();
        const { waiting: kWait } = await queueSecond(server, a, name);
        const lWait = b.lock(name).acquire({ timeoutMs: 60_000 });
        const view = await waitForWaiters(b, name, 2);
        const [hKey, kKey] = await raw.getAll().prefix(`baton/handoff/q/lock/${name}/`).sort("Create", "Ascend").keys();
        if (hKey! < kKey!) headFirst++;
        assert.equal(view.locks.find((l) => l.name === name)?.holders[0]?.token, h.token);
        await revoke(a, b, name);
        const l = await lWait;
        await l.release();
        // K's place went with its lease: it queued again on a fresh session, behind L.
        const k = await kWait;
        assert.ok(k.token > l.token, `K's token ${k.token} must follow L's ${l.token} (trial ${trial}, ${how})`);
        await k.release();
      }
      assert.equal(headFirst, 3, "the head's key sorted first in three trials");
    });
  }

  it("shows a handed-off holder whose recording has not landed as the holder, and revoke ends it", async () => {
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    try {
      const a = await client("window-a");
      const k = await client("window-k", `etcd://${proxy.address}`);
      const name = "window";
      const h = await a.lock(name).acquire();
      const { waiting: kWait } = await queueSecond(server, k, name);
      // K's requests from now on reach etcd a minute late; what etcd sends it is not delayed.
      proxy.setLatency({ up: { ms: 60_000 } });
      await h.release();
      const granted = await kWait;
      assert.equal(granted.held, true);
      assert.ok(granted.token > h.token);
      const lock = (await a.inspect()).locks.find((l) => l.name === name);
      assert.deepEqual(
        lock?.holders.map((x) => [x.memberId, x.sessionId, x.mode]),
        [["window-k", k.session!.id, "exclusive"]],
      );
      assert.deepEqual(lock?.waiters, []);
      assert.ok(lock!.holders[0]!.token >= granted.token, "the token shown is no smaller than the grant's");
      const revoked = await a.revoke(name, { immediate: true });
      assert.deepEqual(
        revoked.map((r) => r.sessionId),
        [k.session!.id],
      );
      const next = await a.lock(name).acquire({ timeoutMs: 30_000 });
      assert.ok(next.token > lock!.holders[0]!.token);
      // K hears of it once its connection is back (the delayed bytes are dropped with it).
      proxy.setLatency({});
      proxy.cut();
      proxy.heal();
      await waitFor(() => !granted.held, "K's loss signal after the heal", 30_000);
      await next.release();
    } finally {
      await proxy.close();
    }
  });
});

describe("etcd handoff whose recording etcd refuses", () => {
  let server: EtcdServer;
  let root: Etcd3;
  const coords: Coordinator[] = [];
  const writable = { permission: "Readwrite" as const, range: Range.prefix("baton/") };
  before(async () => {
    server = await startEtcd();
    const raw = new Etcd3({ hosts: server.endpoints });
    await raw.role("root").create();
    await raw.user("root").create("r00t");
    await raw.user("root").addRole("root");
    await raw.role("baton").create();
    await raw.role("baton").grant(writable);
    await raw.user("k").create("k3y");
    await raw.user("k").addRole("baton");
    await raw.auth.authEnable({});
    raw.close();
    root = new Etcd3({ hosts: server.endpoints, auth: { username: "root", password: "r00t" } });
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    root.close();
    await server.stop();
  });

  it("reports the loss of a handoff grant whose recording fails for good (permission denied)", async () => {
    const url = (who: string) => server.url.replace("etcd://", `etcd://${who}@`);
    const a = await connect(url("root:r00t"), { namespace: "refused", memberId: "a" });
    const k = await connect(url("k:k3y"), { namespace: "refused", memberId: "k", ttlMs: 10_000 });
    coords.push(a, k);
    const h = await a.lock("x").acquire();
    const { waiting } = await queueSecond(server, k, "x");
    // K may read the queue but no longer write it: its recording is refused, not delayed.
    await root.role("baton").revoke(writable);
    await root.role("baton").grant({ permission: "Read", range: Range.prefix("baton/") });
    await h.release();
    const granted = await waiting;
    await waitFor(() => !granted.held, "the loss signal of the unrecorded grant", 10_000);
    assert.match((granted.signal.reason as Error).message, /recording a grant .* failed: .*permission/);
  });
});
