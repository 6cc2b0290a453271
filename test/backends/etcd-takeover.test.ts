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
import { type Coordinator, connect } from "../../src/index.js";
import { waitForWaiters } from "../conformance/helpers.js";
import { type EtcdServer, startEtcd } from "../harness/etcd.js";
import { Holder } from "../harness/holder.js";

/** Short: the killed holder's lease must expire before the next grant. */
const HOLDER_TTL_MS = 2000;

/** A holder process that acquires `name` with no option and dies as soon as it is granted. */
function dyingHolder(server: EtcdServer, namespace: string, name: string): Holder {
  const url = new URL(server.url);
  url.searchParams.set("namespace", namespace);
  process.env.BATON_HOLDER_DIE = "1";
  try {
    return new Holder(url.href, name, HOLDER_TTL_MS);
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

  const handedOn = async (coord: Coordinator, name: string, holder: Holder) => {
    const granted = await holder.next((e) => e.event === "acquired", "the holder's grant");
    const handle = await coord.lock(name).acquire({ timeoutMs: 30_000 });
    const { memberId, token } = handle.takeover ?? assert.fail("the killed holder's loss was not handed on");
    assert.deepEqual({ memberId, token }, { memberId: `holder-${holder.child.pid}`, token: BigInt(granted.token!) });
    assert.ok(handle.token > token, `new token ${handle.token} must exceed ${token}`);
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
});
