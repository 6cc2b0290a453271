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
  });

  after(async () => {
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
});
