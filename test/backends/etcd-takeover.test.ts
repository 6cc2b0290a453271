/**
 * etcd's native takeover records (src/backends/etcd/takeover.ts) against the hardest
 * crash: a holder process that SIGKILLs itself in the very tick its plain `acquire()`
 * resolved, so nothing it could send after the grant went out. Its record must already be
 * in etcd, put by the transaction that granted it, for the next holder to be handed the
 * takeover: both for a free lock (the join grants) and for a waiter second in line (the
 * recording transaction grants, not the head's deletion).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import { type Coordinator, connect } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { readRecordValue } from "../../src/backends/etcd/takeover.js";
import { type EtcdServer, startEtcd } from "../harness/etcd.js";
import { Holder } from "../harness/holder.js";
import { startProxy } from "../harness/proxy.js";

/** Short: the killed holder's lease must expire before the next grant. */
const HOLDER_TTL_MS = 2000;

/** Fence info that looks like the end of a record stored with its token pending. */
const LOOKALIKE = ',"t":"0","at":1}';

describe("etcd takeover records: the pending token's rule", () => {
  const cases: [string, string, bigint, string][] = [
    [
      "pending: the write's revision is the token",
      '{"m":"a","f":null,"d":0,"t":"0","at":17}',
      42n,
      '{"m":"a","f":null,"d":0,"t":"42","at":17}',
    ],
    ["a real token stays", '{"m":"a","f":null,"d":0,"t":"7","at":17}', 42n, '{"m":"a","f":null,"d":0,"t":"7","at":17}'],
    [
      "a rewrite with a delay stays",
      '{"m":"a","f":null,"d":5,"t":"7","at":17,"u":99}',
      42n,
      '{"m":"a","f":null,"d":5,"t":"7","at":17,"u":99}',
    ],
    [
      "fence info that looks pending, sealed with a real token",
      `{"m":"a","f":${JSON.stringify(LOOKALIKE)},"d":0,"t":"7","at":17}`,
      42n,
      `{"m":"a","f":${JSON.stringify(LOOKALIKE)},"d":0,"t":"7","at":17}`,
    ],
    [
      "fence info that looks pending, and pending",
      `{"m":"a","f":${JSON.stringify(LOOKALIKE)},"d":0,"t":"0","at":17}`,
      42n,
      `{"m":"a","f":${JSON.stringify(LOOKALIKE)},"d":0,"t":"42","at":17}`,
    ],
  ];
  for (const [what, stored, revision, read] of cases) {
    it(what, () => {
      assert.equal(readRecordValue(stored, revision), read);
      assert.deepEqual(JSON.parse(readRecordValue(stored, revision)), JSON.parse(read));
    });
  }
});

/**
 * A holder process that acquires `name` (with `options`, none by default) and dies as soon
 * as it is granted.
 */
function dyingHolder(server: EtcdServer, namespace: string, name: string, options?: Record<string, unknown>): Holder {
  const url = new URL(server.url);
  url.searchParams.set("namespace", namespace);
  process.env.BATON_HOLDER_DIE = "1";
  try {
    return new Holder(url.href, name, HOLDER_TTL_MS, undefined, options);
  } finally {
    delete process.env.BATON_HOLDER_DIE;
  }
}

describe("etcd takeover records, written by the granting transaction", () => {
  let server: EtcdServer;
  const coords: Coordinator[] = [];
  const holders: Holder[] = [];
  const client = async (namespace: string) => {
    const coord = await connect(server.url, { namespace, memberId: "next", ttlMs: 10_000 });
    coords.push(coord);
    return coord;
  };
  before(async () => {
    server = await startEtcd();
  });
  after(async () => {
    await Promise.all(holders.map((h) => h.stop()));
    await Promise.all(coords.map((c) => c.close()));
    await server.stop();
  });

  const handedOn = async (coord: Coordinator, name: string, holder: Holder, fenceInfo: unknown = null) => {
    const granted = await holder.next((e) => e.event === "acquired", "the holder's grant");
    const handle = await coord.lock(name).acquire({ timeoutMs: 30_000 });
    const { memberId, token, ...rest } = handle.takeover ?? assert.fail("the killed holder's loss was not handed on");
    assert.deepEqual({ memberId, token }, { memberId: `holder-${holder.child.pid}`, token: BigInt(granted.token!) });
    assert.equal(rest.fenceInfo, fenceInfo);
    assert.ok(handle.token > token, `new token ${handle.token} must exceed ${token}`);
    // The lock can be handed on before this process has handled the holder's exit: wait for
    // that, then read how it ended.
    await holder.exited;
    assert.equal(holder.child.signalCode, "SIGKILL", "the holder killed itself");
    await handle.release();
  };

  it("a holder killed in the tick its acquire() of a free lock resolved is handed to the next holder", async () => {
    const coord = await client("free");
    const holder = dyingHolder(server, "free", "job");
    holders.push(holder);
    await handedOn(coord, "job", holder);
  });

  it("so is one granted as the waiter second in line, killed in the tick it was granted", async () => {
    const coord = await client("queued");
    const held = await coord.lock("job").acquire();
    const holder = dyingHolder(server, "queued", "job");
    holders.push(holder);
    await waitForWaiters(coord, "job", 1);
    assert.equal((await held.release()).status, "released");
    await handedOn(coord, "job", holder);
  });

  it("fence info that looks like a pending token's record end is handed on as given, with the right token", async () => {
    const coord = await client("lookalike");
    const holder = dyingHolder(server, "lookalike", "job", { fenceInfo: LOOKALIKE });
    holders.push(holder);
    await handedOn(coord, "job", holder, LOOKALIKE);
  });

  it("a wait given up while its granting transaction is in flight deletes the record that transaction put", async () => {
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    const raw = new Etcd3({ hosts: server.endpoints });
    try {
      const a = await client("given-up");
      const k = await connect(`etcd://${proxy.address}`, { namespace: "given-up", memberId: "k", ttlMs: 20_000 });
      coords.push(k);
      const held = await a.lock("job").acquire();
      const giveUp = new AbortController();
      const waiting = k.lock("job").acquire({ signal: giveUp.signal });
      await waitForWaiters(a, "job", 1);
      // From now on K hears of the release 1.5 s late and its grant lands 1.5 s after it
      // sends it; its answer would come 1.5 s later still. K gives up in between.
      proxy.setLatency({ up: { ms: 1500 }, down: { ms: 1500 } });
      const recordKey = "baton/given-up/c/takeover/job";
      const landed = observed(
        new Promise<void>((resolve, reject) => {
          void raw
            .watch()
            .key(recordKey)
            .create()
            .then((watcher) => {
              watcher.on("put", (kv) => {
                if (!kv.value.toString().includes(`"m":"k"`)) return;
                giveUp.abort(new Error("given up"));
                resolve();
                void watcher.cancel();
              });
            }, reject);
        }),
      );
      assert.equal((await held.release()).status, "released");
      await landed;
      await assert.rejects(waiting, /was cancelled/);
      await waitFor(async () => (await raw.get(recordKey).exec()).kvs.length === 0, "K's record deleted", 20_000);
      proxy.setLatency({});
      const next = await a.lock("job").acquire({ timeoutMs: 20_000 });
      assert.equal(next.takeover, null, "a grant never handed out was not lost either");
      await next.release();
    } finally {
      raw.close();
      await proxy.close();
    }
  });
});
