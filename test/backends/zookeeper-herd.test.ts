/**
 * Wake-ups per release on ZooKeeper (issue 13, "no herd"), counted rather than timed: every
 * party's session handle records the watch events delivered to it (`ZkHandle.trace`), and
 * after each release the test waits until nothing more happens: every handle's requests
 * answered, then one read on each handle answered with nothing new before it (the server
 * sends a connection's watch events before its answer to a later request, so every event
 * of every write answered so far has arrived). Then the events of that window are checked
 * against the design (acquire.ts, queue.ts): a waiter watches only what it waits for, an
 * exclusive one the node just before it, a shared one the last older writer; so the
 * release's deletion reaches only the waiters it makes grantable, no waiter ever gets a
 * listing ("children") event, and no waiter hears of a node it does not wait for. A waiter
 * may also hear a "changed" of the node it waits for (the grant note of the node ahead,
 * which tells it it is next: handoff.ts); that is still not a herd, one node has one
 * exclusive waiter behind it. A check of the check: watches armed as a herd would arm them
 * (a listing watch, or a watch of the holder's node, through every waiter's handle) are
 * reported.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { TraceEntry, ZkHandle } from "../../src/backends/zookeeper/client.js";
import { Layout, parseNode, type QueueNode } from "../../src/backends/zookeeper/paths.js";
import type { Coordinator, LockHandle, LockMode } from "../../src/index.js";
import { waitFor, waitForWaiters } from "../conformance/helpers.js";
import { startZooKeeper } from "../harness/zookeeper.js";
import { ownServer } from "./fixtures/backend-suite.js";
import { isPing, quiet } from "./fixtures/zookeeper-trace.js";

const NAMESPACE = "herd";
/** Long: a stall of the machine must not drop a connection (a reconnect re-arms watches with events). */
const TTL_MS = 20_000;

/** One coordinator under test, with its session's handle traced from the start. */
interface Party {
  readonly name: string;
  readonly coord: Coordinator;
  readonly handle: ZkHandle;
  /** The server's session id: the start of the tag of every node it creates. */
  readonly session: string;
  readonly trace: TraceEntry[];
}

/** A watch event as traced: its type and the last segment of its path. */
interface Heard {
  readonly type: string;
  readonly node: string;
}

/**
 * Waits until nothing more happens on any party's handle: all requests answered, then a
 * read on every handle answered with no event or other request before it; again if there was.
 */
async function settle(parties: readonly Party[]): Promise<void> {
  for (let round = 0; ; round++) {
    assert.ok(round < 100, "the handles never settled");
    await waitFor(() => parties.every((p) => quiet(p.trace)), "every handle's requests answered", 30_000);
    const marks = parties.map((p) => p.trace.length);
    await Promise.all(parties.map((p) => p.handle.exists("/")));
    const moved = parties.some((p, i) => p.trace.slice(marks[i]).some((e) => !isPing(e)));
    if (!moved && parties.every((p) => quiet(p.trace))) return;
  }
}

/** What each party heard since `marks`, its own nodes left out (a waiter watches its own node too: handoff.ts). */
function heardSince(parties: readonly Party[], marks: readonly number[]): Map<Party, Heard[]> {
  const heard = new Map<Party, Heard[]>();
  parties.forEach((p, i) => {
    const events = p.trace
      .slice(marks[i])
      .filter((e) => e.kind === "event")
      .map((e) => {
        const [type = "", path = ""] = e.what.split(" ");
        return { type, node: path.slice(path.lastIndexOf("/") + 1) };
      })
      .filter((h) => !ownedBy(p, h.node));
    if (events.length > 0) heard.set(p, events);
  });
  return heard;
}

function ownedBy(party: Party, node: string): boolean {
  return parseNode(node)?.tag.startsWith(`${party.session}_`) ?? false;
}

/** The queue's nodes, oldest first. */
async function queueOf(observer: Coordinator, parent: string): Promise<QueueNode[]> {
  const { handle } = await sessionOf(observer);
  const listed = await handle.children(parent);
  assert.ok(listed, `the queue ${parent}`);
  return listed.children
    .map(parseNode)
    .filter((n): n is QueueNode => n?.type === "node")
    .sort((a, b) => a.seq - b.seq);
}

/** The node a queued node waits for by the design: none for a holder. */
function watched(queue: readonly QueueNode[], index: number): string | undefined {
  const node = queue[index] as QueueNode;
  const older = queue.slice(0, index);
  if (node.mode === "exclusive") return older.at(-1)?.name;
  return older.findLast((n) => n.mode === "exclusive")?.name;
}

/**
 * What a window's events break of the design, given the queue when it began: a listing
 * event, or an event of a node other than the one its party waits for.
 */
function herdProblems(queue: readonly QueueNode[], heard: ReadonlyMap<Party, Heard[]>): string[] {
  const problems: string[] = [];
  for (const [party, events] of heard) {
    const index = queue.findIndex((n) => ownedBy(party, n.name));
    const waitsFor = index >= 0 ? watched(queue, index) : undefined;
    for (const e of events) {
      if (e.type === "children") problems.push(`${party.name} got a listing event`);
      else if (e.node !== waitsFor) {
        problems.push(`${party.name} got "${e.type}" of ${e.node}, waiting for ${waitsFor ?? "nothing"}`);
      }
    }
  }
  return problems;
}

/** The parties the deletion of `node` reached. */
function reached(heard: ReadonlyMap<Party, Heard[]>, node: string): string[] {
  return [...heard]
    .filter(([, events]) => events.some((e) => e.type === "deleted" && e.node === node))
    .map(([p]) => p.name)
    .sort();
}

async function sessionOf(coord: Coordinator): Promise<{ handle: ZkHandle; id: string }> {
  const session = await coord._core.liveSession();
  return session.driver as unknown as { handle: ZkHandle; id: string };
}

describe("zookeeper wake-ups per release", { timeout: 180_000 }, () => {
  const { client } = ownServer(() => startZooKeeper());
  const parent = (lock: string) => new Layout("", NAMESPACE).queue("lock", lock);

  async function party(name: string): Promise<Party> {
    const coord = await client({ namespace: NAMESPACE, memberId: name, ttlMs: TTL_MS });
    const { handle, id } = await sessionOf(coord);
    const trace: TraceEntry[] = [];
    handle.trace = (entry) => trace.push(entry);
    return { name, coord, handle, session: id, trace };
  }

  /** Queues each of `waiters` on `lock` in turn (each once the one before is seen queued); grants go to `granted`. */
  async function queue(
    observer: Coordinator,
    lock: string,
    waiters: readonly { party: Party; mode: LockMode }[],
    granted: { name: string; handle: LockHandle }[],
  ): Promise<Map<string, Promise<LockHandle>>> {
    const pending = new Map<string, Promise<LockHandle>>();
    for (const [i, { party, mode }] of waiters.entries()) {
      const acquiring = party.coord
        .lock(lock)
        .acquire({ mode, timeoutMs: 120_000 })
        .then((handle) => {
          granted.push({ name: party.name, handle });
          return handle;
        });
      acquiring.catch(() => {});
      pending.set(party.name, acquiring);
      await waitForWaiters(observer, lock, i + 1);
    }
    return pending;
  }

  /**
   * A holder of `lock` and `n` exclusive waiters queued behind it in order (each its own
   * coordinator, names `<tag>-w00`...), every handle settled.
   */
  async function exclusiveQueue(lock: string, tag: string, n: number) {
    const observer = await client({ namespace: NAMESPACE, memberId: `${tag}-observer`, ttlMs: TTL_MS });
    const holder = await party(`${tag}-holder`);
    const waiters: Party[] = [];
    for (let i = 0; i < n; i++) waiters.push(await party(`${tag}-w${String(i).padStart(2, "0")}`));
    const all = [holder, ...waiters];
    const first = await holder.coord.lock(lock).acquire();
    const granted: { name: string; handle: LockHandle }[] = [];
    const pending = await queue(
      observer,
      lock,
      waiters.map((party) => ({ party, mode: "exclusive" as const })),
      granted,
    );
    await settle(all);
    return { observer, holder, waiters, all, first, granted, pending };
  }

  it("wakes one waiter per release of an exclusive lock (12 queued): the next, in FIFO order, tokens growing", async (t) => {
    const lock = "exclusive";
    const { observer, waiters, all, first, granted, pending } = await exclusiveQueue(lock, "x", 12);
    let current = first;
    const woken: number[] = [];
    for (const [i, next] of waiters.entries()) {
      const step = `release ${i + 1}`;
      const before = await queueOf(observer, parent(lock));
      assert.equal(before.length, waiters.length - i + 1, `${step}: the queue before it`);
      const marks = all.map((p) => p.trace.length);
      assert.equal((await current.release()).status, "released");
      const handle = await (pending.get(next.name) as Promise<LockHandle>);
      await settle(all);
      assert.deepEqual(
        granted.map((g) => g.name),
        waiters.slice(0, i + 1).map((w) => w.name),
        `${step}: grants in the order of the queue, one per release`,
      );
      const heard = heardSince(all, marks);
      assert.deepEqual(herdProblems(before, heard), [], `${step}: only what each waits for`);
      assert.deepEqual(
        reached(heard, (before[0] as QueueNode).name),
        [next.name],
        `${step}: woke the next waiter only`,
      );
      assert.ok(handle.token > current.token, `${step}: token ${handle.token} after ${current.token}`);
      // Beside the one woken: the next waiter hears the new holder's note, and the one behind
      // it that waiter's write of its own node (handoff.ts); no one further back.
      assert.ok(heard.size <= 3, `${step}: ${[...heard.keys()].map((p) => p.name).join(", ")} heard events`);
      woken.push(heard.size);
      current = handle;
    }
    assert.equal((await current.release()).status, "released");
    t.diagnostic(`waiters that heard any event, per release: ${woken.join(" ")}`);
    for (const p of all) assert.equal(p.coord.session?.id, p.session, `${p.name} kept its session`);
  });

  it("a writer's release wakes the readers it makes grantable, not the writers behind them", async () => {
    const lock = "shared";
    const observer = await client({ namespace: NAMESPACE, memberId: "s-observer", ttlMs: TTL_MS });
    const order: [string, LockMode][] = [
      ["W0", "exclusive"],
      ["R1", "shared"],
      ["R2", "shared"],
      ["R3", "shared"],
      ["W4", "exclusive"],
      ["R5", "shared"],
      ["W6", "exclusive"],
    ];
    const parties = new Map<string, Party>();
    for (const [name] of order) parties.set(name, await party(`s-${name}`));
    const all = [...parties.values()];
    const byName = (name: string) => parties.get(name) as Party;
    const holding = new Map<string, LockHandle>([["W0", await byName("W0").coord.lock(lock).acquire()]]);
    const granted: { name: string; handle: LockHandle }[] = [];
    await queue(
      observer,
      lock,
      order.slice(1).map(([name, mode]) => ({ party: byName(name), mode })),
      granted,
    );
    await settle(all);
    // Each release, who its deletion must reach, and who it grants.
    const steps: { release: string; grants: string[] }[] = [
      { release: "W0", grants: ["R1", "R2", "R3"] },
      { release: "R1", grants: [] },
      { release: "R2", grants: [] },
      { release: "R3", grants: ["W4"] },
      { release: "W4", grants: ["R5"] },
      { release: "R5", grants: ["W6"] },
      { release: "W6", grants: [] },
    ];
    let highest = (holding.get("W0") as LockHandle).token;
    for (const { release, grants } of steps) {
      const step = `release of ${release}`;
      const before = await queueOf(observer, parent(lock));
      const node = before.find((n) => ownedBy(byName(release), n.name));
      assert.ok(node, `${step}: its node`);
      const marks = all.map((p) => p.trace.length);
      const seen = granted.length;
      assert.equal((await (holding.get(release) as LockHandle).release()).status, "released");
      await waitFor(() => granted.length >= seen + grants.length, `${step}: ${grants.join(", ") || "no"} grant(s)`);
      await settle(all);
      const now = granted.slice(seen);
      assert.deepEqual(now.map((g) => g.name).sort(), grants.map((g) => `s-${g}`).sort(), `${step}: what it granted`);
      const heard = heardSince(all, marks);
      assert.deepEqual(herdProblems(before, heard), [], `${step}: only what each waits for`);
      assert.deepEqual(
        reached(heard, node.name),
        grants.map((g) => `s-${g}`).sort(),
        `${step}: woke the grantable only`,
      );
      for (const g of now) {
        assert.ok(g.handle.token > highest, `${step}: ${g.name}'s token ${g.handle.token} after ${highest}`);
        holding.set(g.name.slice(2), g.handle);
      }
      for (const g of now) if (g.handle.token > highest) highest = g.handle.token;
    }
    for (const p of all) assert.equal(p.coord.session?.id, p.session, `${p.name} kept its session`);
  });

  it("the count sees a herd: a listing watch, or a watch of the holder's node, through every waiter's handle", async () => {
    const lock = "herd";
    const { observer, waiters, all, first, pending } = await exclusiveQueue(lock, "h", 6);
    let current = first;
    for (const [i, herd] of (["listing", "holder"] as const).entries()) {
      const before = await queueOf(observer, parent(lock));
      const head = (before[0] as QueueNode).name;
      // What a herd recipe would arm: every waiter watches the listing, or the holder's node.
      await Promise.all(
        waiters
          .slice(i)
          .map((w) =>
            herd === "listing"
              ? w.handle.children(parent(lock), () => {})
              : w.handle.get(`${parent(lock)}/${head}`, () => {}),
          ),
      );
      await settle(all);
      const marks = all.map((p) => p.trace.length);
      await current.release();
      current = await (pending.get((waiters[i] as Party).name) as Promise<LockHandle>);
      await settle(all);
      const heard = heardSince(all, marks);
      const problems = herdProblems(before, heard);
      const woke = waiters.slice(i).filter((w) => heard.has(w)).length;
      assert.equal(woke, waiters.length - i, `${herd}: every waiter heard the release`);
      assert.ok(problems.length >= waiters.length - i - 1, `${herd}: reported, got ${JSON.stringify(problems)}`);
      if (herd === "holder") assert.equal(reached(heard, head).length, waiters.length - i, "the deletion reached all");
    }
    await current.release();
    await Promise.all([...pending.values()].map(async (p) => (await p).release()));
  });
});
