/**
 * A record watch (what `group.watch()` and an election's `observe()` stand on) across a
 * reconnection on ZooKeeper. The watcher reaches the server through a TCP proxy that drops
 * its connection while other members join, update and leave: the server sends those events
 * down the dropped connection, and the persistent watch goes with it. Once the watcher is
 * back, record-watch.ts adds the watch again and reads the space in full; it must report
 * exactly what changed meanwhile (each value a record took since the last one reported, in
 * order: a record node keeps its last values), nothing twice and nothing missed, and end
 * with the server's state. Dropped for much less than the session timeout, the watcher is
 * back on the same session; dropped until the server expired it, on a new one.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ZkHandle } from "../../src/backends/zookeeper/client.js";
import { PersistentWatches } from "../../src/backends/zookeeper/persistent-watches.js";
import { type Coordinator, connect, type GroupEvent, type Member } from "../../src/index.js";
import { take, waitFor } from "../conformance/helpers.js";
import { type Proxy as TcpProxy, startProxy } from "../harness/proxy.js";
import { startZooKeeper, type ZooKeeperServer } from "../harness/zookeeper.js";
import { totalWatches } from "./fixtures/zookeeper-wchs.js";

/** The watcher's session timeout when it must survive the drop: far longer than that. */
const SESSION_MS = 10_000;

interface Caps {
  readonly v: number;
}

/** An event as [type, member id, capabilities] (none for a leave). */
function brief(event: GroupEvent<Caps>): [string, string, Caps?] {
  return event.type === "leave"
    ? ["leave", event.memberId]
    : [event.type, event.member.memberId, event.member.capabilities];
}

const byId = (a: Member<Caps>, b: Member<Caps>) => (a.memberId < b.memberId ? -1 : 1);

type Open = typeof ZkHandle.open;
const realOpen: Open = ZkHandle.open.bind(ZkHandle);
/** Every handle opened through `connect` (a proxy's address: the watcher's), in order. */
const opened = new Map<string, ZkHandle[]>();
/** Held before an open through the proxy resolves, while set. */
let gate: Promise<void> | null = null;
const setOpen = (open: Open) => {
  (ZkHandle as unknown as { open: Open }).open = open;
};

/** Makes the server expire the watcher's session: silent until its watches are gone. */
async function expire(proxy: TcpProxy, address: string): Promise<void> {
  const watches = await totalWatches(address);
  proxy.cut();
  await waitFor(async () => (await totalWatches(address)) < watches, "the server to expire the session", 30_000, 50);
  proxy.heal();
}

/** The members a watcher knows of, from its first `join`s and every event after them. */
class Seen {
  readonly members = new Map<string, Member<Caps>>();

  apply(events: readonly GroupEvent<Caps>[]): void {
    for (const event of events) {
      if (event.type === "leave") {
        assert.ok(this.members.delete(event.memberId), `a leave of ${event.memberId}, not a member`);
      } else if (event.type === "join") {
        assert.ok(!this.members.has(event.member.memberId), `a second join of ${event.member.memberId}`);
        this.members.set(event.member.memberId, event.member);
      } else {
        assert.ok(this.members.has(event.member.memberId), `an update of ${event.member.memberId}, not a member`);
        this.members.set(event.member.memberId, event.member);
      }
    }
  }

  sorted(): Member<Caps>[] {
    return [...this.members.values()].sort(byId);
  }
}

/** How the watcher's connection is dropped; the proxy forwards again at `heal()`. */
interface Drop {
  readonly how: string;
  /** The watcher's session timeout. */
  readonly sessionMs: number;
  drop(proxy: TcpProxy): void;
  /** Waits, after the changes, before the heal; `watches`: the server's count before the drop. */
  outlast?(address: string, watches: number): Promise<void>;
}

const DROPS: readonly Drop[] = [
  // The client sees silence, until heal() closes the connection.
  { how: "cut silently", sessionMs: SESSION_MS, drop: (proxy) => proxy.cut() },
  // The client sees a reset at once and reconnects into silence, until heal() closes that.
  {
    how: "reset, then silent while it reconnects",
    sessionMs: SESSION_MS,
    drop: (proxy) => {
      proxy.cut();
      proxy.reset();
    },
  },
  // Silent until the server has expired the watcher's session, and its watch with it (the
  // server's count of watches shows when): the watch must go on, on a new session.
  {
    how: "cut silently until the server expired its session",
    sessionMs: 2000,
    drop: (proxy) => proxy.cut(),
    outlast: (address, watches) =>
      waitFor(
        async () => (await totalWatches(address)) < watches,
        "the server to expire the watcher's session (its watch gone)",
        30_000,
        50,
      ),
  },
];

describe("zookeeper record watch across a reconnection", { timeout: 120_000 }, () => {
  let server: ZooKeeperServer;
  const coords: Coordinator[] = [];
  const client = async (url: string, namespace: string, memberId: string, ttlMs?: number) => {
    const coord = await connect(url, { namespace, memberId, ...(ttlMs === undefined ? {} : { ttlMs }) });
    coords.push(coord);
    return coord;
  };

  before(async () => {
    server = await startZooKeeper();
    setOpen(async (config, connectTimeoutMs) => {
      const handle = await realOpen(config, connectTimeoutMs);
      const list = opened.get(config.connect) ?? [];
      opened.set(config.connect, [...list, handle]);
      await gate;
      return handle;
    });
  });

  after(async () => {
    setOpen(realOpen);
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  for (const { how, sessionMs, drop, outlast } of DROPS) {
    it(`reports exactly the joins, updates and leaves made while its connection was ${how}`, async () => {
      const [host, port] = server.address.split(":") as [string, string];
      const proxy = await startProxy({ host, port: Number(port) });
      try {
        const ns = `resync-${randomUUID().slice(0, 8)}`;
        const watcher = await client(`zookeeper://${proxy.address}`, ns, "watcher", sessionMs);
        const [stays, changes, leaves, joins, marker] = (await Promise.all(
          ["stays", "changes", "leaves", "joins", "marker"].map((id) => client(server.url, ns, id)),
        )) as [Coordinator, Coordinator, Coordinator, Coordinator, Coordinator];
        const group = (c: Coordinator) => c.group<Caps>("g");
        await group(stays).join({ v: 1 });
        await group(changes).join({ v: 1 });
        const leaving = await group(leaves).join({ v: 1 });
        // Its session open now: its join during the drop then adds no watch (see outlast).
        await (await joins.lock("warm-up").acquire()).release();

        const events = group(watcher).watch();
        const seen = new Seen();
        const first = await take(events, 3);
        assert.deepEqual(first.map(brief).sort(), [
          ["join", "changes", { v: 1 }],
          ["join", "leaves", { v: 1 }],
          ["join", "stays", { v: 1 }],
        ]);
        assert.ok(first.every((e) => e.type === "join" && e.existing));
        seen.apply(first);
        // The watch is live before the drop.
        await group(changes).update({ v: 2 });
        const live = await take(events, 1);
        assert.deepEqual(live.map(brief), [["update", "changes", { v: 2 }]]);
        seen.apply(live);

        const accepted = proxy.acceptedCount;
        const watches = await totalWatches(server.address);
        drop(proxy);
        // Each call resolves once the server applied it, so it has sent its event to the
        // watcher: into the dropped connection.
        await group(joins).join({ v: 1 });
        await group(changes).update({ v: 3 });
        await group(changes).update({ v: 4 });
        await leaving.leave();
        await outlast?.(server.address, watches);
        proxy.heal();

        const resynced = await take(events, 4, 30_000);
        const byMember = (id: string) => resynced.map(brief).filter((e) => e[1] === id);
        assert.deepEqual(byMember("joins"), [["join", "joins", { v: 1 }]]);
        // Both values, in order: not merged into the latest.
        assert.deepEqual(byMember("changes"), [
          ["update", "changes", { v: 3 }],
          ["update", "changes", { v: 4 }],
        ]);
        assert.deepEqual(byMember("leaves"), [["leave", "leaves"]]);
        assert.ok(
          resynced.every((e) => e.type !== "join" || !e.existing),
          "a join after the drop is not existing",
        );
        seen.apply(resynced);
        assert.ok(proxy.acceptedCount > accepted, "the watcher reconnected");
        // Through the proxy: the watcher's driver handle, and a new one only if it expired.
        const handles = opened.get(proxy.address) ?? [];
        const [original, reopened] = handles;
        assert.ok(original);
        if (outlast) {
          assert.equal(handles.length, 2, "one new handle, after the expiry");
          assert.equal(original.ended, "expired");
          assert.ok(reopened?.connected, "the new handle is connected");
          assert.notEqual(reopened.sessionId, original.sessionId, "a new session");
        } else {
          assert.equal(handles.length, 1, "no new handle");
          assert.ok(original.connected, "the same session, connected again");
        }

        // The next event is the next change: nothing was reported twice or is still to come.
        await group(marker).join({ v: 1 });
        const following = await take(events, 1);
        assert.deepEqual(following.map(brief), [["join", "marker", { v: 1 }]]);
        seen.apply(following);

        // What the watcher knows is the server's state, as a direct client lists it.
        const members = await group(stays).members();
        assert.deepEqual(seen.sorted(), [...members].sort(byId));
        assert.deepEqual(members.map((m) => m.memberId).sort(), ["changes", "joins", "marker", "stays"]);
        // And a new watch through the reconnected client starts from that same state.
        const again = group(watcher).watch();
        const snapshot = (await take(again, 4)).map((e) => {
          assert.ok(e.type === "join" && e.existing, `a snapshot's join, got ${e.type}`);
          return e.member;
        });
        assert.deepEqual(snapshot.sort(byId), seen.sorted());
        await again.return?.();
        await events.return?.();
      } finally {
        await proxy.close();
      }
    });
  }

  // Events on the new handle can be handled before the move's code after its watch was
  // added runs (they come in the same socket read as the watch's answer): each must be read
  // on the handle it came on, not on the expired one, whose reads fail.
  it("reports the changes made right as the watch moved to a new session", async () => {
    const [host, port] = server.address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    const realWatch = PersistentWatches.prototype.watchBelow;
    try {
      const ns = `resync-${randomUUID().slice(0, 8)}`;
      const watcher = await client(`zookeeper://${proxy.address}`, ns, "watcher", 2000);
      const [stays, passing] = [await client(server.url, ns, "stays"), await client(server.url, ns, "brief")];
      const events = watcher.group<Caps>("g").watch();
      const staying = await stays.group<Caps>("g").join({ v: 1 });
      assert.deepEqual((await take(events, 1)).map(brief), [["join", "stays", { v: 1 }]]);

      // The watch added on the new handle: the changes, each event handled before the move goes on.
      let moved: Promise<void> | null = null;
      PersistentWatches.prototype.watchBelow = async function (this: PersistentWatches, path, listener) {
        const off = await realWatch.call(this, path, listener);
        if (moved) return off; // only the first: the watcher's, on its new handle
        moved = (async () => {
          const member = await passing.group<Caps>("g").join({ v: 1 });
          await member.update({ v: 2 });
          await member.leave();
          await staying.update({ v: 2 });
          // Long enough for the watcher to have handled each event.
          await new Promise((resolve) => setTimeout(resolve, 500));
        })();
        await moved;
        return off;
      };
      await expire(proxy, server.address);
      await waitFor(() => moved !== null, "the watch to move", 20_000, 20);
      await moved;
      PersistentWatches.prototype.watchBelow = realWatch;

      const got = await take(events, 4, 15_000);
      assert.deepEqual(got.map(brief), [
        ["join", "brief", { v: 1 }],
        ["update", "brief", { v: 2 }],
        ["leave", "brief"],
        ["update", "stays", { v: 2 }],
      ]);
      // Nothing else: the next event is the next change.
      await staying.update({ v: 3 });
      assert.deepEqual((await take(events, 1)).map(brief), [["update", "stays", { v: 3 }]]);
      await events.return?.();
    } finally {
      PersistentWatches.prototype.watchBelow = realWatch;
      await proxy.close();
    }
  });

  // The watch's move reopens the driver's handle; a close meanwhile must close that too.
  it("leaves no live session when closed while the watch reopens the handle", async () => {
    const [host, port] = server.address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    let release = () => {};
    try {
      const ns = `resync-${randomUUID().slice(0, 8)}`;
      const watcher = await client(`zookeeper://${proxy.address}`, ns, "watcher", 2000);
      const other = await client(server.url, ns, "other");
      const events = watcher.group<Caps>("g").watch();
      // The watch live (its first read done) before the expiry.
      await other.group<Caps>("g").join({ v: 1 });
      assert.deepEqual((await take(events, 1)).map(brief), [["join", "other", { v: 1 }]]);
      const ended = take(events, 1, 60_000).catch(() => []);
      gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      await expire(proxy, server.address);
      await waitFor(() => (opened.get(proxy.address)?.length ?? 0) === 2, "the handle reopened", 20_000, 20);
      // The close gets as far as it can while the open is held (the driver's own close may
      // wait for it), then the open finishes.
      const closing = watcher.close();
      await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 500))]);
      release();
      await closing;
      const reopened = opened.get(proxy.address)?.[1];
      assert.equal(reopened?.ended, "closed", "the handle opened meanwhile is closed");
      assert.equal(reopened?.connected, false);
      assert.deepEqual(await ended, [], "the watch ended with the coordinator");
    } finally {
      release();
      gate = null;
      // Closed here too if the test failed: a live handle would keep the process running.
      await Promise.all((opened.get(proxy.address) ?? []).map((h) => h.close()));
      await proxy.close();
    }
  });
});
