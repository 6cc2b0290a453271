/**
 * The first try of a tracked exclusive acquisition on ZooKeeper (grant-records.ts, "First
 * try"): one multi creating the queue node and the takeover record. What happens in the
 * window between that multi and the grant: a client that dies there, an answer lost there,
 * and a holder ahead whose record's create meets a waiter's first-try record.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FLAGS, ZkHandle } from "../../src/backends/zookeeper/client.js";
import { earlyRecordData } from "../../src/backends/zookeeper/grant-records.js";
import { encodeData, Layout, nodePrefix } from "../../src/backends/zookeeper/paths.js";
import type { Coordinator } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper } from "../harness/zookeeper.js";
import { ownServer } from "./fixtures/backend-suite.js";
import { keepParents } from "./fixtures/zookeeper-parents.js";
import { CONTENDED_KEPT, markContended, type Scope } from "../../src/backends/zookeeper/scope.js";

const NS = "specifics";
const SESSION_MS = 2000;
const layout = new Layout("", NS);

/** The session's own handle (queue nodes, records), as the grants see it. */
async function sessionHandle(coord: Coordinator): Promise<ZkHandle> {
  return ((await coord._core.liveSession()).driver as unknown as { handle: ZkHandle }).handle;
}

/** Whether `what` is a first try's multi (the queue node's create, then the record's). */
function isFirstTry(what: string, recordPath: string): boolean {
  return what.startsWith("applying create ") && what.endsWith(`create ${recordPath}`);
}

describe("zookeeper first try of a tracked acquisition", { timeout: 120_000 }, () => {
  let raw: ZkHandle;
  const { client, server } = ownServer(() => startZooKeeper(), {
    started: async (own) => {
      raw = await ZkHandle.open({ connect: own.address, chroot: "", sessionTimeoutMs: SESSION_MS }, SESSION_MS);
    },
    stopping: () => raw.close(),
  });

  it("a session whose last acquisition of a lock waited skips the first try; a grant without a wait turns it on", async () => {
    const name = "skip-try";
    const recordPath = layout.cell("takeover", name);
    const unkeep = await keepParents(raw, NS, name);
    try {
      const coord = await client({ memberId: name, ttlMs: SESSION_MS });
      const handle = await sessionHandle(coord);
      const other = await client({ memberId: "skip-try-ahead", ttlMs: SESSION_MS });
      let tries = 0;
      handle.trace = (e) => {
        if (e.kind === "request" && isFirstTry(e.what, recordPath)) tries++;
      };
      // Waits behind another holder: its first try is refused (it is not first), then granted.
      const ahead = await other.lock(name).acquire({ takeover: false });
      const waiting = coord.lock(name).acquire();
      await waitForWaiters(coord, name, 1);
      await ahead.release();
      await (await waiting).release();
      assert.equal(tries, 1, "the acquisition that waited sent its first try");
      // Waits again: this one skips the first try, and is still granted with its record.
      const again = await other.lock(name).acquire({ takeover: false });
      const second = coord.lock(name).acquire();
      await waitForWaiters(coord, name, 1);
      await again.release();
      const granted = await second;
      assert.equal(tries, 1, "the next acquisition after a wait skips the first try");
      assert.ok((await raw.exists(recordPath)) !== null, "the grant wrote its record");
      assert.equal(granted.takeover, null);
      await granted.release();
      // Granted without a wait (the lock is free, but the first try is skipped: one more
      // skip), then the first try is back.
      await (await coord.lock(name).acquire()).release();
      assert.equal(tries, 1, "skipped once more, right after a wait");
      await (await coord.lock(name).acquire()).release();
      assert.equal(tries, 2, "a grant without a wait turned the first try back on");
      assert.equal(await raw.exists(recordPath), null, "clean releases leave no record");
    } finally {
      await unkeep();
    }
  });

  it("a client that dies after its first try, before its grant, leaves a takeover (the cautious side)", async () => {
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    const recordPath = layout.cell("takeover", "dies");
    const unkeep = await keepParents(raw, NS, "dies");
    try {
      const dying = await client({ memberId: "dies", ttlMs: SESSION_MS }, `zookeeper://${proxy.address}`);
      const handle = await sessionHandle(dying);
      handle.trace = (e) => {
        // Its answer never comes back: the client cannot learn that it was granted.
        if (e.kind === "request" && isFirstTry(e.what, recordPath)) proxy.setLatency({ down: { ms: 10_000 } });
      };
      const acquiring = dying.lock("dies").acquire();
      acquiring.catch(() => {});
      await waitFor(async () => (await raw.exists(recordPath)) !== null, "the first try to land");
      const written = await raw.exists(recordPath);
      proxy.cut(); // the server expires the session: its node goes, its record stays
      await assert.rejects(acquiring);
      const next = await client({ memberId: "after-dies", ttlMs: SESSION_MS });
      const handed = await next.lock("dies").acquire({ timeoutMs: 30_000 });
      const takeover = handed.takeover ?? assert.fail("no takeover: a record that was there was missed");
      assert.deepEqual({ member: takeover.memberId, token: takeover.token }, { member: "dies", token: written?.czxid });
      assert.ok(handed.token > takeover.token);
      assert.equal((await handed.release()).status, "released");
      assert.equal(await raw.exists(recordPath), null);
    } finally {
      await unkeep();
      await proxy.close();
    }
  });

  it("a first try whose answer was lost: its record is deleted again and written at the grant", async () => {
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    const recordPath = layout.cell("takeover", "lost-try");
    const unkeep = await keepParents(raw, NS, "lost-try");
    try {
      const coord = await client({ memberId: "lost-try", ttlMs: SESSION_MS }, `zookeeper://${proxy.address}`);
      const handle = await sessionHandle(coord);
      const sent: string[] = [];
      handle.trace = (e) => {
        if (e.kind !== "request") return;
        sent.push(e.what);
        if (isFirstTry(e.what, recordPath)) proxy.setLatency({ down: { ms: 1000 } });
      };
      const acquiring = observed(coord.lock("lost-try").acquire());
      await waitFor(async () => (await raw.exists(recordPath)) !== null, "the first try to land");
      proxy.setLatency({});
      proxy.reset(); // its answer, held in the proxy, is lost with the connection
      const held = await acquiring;
      handle.trace = null;
      assert.equal(held.takeover, null, "its own first try's record is no takeover");
      assert.equal(sent.filter((w) => isFirstTry(w, recordPath)).length, 1, "one first try");
      assert.ok(
        sent.some((w) => w.startsWith("applying check ") && w.endsWith(`delete ${recordPath}`)),
        `the record deleted again: ${sent.join("; ")}`,
      );
      const record = (await coord.inspect()).takeovers?.find((r) => r.name === "lost-try");
      assert.deepEqual({ state: record?.state, token: record?.token }, { state: "held", token: held.token });
      assert.equal((await held.release()).status, "released");
      assert.equal(await raw.exists(recordPath), null);
    } finally {
      await unkeep();
      await proxy.close();
    }
  });

  it("a waiter's late drop (its answer lost) leaves the record the holder ahead wrote at its grant", async () => {
    const [host, port] = server().address.split(":") as [string, string];
    const proxyA = await startProxy({ host, port: Number(port) });
    const proxyW = await startProxy({ host, port: Number(port) });
    const recordPath = layout.cell("takeover", "late");
    const unkeep = await keepParents(raw, NS, "late");
    try {
      const untracked = await (await client({ memberId: "late-u" })).lock("late").acquire({ takeover: false });
      const a = await client({ memberId: "late-a", ttlMs: SESSION_MS }, `zookeeper://${proxyA.address}`);
      const aAcquiring = a.lock("late").acquire({ timeoutMs: 30_000 });
      await waitForWaiters(a, "late", 1);
      await waitFor(async () => (await raw.exists(recordPath)) === null, "the first waiter's record dropped");
      // The waiter's session outlives the held answer by a margin: only its connection goes.
      const w = await client({ memberId: "late-w", ttlMs: SESSION_MS * 4 }, `zookeeper://${proxyW.address}`);
      const handle = await sessionHandle(w);
      let drops = 0;
      handle.trace = (e) => {
        if (e.kind !== "request" || !e.what.startsWith("applying check ") || !e.what.endsWith(`delete ${recordPath}`)) {
          return;
        }
        drops++;
        if (drops === 1) proxyW.setLatency({ down: { ms: 10_000 } }); // the drop lands, its answer is held
      };
      const wAcquiring = w.lock("late").acquire({ timeoutMs: 30_000 });
      wAcquiring.catch(() => {});
      await waitFor(async () => drops === 1 && (await raw.exists(recordPath)) === null, "the waiter's drop to land");
      await untracked.release();
      const heldA = await aAcquiring; // its record written at its grant
      assert.notEqual(await raw.exists(recordPath), null, "the holder's record");
      proxyW.setLatency({});
      proxyW.reset(); // the drop's answer is lost: it is sent again once reconnected
      await waitFor(async () => drops >= 2, "the drop sent again");
      proxyA.cut(); // the holder's session expires: its record must stay for the next holder
      const heldW = await wAcquiring;
      handle.trace = null;
      const takeover = heldW.takeover ?? assert.fail("no takeover: the holder's record was deleted by a waiter");
      assert.deepEqual({ member: takeover.memberId, token: takeover.token }, { member: "late-a", token: heldA.token });
      assert.equal((await heldW.release()).status, "released");
      assert.equal(await raw.exists(recordPath), null);
    } finally {
      await unkeep();
      await proxyA.close();
      await proxyW.close();
    }
  });

  it("a holder whose record meets a waiter's first-try record replaces it; the waiter's drop leaves it", async () => {
    const queue = layout.queue("lock", "race");
    const recordPath = layout.cell("takeover", "race");
    const ahead = await (await client({ memberId: "race-ahead" })).lock("race").acquire({ takeover: false });
    const holder = await client({ memberId: "race-holder", ttlMs: SESSION_MS });
    const acquiring = holder.lock("race").acquire({ timeoutMs: 30_000 });
    await waitForWaiters(holder, "race", 1);
    // A waiter behind it whose first try lands now, before the holder's grant writes the
    // record: what a waiter's multi does, sent by hand.
    const data = encodeData({ id: "race-waiter", sid: raw.sessionId, s: Date.now(), v: 1 });
    const made = await raw.multi([
      {
        op: "create",
        path: `${queue}/${nodePrefix("rawwaiter", "exclusive", 1)}`,
        data,
        flags: FLAGS.ephemeralSequential,
      },
      {
        op: "create",
        path: recordPath,
        data: earlyRecordData('{"m":"race-waiter"}', Date.now()),
        flags: FLAGS.persistent,
      },
    ]);
    const waiterNode = made.paths.get(0) ?? assert.fail("the waiter's node");
    await ahead.release();
    const held = await acquiring;
    assert.equal(held.takeover, null, "a waiter's record is no takeover");
    // The waiter, not granted, drops its record as the driver does: only at version 0.
    await assert.rejects(
      raw.multi([
        { op: "check", path: waiterNode, version: -1 },
        { op: "delete", path: recordPath, version: 0 },
      ]),
    );
    const record = (await holder.inspect()).takeovers?.find((r) => r.name === "race");
    assert.deepEqual({ state: record?.state, token: record?.token }, { state: "held", token: held.token });
    assert.equal((await held.release()).status, "released");
    assert.equal(await raw.exists(recordPath), null, "the release deleted the replaced record");
    await raw.delete(waiterNode);
  });
});

describe("zookeeper contended-queue memory", () => {
  it("keeps at most CONTENDED_KEPT queues, forgetting the least recently contended first", () => {
    const scope = { contended: new Set<string>() } as unknown as Scope;
    for (let i = 0; i < CONTENDED_KEPT; i++) markContended(scope, `/q${i}`, true);
    markContended(scope, "/q0", true); // contended again: now the most recent
    markContended(scope, "/new", true);
    assert.equal(scope.contended.size, CONTENDED_KEPT);
    assert.ok(scope.contended.has("/q0"), "the queue contended again is kept");
    assert.ok(!scope.contended.has("/q1"), "the least recently contended is forgotten");
    markContended(scope, "/new", false);
    assert.ok(!scope.contended.has("/new"), "a grant without a wait forgets the queue");
  });
});
