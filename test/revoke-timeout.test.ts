/**
 * A revoke's own bound: `timeoutMs` and `signal` end the wait for a stuck holder's deadline
 * (the core's revoke is the same on every backend with `fenceSession`; etcd here). The
 * holder is a real process, SIGSTOPped so that it can neither renew nor close: a revoke
 * would otherwise wait out its whole TTL. What the cancelled revoke leaves behind is what
 * the TSDoc promises: the session stays marked revoked, so the holder loses its lock.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { AbortError, type Coordinator, InvalidArgumentError, TimeoutError, connect } from "../src/index.js";
import { type EtcdServer, startEtcd } from "./harness/etcd.js";
import { baton } from "./fixtures/cli.js";
import { Holder } from "./harness/holder.js";

const TTL_MS = 20_000;

describe("revoke with a timeout or a signal", () => {
  let etcd: EtcdServer;
  let operator: Coordinator;
  const holders: Holder[] = [];
  before(async () => {
    etcd = await startEtcd();
    operator = await connect(etcd.url, { memberId: "operator" });
  });
  after(async () => {
    await Promise.all(holders.map((h) => h.stop()));
    await operator?.close();
    await etcd?.stop();
  });

  const stuck = async (name: string) => {
    const holder = new Holder(etcd.url, name, TTL_MS);
    holders.push(holder);
    await holder.next((e) => e.event === "acquired", "the holder's grant");
    holder.signal("SIGSTOP");
    return holder;
  };

  it("timeoutMs ends the wait for a paused holder's deadline with TimeoutError; the holder still loses", async () => {
    const holder = await stuck("rt");
    const started = Date.now();
    const outcome = await operator.revoke("rt", { timeoutMs: 400 }).then(
      () => assert.fail("a paused holder cannot be confirmed gone within 400 ms of a 20 s TTL"),
      (error: unknown) => error,
    );
    assert.ok(outcome instanceof TimeoutError, String(outcome));
    assert.ok(Date.now() - started < TTL_MS / 2, "it gave up long before the holder's deadline");
    // The session stays marked revoked: once resumed, the holder learns that it lost.
    holder.signal("SIGCONT");
    await holder.next((e) => e.event === "lost", "the revoked holder's signal", TTL_MS * 2);
    const next = await operator.lock("rt").acquire({ timeoutMs: TTL_MS * 2 });
    await next.release();
  });

  it("an abort ends it at once with AbortError carrying the caller's reason", async () => {
    await stuck("ra");
    const stop = new AbortController();
    const revoking = operator.revoke("ra", { signal: stop.signal });
    // Whatever step it is at (the inspection, the marking, the wait on the 20 s deadline),
    // the abort ends it: the outcome is the same, so the moment needs no synchronising.
    setTimeout(() => stop.abort(new Error("operator gave up")), 300);
    const started = Date.now();
    const outcome = await revoking.then(
      () => assert.fail("must not resolve: the holder cannot be confirmed gone"),
      (error: unknown) => error,
    );
    assert.ok(outcome instanceof AbortError, String(outcome));
    assert.equal((outcome.cause as Error).message, "operator gave up");
    assert.ok(Date.now() - started < TTL_MS / 2, "it ended long before the holder's deadline");
  });

  it("an already-aborted signal revokes nothing", async () => {
    const holder = new Holder(etcd.url, "rn", 4000);
    holders.push(holder);
    const acquired = await holder.next((e) => e.event === "acquired", "the holder's grant");
    await assert.rejects(operator.revoke("rn", { signal: AbortSignal.abort() }), AbortError);
    const info = await operator.inspect();
    assert.equal(String(info.locks.find((l) => l.name === "rn")?.holders[0]?.token), acquired.token);
    assert.equal(
      holder.events.some((e) => e.event === "lost"),
      false,
    );
  });

  it("baton unlock --timeout gives up with exit 75 and says why; a malformed one is exit 64", async () => {
    const holder = await stuck("rc");
    const env = { ...process.env, BATON_URL: etcd.url };
    const ran = await baton(["unlock", "rc", "--timeout", "400ms"], env);
    assert.equal(ran.status, 75, ran.stderr);
    assert.match(ran.stderr, /revoking lock "rc" timed out after 400 ms/);
    const bad = await baton(["unlock", "rc", "--timeout", "soon"], env);
    assert.equal(bad.status, 64, bad.stderr);
    assert.match(bad.stderr, /--timeout must be a duration/);
    holder.signal("SIGCONT");
    await holder.next((e) => e.event === "lost", "the revoked holder's signal", TTL_MS * 2);
  });

  it("refuses a bad timeoutMs or signal with InvalidArgumentError", async () => {
    for (const timeoutMs of [-1, Number.NaN, 2 ** 31, "1s"]) {
      await assert.rejects(operator.revoke("x", { timeoutMs: timeoutMs as number }), InvalidArgumentError);
    }
    await assert.rejects(operator.revoke("x", { signal: {} as unknown as AbortSignal }), InvalidArgumentError);
  });
});
