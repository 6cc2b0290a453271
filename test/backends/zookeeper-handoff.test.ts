/**
 * Handoff round trips on ZooKeeper (issue 19), counted rather than timed: the waiter's own
 * handle records every request, answer and watch event (`ZkHandle.trace`), and a round trip
 * on the handoff's path is a request answered between the predecessor's deletion event and
 * the grant. An exclusive waiter whose predecessor's deletion makes it first is granted by
 * the event alone (handoff.ts); where the rule cannot tell, it reads the queue as before.
 * Tokens must still grow, and a waiter whose predecessor withdrew must not be granted while
 * the holder ahead of both still holds.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { TraceEntry, ZkHandle } from "../../src/backends/zookeeper/client.js";
import { Layout } from "../../src/backends/zookeeper/paths.js";
import { revokeNodes } from "../../src/backends/zookeeper/revoke.js";
import { AbortError, type Coordinator, type LockHandle, type LockMode } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper } from "../harness/zookeeper.js";
import { ownServer } from "./fixtures/backend-suite.js";
import { isPing, quiet } from "./fixtures/zookeeper-trace.js";

/** The coordinator's current session: its ZooKeeper handle and the server's session id. */
async function sessionOf(coord: Coordinator): Promise<{ handle: ZkHandle; id: string }> {
  const session = await coord._core.liveSession();
  return session.driver as unknown as { handle: ZkHandle; id: string };
}

/** Records everything the coordinator's current session's ZooKeeper handle does. */
async function traced(coord: Coordinator): Promise<TraceEntry[]> {
  const { handle } = await sessionOf(coord);
  const entries: TraceEntry[] = [];
  handle.trace = (entry) => entries.push(entry);
  return entries;
}

/** The answers the last grant waited for after the last deletion event before it. */
function roundTrips(entries: readonly TraceEntry[]): string[] {
  const grant = entries.findLastIndex((e) => e.kind === "grant");
  assert.ok(grant >= 0, "a grant in the trace");
  const event = entries.findLastIndex((e, i) => i < grant && e.kind === "event" && e.what.startsWith("deleted "));
  assert.ok(event >= 0, `a deletion event before the grant in ${JSON.stringify(entries.map((e) => e.what))}`);
  return entries
    .slice(event + 1, grant)
    .filter((e) => e.kind === "answer" && !isPing(e))
    .map((e) => e.what);
}

/** Waits until `entries` show a read of the waiter's predecessor answered, and nothing outstanding. */
async function settled(entries: readonly TraceEntry[], what: string, from = 0): Promise<void> {
  await waitFor(
    () =>
      entries.slice(from).some((e) => e.kind === "answer" && /^reading .*\/n-/.test(e.what)) &&
      quiet(entries.slice(from)),
    what,
  );
}

/** Waits until `entries` show a deletion event, then a queue read answered, and nothing outstanding. */
async function relisted(entries: readonly TraceEntry[], what: string): Promise<void> {
  await waitFor(() => {
    const woken = entries.findIndex((e) => e.kind === "event" && e.what.startsWith("deleted "));
    return (
      woken >= 0 &&
      entries.slice(woken).some((e) => e.kind === "answer" && e.what.startsWith("listing ")) &&
      quiet(entries)
    );
  }, what);
}

/** The path of the waiter's own queue node: the one it writes while it waits. */
function ownNode(entries: readonly TraceEntry[]): string {
  const write = entries.find((e) => e.kind === "request" && /^writing .*\/n-[^/]+$/.test(e.what));
  assert.ok(write, `a write of the waiter's node in ${JSON.stringify(entries.map((e) => e.what))}`);
  return write.what.slice("writing ".length);
}

const queueReads = (answers: readonly string[]) => answers.filter((w) => w.startsWith("listing ")).length;

/**
 * The handoff's own round trips are counted on untracked acquisitions; a tracked one (the
 * default) adds its takeover record's multi (grant-records.ts), counted on its own below.
 */
const UNTRACKED = { takeover: false } as const;

/**
 * Round trips on the path from entry `from` to the last grant: each request's level is one
 * more than the highest level of the answers that came before it was sent (answers to
 * requests from before `from` are level 0), and the result is the highest level answered.
 * Requests sent together, before any of their answers, are one round trip.
 */
function flights(entries: readonly TraceEntry[], from: number): number {
  const grant = entries.findLastIndex((e) => e.kind === "grant");
  const sent = new Map<string, number[]>();
  let seen = 0;
  let highest = 0;
  for (const e of entries.slice(from, grant)) {
    if (isPing(e)) continue;
    if (e.kind === "request") sent.set(e.what, [...(sent.get(e.what) ?? []), seen + 1]);
    if (e.kind === "answer") {
      const level = sent.get(e.what)?.shift() ?? 0;
      seen = Math.max(seen, level);
      highest = Math.max(highest, level);
    }
  }
  return highest;
}

describe("zookeeper handoff round trips", { timeout: 60_000 }, () => {
  const { client, server } = ownServer(() => startZooKeeper());

  it("grants the next exclusive waiter on its predecessor's deletion, with no request in between", async () => {
    const a = await client({ memberId: "rt-a" });
    const b = await client({ memberId: "rt-b" });
    const held = await a.lock("second").acquire();
    const entries = await traced(b);
    const waiting = b.lock("second").acquire(UNTRACKED);
    await settled(entries, "the waiter to read the node ahead of it");
    await held.release();
    const granted = await waiting;
    assert.deepEqual(roundTrips(entries), [], "answers awaited between the deletion event and the grant");
    assert.ok(granted.token > held.token, `token ${granted.token} after ${held.token}`);
    await waitFor(
      async () => (await a.inspect()).locks.find((l) => l.name === "second")?.holders[0]?.token === granted.token,
      "inspect() to show the handed-off token",
    );
    await granted.release();
  });

  it("grants a tracked waiter (the default) one round trip after the deletion: its record's multi", async () => {
    const a = await client({ memberId: "tr-a" });
    const b = await client({ memberId: "tr-b" });
    const held = await a.lock("tracked").acquire();
    const entries = await traced(b);
    const waiting = b.lock("tracked").acquire();
    await settled(entries, "the waiter to read the node ahead of it");
    await held.release();
    const granted = await waiting;
    const event = entries.findLastIndex((e) => e.kind === "event" && e.what.startsWith("deleted "));
    assert.equal(flights(entries, event), 1, `one round trip in ${JSON.stringify(entries.slice(event))}`);
    assert.ok(
      roundTrips(entries).some((w) => w.startsWith("applying check ") && w.includes("/c/takeover/tracked")),
      "the record written with the grant",
    );
    assert.equal(granted.takeover, null, "released cleanly");
    assert.ok(granted.token > held.token, `token ${granted.token} after ${held.token}`);
    await granted.release();
  });

  it("hands off down a queue: the third waiter goes once the second has held, still with no request", async () => {
    const coords = await Promise.all(["q-a", "q-b", "q-c"].map((memberId) => client({ memberId })));
    const [a, b, c] = coords as [Coordinator, Coordinator, Coordinator];
    const first = await a.lock("queue").acquire();
    const traceB = await traced(b);
    const traceC = await traced(c);
    const waitingB = b.lock("queue").acquire(UNTRACKED);
    await settled(traceB, "B to wait");
    const waitingC = c.lock("queue").acquire(UNTRACKED);
    await settled(traceC, "C to wait");
    await first.release();
    const second = await waitingB;
    assert.deepEqual(roundTrips(traceB), [], "B's answers awaited after the deletion event");
    // B's grant note tells C that B was granted: C reads B again and gets ready.
    const changed = () => traceC.findIndex((e) => e.kind === "event" && e.what.startsWith("changed "));
    await waitFor(() => changed() >= 0, "C to see B's note");
    await settled(traceC, "C to read B again", changed());
    await second.release();
    const third = await waitingC;
    assert.deepEqual(roundTrips(traceC), [], "C's answers awaited after the deletion event");
    assert.ok(
      first.token < second.token && second.token < third.token,
      `tokens ${first.token}, ${second.token}, ${third.token}`,
    );
    await third.release();
  });

  it("reads the queue when the node ahead is a reader, whose token its node does not bound", async () => {
    const a = await client({ memberId: "sh-a" });
    const b = await client({ memberId: "sh-b" });
    const reader = await a.lock("after-reader").acquire({ mode: "shared" });
    const entries = await traced(b);
    const waiting = b.lock("after-reader").acquire();
    await settled(entries, "the writer to wait for the reader");
    await reader.release();
    const writer = await waiting;
    assert.equal(roundTrips(entries).filter((w) => w.startsWith("listing ")).length, 1, "one queue read");
    assert.ok(writer.token > reader.token, `token ${writer.token} after ${reader.token}`);
    await writer.release();
  });

  it("does not grant a waiter whose predecessor gave up while the holder ahead still holds", async () => {
    const coords = await Promise.all(["w-a", "w-b", "w-c"].map((memberId) => client({ memberId })));
    const [a, b, c] = coords as [Coordinator, Coordinator, Coordinator];
    const held = await a.lock("withdrawn").acquire();
    const traceC = await traced(c);
    const giveUp = new AbortController();
    const giving = b.lock("withdrawn").acquire({ signal: giveUp.signal });
    await waitForWaiters(a, "withdrawn", 1);
    let granted: LockHandle | null = null;
    const waitingC = c.lock("withdrawn").acquire(UNTRACKED);
    void waitingC.then(
      (h) => {
        granted = h;
      },
      () => {},
    );
    await waitForWaiters(a, "withdrawn", 2);
    await settled(traceC, "C to wait behind B");
    giveUp.abort();
    await assert.rejects(giving, AbortError);
    // C was woken by B's deletion and must find A still ahead of it.
    await relisted(traceC, "C to read the queue again after B left");
    const info = await a.inspect();
    const queue = info.locks.find((l) => l.name === "withdrawn");
    assert.deepEqual(
      queue?.holders.map((h) => h.memberId),
      ["w-a"],
    );
    assert.deepEqual(
      queue?.waiters.map((w) => w.memberId),
      ["w-c"],
    );
    assert.equal(granted, null, "C granted while A holds");
    await held.release();
    const mine = await waitingC;
    assert.deepEqual(roundTrips(traceC), [], "C, now second, goes on A's deletion alone");
    assert.ok(mine.token > held.token);
    await mine.release();
  });

  it("never grants a waiter whose own node was deleted while it waited: it joins again, behind", async () => {
    const coords = await Promise.all(["own-a", "own-b", "own-c"].map((memberId) => client({ memberId })));
    const [a, b, c] = coords as [Coordinator, Coordinator, Coordinator];
    const held = await a.lock("own-gone").acquire();
    const traceB = await traced(b);
    let grantedB: LockHandle | null = null;
    const waitingB = b.lock("own-gone").acquire();
    void waitingB.then(
      (h) => {
        grantedB = h;
      },
      () => {},
    );
    await settled(traceB, "B to wait behind A");
    const traceC = await traced(c);
    const waitingC = c.lock("own-gone").acquire();
    await settled(traceC, "C to wait behind B");
    // As an operator's revoke --immediate does: B's node goes while B still waits.
    assert.equal(await (await sessionOf(a)).handle.delete(ownNode(traceB)), true, "B's node deleted");
    await relisted(traceC, "C to read the queue after B's node went");
    await held.release();
    const third = await waitingC;
    // B lost its session's node: as for any lost session, the core waits again in a new one.
    const waitsAgain = async () =>
      (await a.inspect()).locks.find((l) => l.name === "own-gone")?.waiters.some((w) => w.memberId === "own-b") ===
      true;
    await waitFor(async () => grantedB !== null || (await waitsAgain()), "B granted, or waiting again");
    assert.equal(grantedB, null, "B, whose node is gone, granted beside C");
    await third.release();
    const later = await waitingB;
    assert.ok(
      held.token < third.token && third.token < later.token,
      `tokens ${held.token}, ${third.token}, ${later.token}`,
    );
    await later.release();
  });

  it("revokes a waiting session whose node is written between the revoker's read and delete", async () => {
    const coords = await Promise.all(["rv-a", "rv-b", "rv-r"].map((memberId) => client({ memberId })));
    const [a, b, r] = coords as [Coordinator, Coordinator, Coordinator];
    const held = await a.lock("revoked").acquire();
    const traceB = await traced(b);
    const waitingB = observed(b.lock("revoked").acquire());
    await settled(traceB, "B to wait behind A");
    const node = ownNode(traceB);
    const revoker = (await sessionOf(r)).handle;
    const before = await revoker.get(node);
    assert.ok(before, "B's node");
    let wrote = false;
    revoker.trace = (e) => {
      if (wrote || e.kind !== "answer" || e.what !== `reading ${node}`) return;
      wrote = true;
      // Sent on the revoker's connection before its delete, so the server applies it first:
      // a write of the waiter landing between the two, made certain.
      void revoker.set(node, before.data);
    };
    const layout = new Layout("", "specifics");
    await revokeNodes(revoker, layout, (await sessionOf(b)).id, AbortSignal.timeout(30_000));
    revoker.trace = null;
    assert.ok(wrote, "the node written between the read and the delete");
    assert.equal(await revoker.get(node), null, "B's node deleted");
    // B saw its node go although the write came first (it watches again after a write),
    // and waits again in a new session, before A lets go.
    await waitFor(
      async () =>
        (await a.inspect()).locks.find((l) => l.name === "revoked")?.waiters.some((w) => w.memberId === "rv-b") ===
        true,
      "B to wait again",
    );
    await held.release();
    await (await waitingB).release(); // in a new session, as after any loss
  });

  it("reads the queue behind a node written by a client without the mark, whose mzxid bounds nothing", async () => {
    const coords = await Promise.all(["mx-a", "mx-b", "mx-c"].map((memberId) => client({ memberId })));
    const [a, b, c] = coords as [Coordinator, Coordinator, Coordinator];
    const held = await a.lock("mixed").acquire();
    const raw = (await sessionOf(a)).handle;
    const parent = new Layout("", "specifics").queue("lock", "mixed");
    const [name] = (await raw.children(parent))?.children ?? [];
    // A's node as a client before the mark writes it: such a sole holder's token is the
    // pzxid of its granting read, which can be above its node's mzxid.
    await raw.set(`${parent}/${name}`, JSON.stringify({ id: "mx-a", sid: "older", s: Date.now() }));
    const traceB = await traced(b);
    const waitingB = b.lock("mixed").acquire();
    await settled(traceB, "B to wait behind A");
    const traceC = await traced(c);
    const waitingC = c.lock("mixed").acquire();
    await settled(traceC, "C to wait behind B");
    // The token such a holder's read would take now (its note lost with its connection).
    const older = (await raw.children(parent))?.stat.pzxid ?? 0n;
    await held.release();
    const second = await waitingB;
    assert.ok(second.token > older, `token ${second.token} after ${older}`);
    assert.equal(queueReads(roundTrips(traceB)), 1, "one queue read");
    await second.release();
    const third = await waitingC;
    assert.ok(third.token > second.token, `token ${third.token} after ${second.token}`);
    await third.release();
  });

  const converted: [string, LockMode, (h: LockHandle) => Promise<void>][] = [
    ["upgraded", "shared", (h) => h.upgrade()],
    ["downgraded", "exclusive", (h) => h.downgrade()],
  ];
  for (const [what, mode, convert] of converted) {
    it(`grants on the deletion event alone behind a sole holder that ${what}`, async () => {
      const a = await client({ memberId: `${what}-a` });
      const b = await client({ memberId: `${what}-b` });
      const held = await a.lock(what).acquire({ mode });
      await convert(held);
      const entries = await traced(b);
      const waiting = b.lock(what).acquire(UNTRACKED);
      await settled(entries, "B to wait behind A");
      await held.release();
      const granted = await waiting;
      assert.deepEqual(roundTrips(entries), [], "answers awaited between the deletion event and the grant");
      assert.ok(granted.token > held.token, `token ${granted.token} after ${held.token}`);
      await granted.release();
    });
  }
  it("reads the queue when its connection was replaced between its read and the event", async () => {
    // After a reconnection the server re-arms the watch with one event for any number of
    // changes: the predecessor's last mzxid may be one the waiter never read.
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    try {
      const a = await client({ memberId: "rc-a" });
      const b = await client({ memberId: "rc-b" }, `zookeeper://${proxy.address}`);
      const held = await a.lock("reconnected").acquire();
      const entries = await traced(b);
      const waiting = observed(b.lock("reconnected").acquire());
      await settled(entries, "the waiter to read the node ahead of it");
      const accepted = proxy.acceptedCount;
      proxy.reset();
      await waitFor(() => proxy.acceptedCount > accepted, "the waiter to reconnect");
      await held.release();
      const granted = await waiting;
      assert.equal(roundTrips(entries).filter((w) => w.startsWith("listing ")).length, 1, "one queue read");
      assert.ok(granted.token > held.token, `token ${granted.token} after ${held.token}`);
      await granted.release();
    } finally {
      await proxy.close();
    }
  });
});
