import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BackendUnavailableError, connect, type GroupEvent, InvalidArgumentError } from "../../src/index.js";
import { expireSession } from "../../src/testing.js";
import { take, waitFor } from "../conformance/helpers.js";
import {
  encodeRecord,
  nextRecord,
  parseEpitaphs,
  valuesSince,
  withEpitaph,
} from "../../src/backends/zookeeper/records.js";
import { conformanceOnOwnServer, ownServer } from "./fixtures/backend-suite.js";
import { startProxy } from "../harness/proxy.js";
import { startZooKeeper } from "../harness/zookeeper.js";

// Real ZooKeeper from Debian's package (scripts/ensure-servers.sh zookeeper), standalone,
// on a free loopback port with a temporary data directory.
conformanceOnOwnServer({
  name: "zookeeper",
  idleUrl: "zookeeper://127.0.0.1:2181",
  shortTtlMs: 3000,
  contention: { clients: 20, rounds: 20 },
  // The core presumes the session lost and closes it; the server then deletes its nodes.
  loseSession: async (coord) => {
    await expireSession(coord);
  },
  start: () => startZooKeeper(),
});

describe("zookeeper epitaphs", () => {
  const epitaph = (child: string, data: string) => ({ child, czxid: 7n, version: 3, data });
  const cases = [
    { name: "small: all kept with their data", sizes: ["a".repeat(100), "b".repeat(100)], data: [100, 100] },
    { name: "the oldest dropped past the bound", sizes: ["a".repeat(100_000), "b".repeat(100_000)], data: [100_000] },
    // 70,000 characters, 140,000 bytes: the bound is in bytes, as the request is.
    { name: "the newest alone past the bound (in UTF-8 bytes) loses its data", sizes: ["é".repeat(70_000)], data: [0] },
  ];
  for (const { name, sizes, data } of cases) {
    it(name, () => {
      const text = sizes.reduce((space, d, i) => withEpitaph(space, epitaph(`m${i}`, d)), "");
      assert.ok(Buffer.byteLength(text) <= 128 * 1024, `${Buffer.byteLength(text)} bytes`);
      const kept = parseEpitaphs(text);
      assert.deepEqual(
        kept.map((e) => e.data.length),
        data,
      );
      assert.equal(kept.at(-1)?.child, `m${sizes.length - 1}`, "the newest is always kept");
    });
  }
});

describe("zookeeper record history", () => {
  /** A record node's data after values 0..count-1, as putRecord writes it (version n held value n). */
  const after = (count: number, value: (n: number) => string) => {
    let text = encodeRecord({ sid: "s", c: 1, v: value(0) });
    for (let n = 1; n < count; n++) text = nextRecord(text, n - 1, "s", value(n));
    return text;
  };
  it("keeps the last 16 earlier values when they are small", () => {
    const text = after(20, (n) => `${n}`);
    assert.deepEqual(
      valuesSince(text, 19, -1),
      Array.from({ length: 17 }, (_, i) => `${i + 3}`),
    );
  });
  it("keeps the newest earlier values within 512 KiB (UTF-8 bytes), the current always", () => {
    // 60 KB of JSON, a third of it quotes; "é": two bytes each.
    const value = (n: number) => JSON.stringify({ n, s: 'é"'.repeat(20_000) });
    const text = after(10, value);
    const bytes = Buffer.byteLength(text);
    assert.ok(bytes <= 512 * 1024 && bytes > 512 * 1024 - 200_000, `${bytes} bytes`);
    const all = valuesSince(text, 9, -1);
    assert.ok(all.length > 1 && all.length < 10, `${all.length} values kept`);
    // A watcher that saw version 2 (older than any kept): the kept ones, in order, then the current.
    assert.deepEqual(valuesSince(text, 9, 2), all);
    assert.deepEqual(
      all.map((v) => (JSON.parse(v) as { n: number }).n),
      Array.from({ length: all.length }, (_, i) => 10 - all.length + i),
    );
    assert.deepEqual(valuesSince(text, 9, 8), [value(9)], "one behind: the current alone");
    assert.deepEqual(valuesSince(text, 9, 9), [], "up to date: nothing");
  });
});

describe("zookeeper specifics", () => {
  let raw: RawClient;
  const { server, client } = ownServer(() => startZooKeeper(), {
    started: async (own) => {
      raw = await rawClient(own.address);
    },
    stopping: () => raw.close(),
  });

  it("reports a member whose record is deleted and made again at once as a leave and a join", async () => {
    // One-shot watches are re-armed by a read: a delete and a create landing before that read
    // looked like an update (the leave was lost). The persistent watch reports both.
    const member = await client({ memberId: "m1" });
    await member.group("gap").join({ n: 1 });
    const watcher = await client({ memberId: "w" });
    const events = watcher.group("gap").watch();
    const first = await events.next();
    assert.equal(first.value?.type, "join");
    const spaces = await list(raw, "/baton/specifics/r");
    const space = spaces.find((s) => decodeURIComponent(s).includes("gap"));
    assert.ok(space, `a record space for the group among ${spaces.join(", ")}`);
    const [key] = await list(raw, `/baton/specifics/r/${space}`);
    const path = `/baton/specifics/r/${space}/${key}`;
    const data = await new Promise<Buffer>((resolve, reject) =>
      raw.getData(path, (error, d) => (error ? reject(error) : resolve(d))),
    );
    // Sent back to back on one connection: both are applied before any watcher's next read.
    const removed = remove(raw, path);
    const created = new Promise<void>((resolve, reject) =>
      raw.create(path, data, 0, (error) => (error ? reject(error) : resolve())),
    );
    await Promise.all([removed, created]);
    try {
      const seen: string[] = [];
      for (let i = 0; i < 2; i++) {
        const next = await Promise.race([
          events.next(),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`only ${seen.join(", ")}`)), 5000)),
        ]);
        seen.push(next.value?.type ?? "end");
      }
      assert.deepEqual(seen, ["leave", "join"]);
    } finally {
      await events.return?.();
      await remove(raw, path).catch(() => {});
    }
  });

  it("reports the join and update of a member that left before the watcher could read its record", async () => {
    // The watcher's requests reach the server 300 ms late, its events do not: each read after
    // an event finds the record gone. The values come from the epitaph the leave wrote.
    const [host, port] = server().address.split(":") as [string, string];
    const proxy = await startProxy({ host, port: Number(port) });
    try {
      const watcher = await client({ memberId: "late-watcher" }, `zookeeper://${proxy.address}`);
      const first = await client({ memberId: "late-first" });
      await first.group("late").join({ n: 0 });
      const events = watcher.group("late").watch();
      assert.equal((await take(events, 1))[0]?.type, "join", "the watch is set");
      proxy.setLatency({ up: { ms: 300 } });
      const member = await client({ memberId: "late-member" });
      const membership = await member.group("late").join({ n: 1 });
      await member.group("late").update({ n: 2 });
      await membership.leave();
      const seen = await take(events, 3, 10_000);
      assert.deepEqual(seen.map(summary), ["join late-member 1", "update late-member 2", "leave late-member"]);
      await events.return?.();
      await Promise.all([watcher, first, member].map((c) => c.close())); // nothing left for later tests
    } finally {
      await proxy.close();
    }
  });

  it("reports every update of members that update and leave back to back, in order", async () => {
    const watcher = await client({ memberId: "quick-watcher" });
    const members = await Promise.all([0, 1].map((i) => client({ memberId: `quick-${i}` })));
    const events = watcher.group("quick").watch();
    // Bounded: 2 members x 15 rounds of join, update, leave, at once.
    const rounds = 15;
    await Promise.all(
      members.map(async (member) => {
        for (let n = 0; n < rounds; n++) {
          const membership = await member.group("quick").join({ n });
          await member.group("quick").update({ n: n + 0.5 });
          await membership.leave();
        }
      }),
    );
    const seen = (await take(events, members.length * rounds * 3, 20_000)).map(summary);
    for (const [i, member] of members.entries()) {
      const expected = Array.from({ length: rounds }, (_, n) => [
        `join quick-${i} ${n}`,
        `update quick-${i} ${n + 0.5}`,
        `leave quick-${i}`,
      ]).flat();
      assert.deepEqual(
        seen.filter((s) => s.split(" ")[1] === member.memberId),
        expected,
      );
    }
    await events.return?.();
    await Promise.all([watcher, ...members].map((c) => c.close()));
  });

  it("completes the leave of a member whose record is large (its epitaph kept small)", async () => {
    // A 64 KB value, a third of it quotes: with its history the record is ~860 KB, and an
    // epitaph quoting it whole (escaped again) would not fit one ZooKeeper request (1 MB).
    const quotes = 'ab"'.repeat(15_990);
    const watcher = await client({ memberId: "big-watcher" });
    const member = await client({ memberId: "big-member" });
    const events = watcher.group("big").watch();
    const membership = await member.group("big").join({ n: 0, s: quotes });
    for (let n = 1; n <= 8; n++) await member.group("big").update({ n, s: quotes });
    await membership.leave();
    const seen: string[] = [];
    // Bounded: a join, at most 8 updates, then the leave.
    while (!seen.includes("leave big-member") && seen.length < 10) {
      const [event] = await take(events, 1, 15_000);
      seen.push(event ? summary(event) : "end");
    }
    assert.equal(seen.at(-1), "leave big-member", `the leave reported: ${seen.join(", ")}`);
    await events.return?.();
    await Promise.all([watcher, member].map((c) => c.close()));
  });

  it("takes 20 updates of a member with ~60 KiB capabilities; the watcher ends at the latest", async () => {
    // 30,000 quotes: 60 KB of JSON, 120 KB in the record (escaped again). Sixteen earlier
    // values kept whole would be 2 MB, past the server's 1 MB node limit (jute.maxbuffer).
    const quotes = '"'.repeat(30_000);
    const watcher = await client({ memberId: "huge-watcher" });
    const member = await client({ memberId: "huge-member" });
    const events = watcher.group("huge").watch();
    const membership = await member.group("huge").join({ n: 0, s: quotes });
    for (let n = 1; n <= 20; n++) {
      const update = member.group("huge").update({ n, s: quotes });
      // Bounded: a request past the limit drops the connection, and the retry never lands.
      const late = new Promise<never>((_, reject) => {
        const timer = setTimeout(() => reject(new Error(`update ${n} did not land in 10 s`)), 10_000);
        void update.finally(() => clearTimeout(timer)).catch(() => {});
      });
      await Promise.race([update, late]).catch((e: Error) => assert.fail(`update ${n}: ${e.message}`));
    }
    const seen: string[] = [];
    // Bounded: a join and at most 20 updates; skipped values allowed, never out of order.
    while (!seen.includes("update huge-member 20") && seen.length < 21) {
      const [event] = await take(events, 1, 15_000);
      seen.push(event ? summary(event) : "end");
    }
    assert.equal(seen.at(-1), "update huge-member 20", `the latest reported: ${seen.join(", ")}`);
    const ns = seen.map((s) => Number(s.split(" ")[2]));
    assert.deepEqual(
      ns,
      [...ns].sort((a, b) => a - b),
      `in order: ${seen.join(", ")}`,
    );
    assert.equal(new Set(ns).size, ns.length, `each once: ${seen.join(", ")}`);
    await events.return?.();
    await membership.leave();
    await Promise.all([watcher, member].map((c) => c.close()));
  });

  it("keeps each name in its own node and leaves no empty parent behind", async () => {
    const a = await client();
    const names = ["a", "a/b", "a%2Fb", ".", "..", "ünï ✓"];
    const handles = [];
    for (const name of names) handles.push(await a.lock(name).acquire({ timeoutMs: 2000 }));
    const children = await list(raw, "/baton/specifics/q/lock");
    assert.deepEqual(children.map(decodeURIComponent).sort(), [...names].sort());
    for (const h of handles) await h.release();
    // Container nodes: the server removes them once empty (checked every 500 ms here).
    await waitFor(async () => (await list(raw, "/baton")).length === 0, "every Baton node to be gone", 10_000);
  });

  it("uses the session timeout the server negotiated, not the requested one", async () => {
    // The harness allows 200 ms to 60 s; a longer request is clamped to 60 s.
    const a = await client({ ttlMs: 120_000 });
    await (await a.lock("t").acquire()).release();
    const session = (await a._core.liveSession()).driver as unknown as { timeoutMs: number };
    assert.equal(session.timeoutMs, 60_000);
    const b = await client({}, `${server().url}?sessionTimeout=4s`);
    await (await b.lock("t").acquire()).release();
    assert.equal(((await b._core.liveSession()).driver as unknown as { timeoutMs: number }).timeoutMs, 4000);
  });

  it("refuses a server that would make sessions longer than the TTL (crash release within the TTL)", async () => {
    const strict = await startZooKeeper({ minSessionTimeoutMs: 5000 });
    try {
      await assert.rejects(connect(strict.url, { ttlMs: 2000 }), /grants sessions of at least 5000 ms/);
      const ok = await connect(strict.url, { ttlMs: 5000 });
      await (await ok.lock("x").acquire()).release();
      await ok.close();
    } finally {
      await strict.stop();
    }
  });

  it("keeps everything under the URL's chroot", async () => {
    const a = await client({}, `${server().url}/apps/one`);
    const h = await a.lock("c").acquire();
    assert.deepEqual(await list(raw, "/apps/one/baton/specifics/q/lock"), ["c"]);
    await h.release();
  });

  it("rejects a bad configuration at connect, and fails fast when no server is there", async () => {
    await assert.rejects(connect(`${server().url}?sessionTimeout=soon`), InvalidArgumentError);
    await assert.rejects(connect(`${server().url}?sessionTimeout=10`), InvalidArgumentError);
    await assert.rejects(connect(`${server().url}/bad//path`), InvalidArgumentError);
    await assert.rejects(connect(`zookeeper://user@${server().address}`), InvalidArgumentError);
    const started = performance.now();
    await assert.rejects(connect("zk://127.0.0.1:1", { ttlMs: 2000 }), BackendUnavailableError);
    assert.ok(performance.now() - started < 5000);
  });

  it("with user:password@, protects its nodes with a digest ACL", async () => {
    const a = await client({ memberId: "owner" }, server().url.replace("zookeeper://", "zookeeper://baton:s3cret@"));
    const h = await a.lock("acl").acquire();
    const [node] = await list(raw, "/baton/specifics/q/lock/acl");
    assert.ok(node);
    // Another client of the ensemble, without the credentials, may read but not delete.
    await assert.rejects(remove(raw, `/baton/specifics/q/lock/acl/${node}`), /NO_AUTH|-102/);
    const info = await (await client()).inspect();
    assert.equal(info.locks.find((l) => l.name === "acl")?.holders[0]?.memberId, "owner");
    await h.release();
  });
});

interface RawClient {
  close(): void;
  getData(path: string, cb: (error: Error | null, data: Buffer) => void): void;
  create(path: string, data: Buffer, mode: number, cb: (error: Error | null) => void): void;
  getChildren(path: string, cb: (error: Error | null, children: string[]) => void): void;
  remove(path: string, cb: (error: Error | null) => void): void;
}

async function rawClient(address: string): Promise<RawClient> {
  const { default: zookeeper } = (await import("node-zookeeper-client" as string)) as {
    default: { createClient(c: string): RawClient & { connect(): void; once(e: string, f: () => void): void } };
  };
  const zk = zookeeper.createClient(address);
  await new Promise<void>((resolve) => {
    zk.once("connected", resolve);
    zk.connect();
  });
  return zk;
}

/** An event as "type member n" (n: the capabilities' `n`). */
function summary(event: GroupEvent): string {
  if (event.type === "leave") return `leave ${event.memberId}`;
  return `${event.type} ${event.member.memberId} ${(event.member.capabilities as { n: number }).n}`;
}

function list(zk: RawClient, path: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    zk.getChildren(path, (error, children) => {
      if (error && (error as { code?: number }).code === -101) resolve([]);
      else if (error) reject(error);
      else resolve(children);
    }),
  );
}

function remove(zk: RawClient, path: string): Promise<void> {
  return new Promise((resolve, reject) => zk.remove(path, (error) => (error ? reject(error) : resolve())));
}
