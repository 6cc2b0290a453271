import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import { BackendUnavailableError, connect, InvalidArgumentError } from "../../src/index.js";
import { observed, waitForWaiters } from "../conformance/helpers.js";
import { conformanceOnOwnServer, ownServer } from "./fixtures/backend-suite.js";
import { makeCertificates, noOpenssl } from "./fixtures/certificates.js";
import { startEtcd } from "../harness/etcd.js";
import { freePort } from "../harness/ports.js";
import { makeTempDir, removeTempDir, ServerProcess, waitUntil } from "../harness/proc.js";

// Real etcd from Debian's etcd-server (scripts/ensure-servers.sh etcd), one node on a free
// loopback port with a temporary data directory.
conformanceOnOwnServer({
  name: "etcd",
  idleUrl: "etcd://127.0.0.1:2379",
  // Short enough to keep loss tests quick, long enough that a loaded CI machine (two test
  // files at once on 2 cores) does not miss a keep-alive deadline by accident.
  shortTtlMs: 4000,
  contention: { clients: 20, rounds: 20 },
  start: () => startEtcd(),
});

describe("etcd specifics", () => {
  let raw: Etcd3;
  const { server, client } = ownServer(() => startEtcd(), {
    started: async (own) => {
      raw = new Etcd3({ hosts: own.endpoints });
    },
    stopping: () => raw.close(),
  });

  it("keeps every name in its own key range under baton/<namespace>/, whatever the name", async () => {
    const a = await client();
    const names = ["a", "a/b", "a%2Fb", "a/", "ünï ✓"];
    const handles = [];
    for (const name of names) handles.push(await a.lock(name).acquire({ timeoutMs: 2000 }));
    const keys = await raw.getAll().prefix("baton/specifics/q/lock/").keys();
    const named = keys.map((k) => decodeURIComponent(k.split("/")[4]!)).sort();
    assert.deepEqual(named, [...names].sort());
    assert.deepEqual(
      (await a.inspect()).locks.map((l) => l.name),
      [...names].sort(),
    );
    assert.equal((await raw.getAll().prefix("baton/other/").keys()).length, 0);
    for (const h of handles) await h.release();
    assert.equal((await raw.getAll().prefix("baton/specifics/").keys()).length, 0, "release leaves nothing");
  });

  it("never grants a waiter whose own key vanished (the Jepsen etcd 3.4.3 check)", async () => {
    const [a, b] = [await client({ memberId: "a" }), await client({ memberId: "b" })];
    const held = await a.lock("j").acquire();
    const waiting = observed(b.lock("j").acquire());
    await waitForWaiters(a, "j", 1);
    const bKey = (await raw.getAll().prefix("baton/specifics/q/lock/j/").keys()).find(
      (k) => !k.includes(a.session!.id),
    );
    assert.ok(bKey);
    const first = b.session!;
    await raw.delete().key(bKey);
    await held.release();
    // The vanished key means a lost session: b is not granted on it. Its wait goes on,
    // queued again on a fresh session, and is granted there (a has released).
    const again = await waiting;
    assert.ok(first.signal.aborted, "b's first session was given up");
    assert.notEqual(b.session?.id, first.id);
    assert.ok(again.token > held.token);
    await again.release();
  });

  it("hands a lock to the waiter second in line on the head's deletion: the deletion's revision is its token, no recording round trip first", async () => {
    // Txns etcd has answered: the waiter's join and its read after creating its watch are
    // two, so once the count has grown by two it waits on the watch.
    const txns = async () => {
      const text = await (await fetch(`http://127.0.0.1:${server().clientPort}/metrics`)).text();
      return Number(/grpc_server_handled_total\{grpc_code="OK",grpc_method="Txn"[^}]*\} (\d+)/.exec(text)?.[1]);
    };
    const [a, b] = [await client({ memberId: "a" }), await client({ memberId: "b" })];
    const held = await a.lock("handoff").acquire();
    const before = await txns();
    // Untracked: a tracked waiter is granted by the transaction that puts its takeover
    // record (the next test), not by the deletion.
    const waiting = b.lock("handoff").acquire({ takeover: false });
    await waitUntil("the waiter watching", async () => (await txns()) >= before + 2, { timeoutMs: 10_000 });
    const aKey = (await raw.getAll().prefix("baton/specifics/q/lock/handoff/").keys()).find((k) =>
      k.includes(a.session!.id),
    );
    assert.ok(aKey);
    // The release, as etcd sees it: the head's key deleted, at this revision.
    const deletion = await raw.kv.deleteRange({ key: Buffer.from(aKey) });
    const granted = await waiting;
    assert.equal(granted.token, BigInt(deletion.header.revision));
    assert.ok(granted.token > held.token);
    // Recorded right after: inspect() shows the holder with that token.
    await waitUntil(
      "the grant recorded",
      async () => (await b.inspect()).locks.find((l) => l.name === "handoff")?.holders[0]?.token === granted.token,
      { timeoutMs: 10_000 },
    );
    await granted.release();
    await held.release();
  });

  it("puts a plain acquire()'s takeover record in its granting transaction and deletes it in the release's (no lease on it)", async () => {
    const txns = async () => {
      const text = await (await fetch(`http://127.0.0.1:${server().clientPort}/metrics`)).text();
      return Number(/grpc_server_handled_total\{grpc_code="OK",grpc_method="Txn"[^}]*\} (\d+)/.exec(text)?.[1]);
    };
    const recordKey = "baton/specifics/c/takeover/native";
    const [a, b] = [await client({ memberId: "a" }), await client({ memberId: "b" })];
    assert.equal(a.takeoverByDefault, true);
    const before = await txns();
    const held = await a.lock("native").acquire();
    assert.equal(await txns(), before + 1, "one transaction grants and puts the record");
    const stored = (await raw.get(recordKey).exec()).kvs[0] ?? assert.fail("no record after acquire()");
    assert.equal(BigInt(stored.mod_revision), held.token, "put by the granting transaction");
    assert.equal(stored.lease, "0", "bound to no lease: it outlives a crashed holder");
    assert.deepEqual(
      (await b.inspect()).takeovers?.map((r) => [r.name, r.state, r.token, r.memberId]),
      [["native", "held", held.token, "a"]],
    );
    // A waiter second in line, tracked: granted by the transaction that puts its record.
    // Its join and its read after creating its watch are two Txns: then it waits.
    const queued = await txns();
    const waiting = b.lock("native").acquire({ timeoutMs: 10_000 });
    await waitUntil("the waiter watching", async () => (await txns()) >= queued + 2, { timeoutMs: 10_000 });
    const released = await txns();
    assert.equal((await held.release()).status, "released");
    const next = await waiting;
    assert.equal(next.takeover, null, "cleanly released");
    assert.equal(await txns(), released + 2, "the release's transaction, then the waiter's grant");
    const handed = (await raw.get(recordKey).exec()).kvs[0] ?? assert.fail("no record after the handoff");
    assert.equal(BigInt(handed.mod_revision), next.token);
    const end = await txns();
    assert.equal((await next.release()).status, "released");
    assert.equal(await txns(), end + 1, "one transaction releases and deletes the record");
    assert.equal((await raw.getAll().prefix("baton/specifics/c/").keys()).length, 0, "no record");
    assert.equal((await raw.getAll().prefix("baton/specifics/f/").keys()).length, 0, "no fence tombstone");
  });

  it("keeps many acquisitions in flight on one coordinator without a MaxListenersExceededWarning", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => {
      if (warning.name === "MaxListenersExceededWarning") warnings.push(warning.message);
    };
    process.on("warning", onWarning);
    try {
      const [holder, waiter] = [await client({ memberId: "holder" }), await client({ memberId: "waiter" })];
      const names = Array.from({ length: 15 }, (_, i) => `many-${i}`);
      const held = await Promise.all(names.map((name) => holder.lock(name).acquire()));
      const waiting = names.map((name) => waiter.lock(name).acquire({ timeoutMs: 10_000 }));
      for (const name of names) await waitForWaiters(holder, name, 1);
      await Promise.all(held.map((h) => h.release()));
      for (const handle of await Promise.all(waiting)) await handle.release();
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on a later tick
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(warnings, []);
  });

  it("rejects a bad configuration at connect", async () => {
    await assert.rejects(connect(server().url, { ca: "/nonexistent.pem" }), /ca, cert and key options need TLS/);
    await assert.rejects(
      connect(server().url.replace("etcd:", "etcds:"), { cert: "/x.pem" }),
      /both the "cert" and "key"/,
    );
    await assert.rejects(connect(server().url, { requestTimeoutMs: "soon" }), InvalidArgumentError);
    await assert.rejects(connect("etcd://", {}), InvalidArgumentError);
  });

  it("fails fast with BackendUnavailableError when etcd is not there", async () => {
    const started = performance.now();
    await assert.rejects(connect("etcd://127.0.0.1:1", { requestTimeoutMs: 1000 }), BackendUnavailableError);
    assert.ok(performance.now() - started < 5000);
  });

  it("authenticates with user:password@ and refuses wrong credentials", async () => {
    // Last: it turns authentication on for this server.
    await raw.role("root").create();
    await raw.user("root").create("s3cret");
    await raw.user("root").addRole("root");
    await raw.auth.authEnable({});
    const url = server().url.replace("etcd://", "etcd://root:s3cret@");
    const a = await client({}, url);
    const h = await a.lock("auth").acquire();
    assert.ok(h.token > 0n);
    await h.release();
    await assert.rejects(connect(server().url.replace("etcd://", "etcd://root:wrong@")), BackendUnavailableError);
  });
});

describe("etcd over TLS", { skip: noOpenssl }, () => {
  let dir: string;
  let proc: ServerProcess | undefined;
  let port: number;
  const pem = (name: string) => join(dir, name);

  before(async () => {
    dir = makeTempDir("baton-etcd-tls-");
    // Every path is relative to `dir`, the working directory of openssl and etcd.
    makeCertificates(dir, [
      ["server", "serverAuth"],
      ["client", "clientAuth"],
    ]);
    port = await freePort();
    const peer = await freePort();
    const client = `https://127.0.0.1:${port}`;
    const peers = `http://127.0.0.1:${peer}`;
    const args = [
      `--name tls --data-dir data --initial-cluster tls=${peers}`,
      `--listen-client-urls ${client} --advertise-client-urls ${client}`,
      `--listen-peer-urls ${peers} --initial-advertise-peer-urls ${peers}`,
      "--cert-file server.pem --key-file server.key --client-cert-auth --trusted-ca-file ca.pem",
    ];
    proc = new ServerProcess(
      "etcd (TLS)",
      existsSync("/usr/bin/etcd") ? "/usr/bin/etcd" : "etcd",
      args.join(" ").split(" "),
      {
        logFile: pem("etcd.log"),
        cwd: dir,
        // etcd 3.4 refuses to start off amd64/ppc64le unless told which architecture it is.
        env: process.arch === "x64" ? process.env : { ...process.env, ETCD_UNSUPPORTED_ARCH: goArch() },
      },
    );
    await waitUntil(
      "etcd over TLS",
      async () => {
        const probe = await connect(`etcds://127.0.0.1:${port}`, tlsOptions());
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

  const tlsOptions = () => ({
    ca: pem("ca.pem"),
    cert: pem("client.pem"),
    key: pem("client.key"),
    requestTimeoutMs: 2000,
  });

  it("locks over etcds:// with a CA and a client certificate", async () => {
    const coord = await connect(`etcds://127.0.0.1:${port}`, tlsOptions());
    try {
      const handle = await coord.lock("tls").acquire();
      assert.ok(handle.token > 0n);
      await handle.release();
    } finally {
      await coord.close();
    }
  });

  it("is refused without the client certificate", async () => {
    await assert.rejects(
      connect(`etcds://127.0.0.1:${port}`, { ca: pem("ca.pem"), requestTimeoutMs: 2000 }),
      BackendUnavailableError,
    );
  });
});

function goArch(): string {
  const names: Record<string, string> = { arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le" };
  return names[process.arch] ?? process.arch;
}
