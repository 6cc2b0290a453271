/**
 * Takeover records on ZooKeeper, written by the driver (grant-records.ts): tracked by
 * default, the record in one multi with the queue node's create (the first try) or, when
 * that try does not grant, with the grant's node check, and deleted in one multi with the
 * node. Round trips are counted from every ZooKeeper handle's trace (the session's
 * and the driver's, which serves cells), not timed: a request's level is one more than the
 * highest answer that came before it was sent.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type TraceEntry, ZkHandle } from "../../src/backends/zookeeper/client.js";
import { zkCells } from "../../src/backends/zookeeper/cells.js";
import { Layout } from "../../src/backends/zookeeper/paths.js";
import type { Coordinator } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { Holder } from "../harness/holder.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper } from "../harness/zookeeper.js";
import { ownServer } from "./fixtures/backend-suite.js";
import { keepParents as keepParentsOf } from "./fixtures/zookeeper-parents.js";
import { traceHandles } from "./fixtures/zookeeper-trace.js";

const NS = "specifics";
const SESSION_MS = 2000;

/**
 * Round trips between marks `from` and `to` (see the module comment); pings, which come on
 * their own clock, do not count.
 */
function roundTrips(entries: readonly TraceEntry[], from: string, to: string): number {
  const start = entries.findIndex((e) => e.kind === "grant" && e.what === from);
  const end = entries.findIndex((e) => e.kind === "grant" && e.what === to);
  assert.ok(start >= 0 && end > start, `marks ${from} and ${to}`);
  const sent = new Map<string, number[]>();
  let seen = 0;
  for (const e of entries.slice(start, end)) {
    if (e.what === "reading /") continue;
    if (e.kind === "request") sent.set(e.what, [...(sent.get(e.what) ?? []), seen + 1]);
    if (e.kind === "answer") seen = Math.max(seen, sent.get(e.what)?.shift() ?? 0);
  }
  return seen;
}

/** Whether `what` is the multi of a grant's record (grant-records.ts's writeRecord), not the first try's. */
function isGrantMulti(what: string, recordPath: string): boolean {
  return what.startsWith("applying check ") && what.endsWith(`create ${recordPath}, set ${recordPath}`);
}

describe("zookeeper takeover records", { timeout: 120_000 }, () => {
  let raw: ZkHandle;
  const { client, server } = ownServer(() => startZooKeeper(), {
    started: async (own) => {
      raw = await ZkHandle.open({ connect: own.address, chroot: "", sessionTimeoutMs: SESSION_MS }, SESSION_MS);
    },
    stopping: () => raw.close(),
  });

  const keepParents = (namespace: string, name: string) => keepParentsOf(raw, namespace, name);

  /** A coordinator whose handles are all traced into `entries`. */
  async function traced(
    memberId: string,
    namespace = NS,
  ): Promise<{ coord: Coordinator; trace: ReturnType<typeof traceHandles> }> {
    const trace = traceHandles();
    try {
      const coord = await client({ memberId, namespace, ttlMs: SESSION_MS });
      // The session is opened lazily: the first acquisition's own handle is traced too.
      await coord._core.liveSession();
      return { coord, trace };
    } finally {
      trace.stop();
    }
  }

  it("tracks by default: acquire and release are one round trip each, as untracked", async () => {
    const { coord, trace } = await traced("rt");
    const unkeep = await keepParents(NS, "rt");
    try {
      await roundTripsOfRt(coord, trace);
    } finally {
      await unkeep();
    }
  });

  async function roundTripsOfRt(coord: Coordinator, trace: ReturnType<typeof traceHandles>): Promise<void> {
    const lock = coord.lock("rt");
    for (const tracked of [false, true]) {
      const options = tracked ? {} : { takeover: false };
      await (await lock.acquire(options)).release(); // parents made, warm
      trace.mark(`acquire ${tracked}`);
      const handle = await lock.acquire(options);
      trace.mark(`acquired ${tracked}`);
      if (tracked) {
        const record = (await coord.inspect()).takeovers?.find((r) => r.name === "rt");
        assert.deepEqual({ state: record?.state, token: record?.token }, { state: "held", token: handle.token });
      }
      trace.mark(`release ${tracked}`);
      assert.equal((await handle.release()).status, "released");
      trace.mark(`released ${tracked}`);
    }
    const rt = (what: string, from: string, to: string) => [what, roundTrips(trace.entries, from, to)];
    assert.deepEqual(
      [
        rt("untracked acquire", "acquire false", "acquired false"),
        rt("untracked release", "release false", "released false"),
        rt("tracked acquire", "acquire true", "acquired true"),
        rt("tracked release", "release true", "released true"),
      ],
      [
        ["untracked acquire", 1],
        ["untracked release", 1],
        ["tracked acquire", 1],
        ["tracked release", 1],
      ],
    );
    assert.deepEqual((await coord.inspect()).takeovers, [], "the release deleted the record");
  }

  it("makes parents the server removed again in the round trip of the retried create", async () => {
    // A namespace of its own: no other lock's parent in the way of the deletes.
    const { coord, trace } = await traced("parents", "parents");
    const layout = new Layout("", "parents");
    const lock = coord.lock("parents");
    await (await lock.acquire()).release();
    // What the server's container manager does to empty parents, at a time of our choosing.
    for (const path of [layout.queue("lock", "parents"), `${layout.queues}/lock`, layout.queues]) {
      await raw.delete(path);
    }
    for (const path of [layout.cellSpace("takeover"), `${layout.root}/c`]) await raw.delete(path);
    assert.equal(await raw.exists(layout.queues), null);
    assert.equal(await raw.exists(`${layout.root}/c`), null);
    trace.mark("acquire");
    const handle = await lock.acquire();
    trace.mark("acquired");
    // The first try's multi (refused: the queue's parent), those parents with the multi again
    // (refused: the takeover space), its parents with the multi again.
    assert.equal(roundTrips(trace.entries, "acquire", "acquired"), 3);
    assert.equal(handle.takeover, null);
    await handle.release();
  });

  it("a SIGKILLed holder that asked for nothing leaves a takeover for the next holder", async () => {
    const url = new URL(server().url);
    url.searchParams.set("namespace", NS);
    const holder = new Holder(url.href, "killed", SESSION_MS, undefined, {});
    try {
      const acquired = await holder.next((e) => e.event === "acquired", "the holder's grant");
      const next = await client({ memberId: "next", ttlMs: SESSION_MS });
      const recordPath = new Layout("", NS).cell("takeover", "killed");
      const waiting = next.lock("killed").acquire({ timeoutMs: 30_000 });
      await waitForWaiters(next, "killed", 1);
      await holder.stop();
      const handle = await waiting;
      const takeover = handle.takeover ?? assert.fail("no takeover handed over");
      assert.deepEqual(
        { member: takeover.memberId, token: takeover.token },
        { member: `holder-${holder.child.pid}`, token: BigInt(acquired.token ?? "") },
      );
      assert.ok(handle.token > takeover.token, `token ${handle.token} after ${takeover.token}`);
      // The record outlived the holder's session: a persistent node, now the new holder's.
      const stat = await raw.exists(recordPath);
      assert.equal(stat?.ephemeralOwner, "0000000000000000");
      assert.equal((await handle.release()).status, "released");
      await waitFor(async () => (await raw.exists(recordPath)) === null, "the release to delete the record");
      const after = await next.lock("killed").acquire();
      assert.equal(after.takeover, null, "handed over once");
      await after.release();
    } finally {
      await holder.stop();
    }
  });

  it("a record multi whose answer was lost: sent again, its record found as its own, no takeover", async () => {
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    let unkeep: (() => Promise<void>) | undefined;
    try {
      const coord = await client({ memberId: "lost-answer", ttlMs: SESSION_MS }, `zookeeper://${proxy.address}`);
      const { handle } = (await coord._core.liveSession()).driver as unknown as { handle: ZkHandle };
      const recordPath = new Layout("", NS).cell("takeover", "lost-answer");
      unkeep = await keepParents(NS, "lost-answer");
      const sessionId = (await coord._core.liveSession()).id;
      // An untracked holder ahead: the first try does not grant, the record is written at the grant.
      const ahead = await (await client({ memberId: "lost-answer-ahead" }))
        .lock("lost-answer")
        .acquire({ takeover: false });
      let multis = 0;
      let sent = () => {};
      const multiSent = new Promise<void>((resolve) => {
        sent = resolve;
      });
      handle.trace = (e) => {
        if (e.kind === "request" && isGrantMulti(e.what, recordPath)) {
          // From now on the server's answers are held back (its answer cannot have come
          // yet), so the record's multi reaches the server and its answer does not come back.
          if (multis++ === 0) proxy.setLatency({ down: { ms: 1000 } });
          sent();
        }
      };
      const acquiring = observed(coord.lock("lost-answer").acquire());
      await waitForWaiters(coord, "lost-answer", 1);
      await ahead.release();
      await multiSent;
      await waitFor(async () => (await raw.exists(recordPath)) !== null, "the multi to land");
      proxy.setLatency({});
      proxy.reset(); // the answer, held in the proxy, is lost with the connection
      const held = await acquiring;
      handle.trace = null;
      assert.ok(multis >= 2, `the multi sent again after the reconnection (${multis} sent)`);
      assert.equal((await coord._core.liveSession()).id, sessionId, "the same session");
      assert.equal(held.takeover, null, "its own record, written by the first multi, is no takeover");
      const record = (await coord.inspect()).takeovers?.find((r) => r.name === "lost-answer");
      assert.deepEqual({ state: record?.state, token: record?.token }, { state: "held", token: held.token });
      assert.ok(proxy.acceptedCount >= 2, "reconnected");
      assert.equal((await held.release()).status, "released");
      assert.equal(await raw.exists(recordPath), null, "the release deleted the record");
    } finally {
      await unkeep?.();
      await proxy.close();
    }
  });

  it("a release that comes after its node was deleted (revoked) leaves the record", async () => {
    const a = await client({ memberId: "rv-a", ttlMs: SESSION_MS });
    const b = await client({ memberId: "rv-b", ttlMs: SESSION_MS });
    const held = await a.lock("revoked").acquire();
    const queue = new Layout("", NS).queue("lock", "revoked");
    const { handle } = (await a._core.liveSession()).driver as unknown as { handle: ZkHandle };
    const [node] = (await handle.children(queue))?.children ?? [];
    // The deletion goes out first on the holder's own connection, so the server applies it
    // before the release's multi, whatever the holder has heard by then: a revoke landing
    // just before a release. The multi fails on the node, so the record must stay.
    const sent: string[] = [];
    handle.trace = (e) => {
      if (e.kind === "request") sent.push(e.what);
    };
    const deleted = handle.delete(`${queue}/${node}`);
    try {
      await held.release();
    } finally {
      handle.trace = null;
    }
    assert.equal(await deleted, true);
    const recordPath = new Layout("", NS).cell("takeover", "revoked");
    assert.ok(
      sent.includes(`applying delete ${queue}/${node}, delete ${recordPath}`),
      `the release's multi went out (and failed on the node): ${sent.join("; ")}`,
    );
    const next = await b.lock("revoked").acquire({ timeoutMs: 10_000 });
    assert.equal(next.takeover?.token, held.token, "the holding that ended unreleased is handed over");
    await next.release();
  });

  /** The session's own handle (queue nodes, records), as the grants see it. */
  async function sessionHandle(coord: Coordinator): Promise<ZkHandle> {
    return ((await coord._core.liveSession()).driver as unknown as { handle: ZkHandle }).handle;
  }

  for (const at of ["first try", "grant"] as const) {
    it(`an acquisition cancelled while its record's multi is out (${at}): no handle, and no record left`, async () => {
      const name = `cancel-record-${at === "grant" ? "g" : "f"}`;
      const coord = await client({ memberId: name, ttlMs: SESSION_MS });
      const handle = await sessionHandle(coord);
      const recordPath = new Layout("", NS).cell("takeover", name);
      // With an untracked holder ahead, the first try does not grant: the grant's multi writes it.
      const ahead = at === "grant" ? await (await client()).lock(name).acquire({ takeover: false }) : null;
      // The first try's record goes when it is refused: the server's container check must not
      // take the emptied takeover parent before the grant's multi (which would then go twice).
      const unkeep = await keepParents(NS, name);
      const cancel = new AbortController();
      let multis = 0;
      handle.trace = (e) => {
        if (e.kind !== "request" || !e.what.includes(`create ${recordPath}`)) return;
        // Called as the multi is sent: the signal aborts with the record on its way.
        if ((at === "first try" || isGrantMulti(e.what, recordPath)) && multis++ === 0) cancel.abort();
      };
      try {
        const acquiring = observed(coord.lock(name).acquire({ signal: cancel.signal }));
        if (ahead) {
          await waitForWaiters(coord, name, 1);
          await ahead.release();
        }
        await assert.rejects(acquiring, { name: "AbortError" });
      } finally {
        handle.trace = null;
        await unkeep();
      }
      assert.equal(multis, 1, "the record's multi went out once");
      await waitFor(async () => (await raw.exists(recordPath)) === null, "the record to go with the node");
      const next = await coord.lock(name).acquire({ timeoutMs: 10_000 });
      assert.equal(next.takeover, null, "no takeover naming the cancelled grant");
      await next.release();
    });
  }

  it("an untracked acquisition cancelled while its create is out: it rejects and nothing is held", async () => {
    const name = "cancel-untracked";
    const coord = await client({ memberId: name, ttlMs: SESSION_MS });
    const handle = await sessionHandle(coord);
    // The queue's parent stays: the first create is the one that grants.
    const unkeep = await keepParents(NS, name);
    const cancel = new AbortController();
    let creates = 0;
    handle.trace = (e) => {
      // Called as the request is sent: the answer that grants the lock is on its way.
      if (e.kind === "request" && e.what.startsWith("creating ") && e.what.includes(name) && creates++ === 0) {
        cancel.abort();
      }
    };
    try {
      await assert.rejects(coord.lock(name).acquire({ takeover: false, signal: cancel.signal }), {
        name: "AbortError",
      });
    } finally {
      handle.trace = null;
    }
    assert.equal(creates, 1, "the queue node's create went out once");
    const other = await client({ memberId: "after-untracked-cancel", ttlMs: SESSION_MS });
    const free = await other.lock(name).tryAcquire({ takeover: false });
    assert.ok(free, "the lock was given back before the acquisition rejected");
    await free.release();
    await unkeep();
  });

  it("a lost record multi found as its own, then cancelled: the record goes with the node", async () => {
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    let unkeep: (() => Promise<void>) | undefined;
    try {
      const coord = await client({ memberId: "own-cancel", ttlMs: SESSION_MS }, `zookeeper://${proxy.address}`);
      const handle = await sessionHandle(coord);
      const recordPath = new Layout("", NS).cell("takeover", "own-cancel");
      unkeep = await keepParents(NS, "own-cancel");
      const ahead = await (await client({ memberId: "own-cancel-ahead" }))
        .lock("own-cancel")
        .acquire({ takeover: false });
      const cancel = new AbortController();
      let multis = 0;
      let sent = () => {};
      const multiSent = new Promise<void>((resolve) => {
        sent = resolve;
      });
      handle.trace = (e) => {
        if (e.kind !== "request") return;
        if (isGrantMulti(e.what, recordPath)) {
          if (multis++ === 0) proxy.setLatency({ down: { ms: 1000 } }); // its answer held back
          sent();
        }
        // The retried multi was refused (the first had landed): the record is read, and
        // the acquisition is given up right then.
        if (e.what === `reading ${recordPath}`) cancel.abort();
      };
      const acquiring = coord.lock("own-cancel").acquire({ signal: cancel.signal });
      acquiring.catch(() => {});
      await waitForWaiters(coord, "own-cancel", 1);
      await ahead.release();
      await multiSent;
      await waitFor(async () => (await raw.exists(recordPath)) !== null, "the multi to land");
      proxy.setLatency({});
      proxy.reset(); // the answer is lost with the connection
      await assert.rejects(acquiring, { name: "AbortError" });
      assert.ok(cancel.signal.aborted && multis >= 2, `the multi sent again and the record read (${multis} sent)`);
      await waitFor(async () => (await raw.exists(recordPath)) === null, "its own record to go with the node");
      handle.trace = null;
    } finally {
      await unkeep?.();
      await proxy.close();
    }
  });

  it("a cell write whose read shows less than the version it knows sends a barrier and reads again", async () => {
    const layout = new Layout("", "barrier");
    const cells = zkCells(async () => raw, layout, "", AbortSignal.timeout(30_000));
    const written = await cells.put("s", "k", "v", {});
    assert.ok(written.ok);
    const sent: string[] = [];
    raw.trace = (e) => {
      if (e.kind === "answer") sent.push(e.what);
    };
    try {
      // A version written since, as far as the caller knows (another session's write that
      // this server might not have applied yet): re-read behind a SYNC the server answered.
      const refused = await cells.delete("s", "k", { ifVersion: written.version + 1000n, forget: true });
      assert.equal(refused.ok, false);
      // And one the read already shows: no barrier.
      const deleted = await cells.delete("s", "k", { ifVersion: written.version, forget: true });
      assert.ok(deleted.ok);
    } finally {
      raw.trace = null;
    }
    const path = layout.cell("s", "k");
    assert.deepEqual(
      sent.filter((w) => w.startsWith("syncing")),
      [`syncing ${path}`],
    );
    assert.equal(await raw.exists(path), null);
  });

  it("a downgrade, and a close, of a default-tracked lock leave no record", async () => {
    const coord = await client({ memberId: "untrack", ttlMs: SESSION_MS });
    const layout = new Layout("", NS);
    const downgraded = await coord.lock("dg").acquire();
    assert.notEqual(await raw.exists(layout.cell("takeover", "dg")), null, "tracked");
    await downgraded.downgrade();
    assert.equal(await raw.exists(layout.cell("takeover", "dg")), null, "the downgrade deleted the record");
    await downgraded.release();
    await coord.lock("closed").acquire();
    assert.notEqual(await raw.exists(layout.cell("takeover", "closed")), null, "tracked");
    await coord.close();
    assert.equal(await raw.exists(layout.cell("takeover", "closed")), null, "the close deleted the record");
  });
});
