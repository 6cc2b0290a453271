import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { wakeStats } from "../../src/backends/redis/wakeups.js";
import { BackendUnavailableError, connect, InvalidArgumentError, type LockHandle } from "../../src/index.js";
import { waitForWaiters } from "../conformance/helpers.js";
import { conformanceOnOwnServer, ownServer } from "./fixtures/backend-suite.js";
import { makeCertificates, noOpenssl } from "./fixtures/certificates.js";
import { freePort } from "../harness/ports.js";
import { makeTempDir, removeTempDir, ServerProcess, waitUntil } from "../harness/proc.js";
import { rawCommand, startRedis } from "../harness/redis.js";

// Real redis-server from Debian (scripts/ensure-servers.sh redis) on a free loopback port
// with a temporary directory, no persistence.
conformanceOnOwnServer({
  name: "redis",
  idleUrl: "redis://127.0.0.1:6379",
  shortTtlMs: 3000,
  contention: { clients: 20, rounds: 20 },
  start: () => startRedis(),
});

describe("redis specifics", () => {
  const { server, client } = ownServer(() => startRedis());

  it("wakes exactly the waiter a release grants, by a message, not a re-check", async () => {
    const holder = await client({ memberId: "holder" });
    const waiters = await Promise.all(Array.from({ length: 5 }, (_, i) => client({ memberId: `w${i}` })));
    let handle = await holder.lock("herd").acquire();
    // Queued one after another: five clients sending at once reach Redis in any order, and
    // the loop below releases in the order it expects the grants.
    const pending: Promise<LockHandle>[] = [];
    for (const [i, w] of waiters.entries()) {
      pending.push(w.lock("herd").acquire({ timeoutMs: 20_000 }));
      await waitForWaiters(holder, "herd", i + 1);
    }
    const before = { ...wakeStats };
    const order: LockHandle[] = [];
    for (let i = 0; i < 5; i++) {
      const messagesBefore = wakeStats.messages;
      await handle.release();
      handle = await pending[i]!;
      order.push(handle);
      assert.equal(wakeStats.messages - messagesBefore, 1, "one message per release");
    }
    await handle.release();
    assert.equal(wakeStats.grantsByMessage - before.grantsByMessage, 5);
    assert.equal(wakeStats.grantsByCheck - before.grantsByCheck, 0);
    // FIFO, and every token larger than the one before.
    for (let i = 1; i < order.length; i++) assert.ok(order[i]!.token > order[i - 1]!.token);
  });

  it("a waiter withdrawn after a release granted it (before it read the grant) leaves no takeover record", async () => {
    const ns = { namespace: "withdrawn-grant" };
    const a = await client({ ...ns, memberId: "race" });
    const held = await a.lock("raced").acquire();
    const controller = new AbortController();
    const waiting = a.lock("raced").acquire({ signal: controller.signal, timeoutMs: 20_000 });
    await waitForWaiters(a, "raced", 1);
    // One coordinator, one connection: the release's script (which grants the waiter and
    // writes its record) runs before the withdrawal's, sent after the abort below.
    const released = held.release();
    controller.abort();
    await assert.rejects(waiting, /was cancelled/);
    assert.equal((await released).status, "released");
    assert.deepEqual((await a.inspect()).takeovers, [], "the withdrawn grant took its record with it");
    const b = await client({ ...ns, memberId: "next" });
    const next = await b.lock("raced").acquire({ timeoutMs: 10_000 });
    assert.equal(next.takeover, null, "no false takeover of a grant never handed out");
    await next.release();
  });

  it("a downgrade that fails (the grant is gone) keeps its takeover record for the next holder", async () => {
    const namespace = "failed-downgrade";
    const a = await client({ namespace, memberId: "downgrader" });
    const held = await a.lock("dg").acquire();
    const record = (await a.inspect()).takeovers?.find((r) => r.name === "dg") ?? assert.fail("no record");
    // The session's key goes behind the client's back: its grant is gone, and it does not know yet.
    assert.match(await rawCommand(server().port, `DEL baton:${namespace}:s:${record.sessionId}`), /^:1/);
    await assert.rejects(held.downgrade(), /gone|lost/);
    const b = await client({ namespace, memberId: "next" });
    const next = await b.lock("dg").acquire({ timeoutMs: 10_000 });
    assert.equal(next.takeover?.token, held.token, "the lost exclusive holding is reported");
    await next.release();
  });

  it("close() while a waiter's grant is under way leaves no takeover record", async () => {
    const namespace = "closed-while-granted";
    const a = await client({ namespace, memberId: "closing" });
    const held = await a.lock("closing").acquire();
    const waiting = assert.rejects(a.lock("closing").acquire({ timeoutMs: 20_000 }), /closed/);
    await waitForWaiters(a, "closing", 1);
    // One connection: the release's script grants the waiter (and writes its record) first.
    const released = held.release();
    await a.close();
    await waiting;
    await released;
    const b = await client({ namespace, memberId: "after" });
    const next = await b.lock("closing").acquire({ timeoutMs: 10_000 });
    assert.equal(next.takeover, null, "a grant the closed coordinator never handed out is no takeover");
    await next.release();
  });

  it("keeps every namespace and database apart", async () => {
    const a = await client({ namespace: "one" });
    const b = await client({ namespace: "two" });
    const c = await client({ namespace: "one" }, `${server().url}/3`);
    const held = await a.lock("same").acquire();
    const other = await b.lock("same").tryAcquire();
    const otherDb = await c.lock("same").tryAcquire();
    assert.ok(other && otherDb, "other namespaces and databases are free");
    await Promise.all([held.release(), other.release(), otherDb.release()]);
  });

  it("rejects malformed URLs and options with InvalidArgumentError", async () => {
    const port = server().port;
    const cases: [string, Record<string, unknown>, RegExp][] = [
      [`redis://127.0.0.1:${port}/x`, {}, /database number/],
      [`redis://127.0.0.1:${port},127.0.0.1:${port}`, {}, /one host/],
      ["redis+sentinel://127.0.0.1:26379", {}, /name the master/],
      [`redis://127.0.0.1:${port}`, { requestTimeoutMs: "soon" }, /requestTimeoutMs/],
      [`redis://127.0.0.1:${port}`, { replicas: -1 }, /replicas/],
      [`redis://127.0.0.1:${port}`, { ca: "/x.pem" }, /needs TLS/],
      ["redis://127.0.0.1:99999", {}, /out of range|not a URL/],
    ];
    for (const [url, options, message] of cases) {
      await assert.rejects(connect(url, options), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, `${url}: ${String(e)}`);
        assert.match((e as Error).message, message);
        return true;
      });
    }
  });

  it("fails fast with BackendUnavailableError when Redis is not there", async () => {
    const started = performance.now();
    await assert.rejects(connect("redis://127.0.0.1:1", { requestTimeoutMs: 1000 }), BackendUnavailableError);
    assert.ok(performance.now() - started < 5000);
  });

  it("refuses a grant that the asked-for replicas did not acknowledge (replicas=1, none attached)", async () => {
    // The connect runs under the same bound: too short a one fails it on a loaded machine.
    const a = await client({ replicas: 1, requestTimeoutMs: 1500 });
    await assert.rejects(a.lock("w").acquire(), BackendUnavailableError);
    const b = await client();
    const free = await b.lock("w").tryAcquire();
    assert.ok(free, "the refused grant was withdrawn");
    await free.release();
  });

  it("authenticates with user:password@ and refuses wrong credentials", async () => {
    // Last: it turns authentication on for this server.
    assert.match(await rawCommand(server().port, "ACL SETUSER baton on >s3cret ~* &* +@all"), /^\+OK/);
    const url = server().url.replace("redis://", "redis://baton:s3cret@");
    const a = await client({}, url);
    const h = await a.lock("auth").acquire();
    assert.ok(h.token > 0n);
    await h.release();
    await assert.rejects(connect(server().url.replace("redis://", "redis://baton:wrong@")), BackendUnavailableError);
  });
});

describe("redis over TLS", { skip: noOpenssl }, () => {
  let dir: string;
  let proc: ServerProcess | undefined;
  let port: number;
  const pem = (name: string) => join(dir, name);

  before(async () => {
    dir = makeTempDir("baton-redis-tls-");
    makeCertificates(dir, [["server", "serverAuth"]]);
    port = await freePort();
    const args = [
      "--port 0 --bind 127.0.0.1 --appendonly no --protected-mode no",
      `--tls-port ${port} --tls-cert-file server.pem --tls-key-file server.key --tls-ca-cert-file ca.pem`,
      "--tls-auth-clients no",
    ];
    proc = new ServerProcess("redis (TLS)", "redis-server", args.join(" ").split(" ").filter(Boolean), {
      logFile: pem("redis.log"),
      cwd: dir,
    });
    await waitUntil(
      "redis over TLS",
      async () => {
        const probe = await connect(`rediss://127.0.0.1:${port}`, { ca: pem("ca.pem"), requestTimeoutMs: 1000 });
        await probe.close();
        return true;
      },
      { timeoutMs: 30_000, procs: [proc] },
    );
  });

  after(async () => {
    await proc?.stop();
    removeTempDir(dir);
  });

  it("locks over rediss:// with the CA given", async () => {
    const coord = await connect(`rediss://127.0.0.1:${port}`, { ca: pem("ca.pem"), requestTimeoutMs: 2000 });
    try {
      const handle = await coord.lock("tls").acquire();
      assert.ok(handle.token > 0n);
      await handle.release();
    } finally {
      await coord.close();
    }
  });

  it("refuses a server whose certificate it cannot verify", async () => {
    await assert.rejects(connect(`rediss://127.0.0.1:${port}`, { requestTimeoutMs: 1000 }), (e: unknown) => {
      assert.ok(e instanceof BackendUnavailableError, String(e));
      assert.match(`${e.message} ${String((e.cause as Error | undefined)?.message)}`, /certificate/i);
      return true;
    });
  });
});
