/**
 * etcd's native takeover records (src/backends/etcd/takeover.ts) when transactions land
 * late or twice: a release whose answer was lost and is sent again in the background, and
 * the grant transactions of one acquisition attempt landing in any order (a send whose
 * answer was lost may reach etcd after a later send, through another member). Real etcd;
 * the release through the harness proxy, cut; a waiter's recording send held back in this process
 * (etcd3's KVClient.txn wrapped: the caller told it timed out) and sent to etcd later.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Etcd3, type IRequestOp, type ITxnRequest, type ITxnResponse, KVClient } from "etcd3";
import { type Coordinator, connect } from "../../src/index.js";
import { Keyspace } from "../../src/backends/etcd/keys.js";
import { sealRecord } from "../../src/core/driver.js";
import {
  dropOwnRecordOp,
  dropSentRecordOp,
  putRecordOp,
  type RecordWrite,
  RecordTags,
  readRecordOps,
  readRecordValue,
  recordFound,
  recordOutcome,
} from "../../src/backends/etcd/takeover.js";
import { waitFor, waitForWaiters } from "../conformance/helpers.js";
import { type EtcdServer, startEtcd } from "../harness/etcd.js";
import { startProxy } from "../harness/proxy.js";

/** The record text the core gives a plain tracked acquisition (src/core/takeover.ts). */
const TEXT = '{"m":"k","s":"5e55","f":null,"d":0}';

describe("etcd takeover records, sent again or landing late", () => {
  let server: EtcdServer;
  let raw: Etcd3;
  const coords: Coordinator[] = [];
  before(async () => {
    server = await startEtcd();
    raw = new Etcd3({ hosts: server.endpoints });
  });
  after(async () => {
    await Promise.all(coords.map((c) => c.close()));
    raw.close();
    await server.stop();
  });

  it("a release whose answer is lost deletes the record with the key when sent again: no false takeover", async () => {
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    try {
      // A long TTL, so that the lease cannot free the lock first (that would be a loss, and
      // a takeover would be right); a short call deadline, so that the release gives up soon.
      const k = await connect(`etcd://${proxy.address}`, {
        namespace: "release-again",
        memberId: "k",
        ttlMs: 30_000,
        requestTimeoutMs: 500,
      });
      const a = await connect(server.url, { namespace: "release-again", memberId: "a", ttlMs: 30_000 });
      coords.push(k, a);
      const held = await k.lock("job").acquire();
      const waiting = a.lock("job").acquire({ timeoutMs: 25_000 });
      await waitForWaiters(a, "job", 1);
      proxy.cut();
      assert.equal((await held.release()).status, "unconfirmed", "the cut release cannot be confirmed");
      assert.equal((await raw.get("baton/release-again/c/takeover/job").exec()).kvs.length, 1, "nothing landed yet");
      proxy.heal();
      const next = await waiting;
      assert.equal(next.takeover, null, "the release landed, sent again: a clean release");
      assert.ok(next.token > held.token);
      await next.release();
      assert.equal((await raw.get("baton/release-again/c/takeover/job").exec()).kvs.length, 0);
    } finally {
      await proxy.close();
    }
  });

  it("a recording send landing late, after the head's release handed the waiter the lock, fails: one token, no false takeover", async () => {
    const namespace = "late-recording";
    const connected = await Promise.all(
      ["g", "h", "a"].map((memberId) => connect(server.url, { namespace, memberId, ttlMs: 30_000 })),
    );
    const [g, h, a] = connected as [Coordinator, Coordinator, Coordinator];
    // S through a proxy that does nothing: its own etcd client, so its transactions can be told apart.
    const [host, port] = server.endpoints[0]!.split(":");
    const proxy = await startProxy({ host: host!, port: Number(port) });
    const s = await connect(`etcd://${proxy.address}`, { namespace, memberId: "s", ttlMs: 30_000 });
    coords.push(...connected, s);
    // S's session begins with its acquire().
    const sid = () => s.session?.id ?? "\u0000none";
    // S's transactions, seen in this process: its first recording send is held back (its
    // caller told it timed out, as a send stuck on a cut member), to land when the test says.
    const original = KVClient.prototype.txn;
    let client: KVClient | null = null;
    let answered = 0;
    let stale: (() => Promise<ITxnResponse>) | null = null;
    KVClient.prototype.txn = function (this: KVClient, request: ITxnRequest, ...rest: unknown[]) {
      const call = () => (original as (...args: unknown[]) => Promise<ITxnResponse>).call(this, request, ...rest);
      const put = request.success?.[0]?.request_put;
      if (!client && request.compare?.some((c) => c.key?.toString().includes(sid()))) client = this;
      if (this !== client) return call();
      if (!stale && put?.key?.toString().includes(sid()) && request.success?.[1]?.request_txn) {
        stale = call;
        return Promise.reject(new Error("etcdserver: request timed out"));
      }
      return call().finally(() => answered++);
    } as typeof original;
    try {
      const gate = await g.lock("job").acquire({ takeover: false });
      // H second in line (it will know S from before its grant), then A, then S.
      const head = h.lock("job").acquire();
      await waitForWaiters(g, "job", 1);
      const giveUp = new AbortController();
      const gone = a.lock("job").acquire({ signal: giveUp.signal });
      await waitForWaiters(g, "job", 2);
      const waiting = s.lock("job").acquire({ timeoutMs: 20_000 });
      await waitFor(() => answered >= 2, "S watching A (its join, its read)");
      // A goes: S's recording send is held back; its retry fails (G holds), S waits behind H.
      giveUp.abort(new Error("given up"));
      await assert.rejects(gone);
      await waitFor(() => stale !== null && answered >= 4, "S waiting behind H");
      assert.equal((await gate.release()).status, "released");
      const held = await head;
      await waitFor(() => answered >= 6, "S waiting second in line");
      assert.equal((await held.release()).status, "released");
      const handle = await waiting;
      const recordKey = `baton/${namespace}/c/takeover/job`;
      assert.equal(BigInt((await raw.get(recordKey).exec()).kvs[0]!.mod_revision), handle.token, "handed on");
      // The stale send lands now.
      await stale!();
      const record = (await raw.get(recordKey).exec()).kvs[0]!;
      assert.equal(BigInt(record.mod_revision), handle.token, "the record is still the grant's, at its token");
      assert.equal((await handle.release()).status, "released");
      assert.equal((await raw.get(recordKey).exec()).kvs.length, 0, "the clean release deleted the record");
    } finally {
      KVClient.prototype.txn = original;
      await s.close();
      await proxy.close();
    }
  });

  describe("one attempt's grant transactions, in any order", () => {
    const keys = new Keyspace("late");
    let name = 0;
    /** A fresh lock name, and the record writes of two attempts on it. */
    const fresh = () => {
      const lock = `job-${++name}`;
      const [mine, theirs] = [new RecordTags(), new RecordTags()];
      return {
        lock,
        mine: () => mine.next(keys, lock, TEXT),
        theirs: () => theirs.next(keys, lock, TEXT.replace('"k"', '"h"')),
      };
    };
    const send = (ops: IRequestOp[]): Promise<ITxnResponse> => raw.kv.txn({ compare: [], success: ops, failure: [] });
    /** A grant transaction's record part landing: what the grant would say of it. */
    const lands = async (write: RecordWrite) => {
      const response = await send([putRecordOp(write)]);
      return recordOutcome(write, response.responses[0], BigInt(response.header.revision));
    };
    const stored = async (write: RecordWrite) => (await raw.get(write.key).exec()).kvs[0];

    const withdrawals: [string, (w: ReturnType<typeof fresh>) => Promise<RecordWrite>][] = [
      [
        "the last send's record",
        async (w) => {
          const last = w.mine();
          await lands(last);
          return last;
        },
      ],
      [
        "an earlier send's record, when a later send (the last) never landed",
        async (w) => {
          await lands(w.mine());
          return w.mine();
        },
      ],
      [
        "an earlier send's record that landed after the last send's",
        async (w) => {
          const [first, last] = [w.mine(), w.mine()];
          await lands(last);
          await lands(first);
          return last;
        },
      ],
    ];
    for (const [what, landing] of withdrawals) {
      it(`a given-up attempt's withdrawal deletes ${what}`, async () => {
        const w = fresh();
        const last = await landing(w);
        assert.ok(await stored(last), "a record landed");
        await send([dropOwnRecordOp(last)]);
        assert.equal(await stored(last), undefined);
      });
    }

    it("a join's fence-off deletes the record that join's send put", async () => {
      const w = fresh();
      const join = w.mine();
      await lands(join);
      await send([dropSentRecordOp(join)]);
      assert.equal(await stored(join), undefined);
    });

    // The fence-off's first send got no answer, its retry landed, a later join of the attempt
    // was granted, and the first send lands only now: the live holder's record must stay.
    const liveRecords: [string, (later: RecordWrite) => Promise<string>][] = [
      [
        "its own grant transaction's",
        async (later) => {
          await lands(later);
          return later.stored;
        },
      ],
      [
        "the one a head's release put for it",
        async (later) => {
          const handed = sealRecord(later.text, 0n, Date.now());
          await raw.put(later.key).value(handed).exec();
          return handed;
        },
      ],
    ];
    for (const [what, granted] of liveRecords) {
      it(`a join's fence-off landing late leaves a later send's record, ${what}`, async () => {
        const w = fresh();
        const [fenced, later] = [w.mine(), w.mine()];
        const live = await granted(later);
        await send([dropSentRecordOp(fenced)]);
        assert.equal((await stored(later))?.value.toString(), live, "the live holder's record stays");
      });
    }

    it("a withdrawal leaves another attempt's record, which a grant transaction reads as the previous holding", async () => {
      const w = fresh();
      const theirs = w.theirs();
      await lands(theirs);
      const mine = w.mine();
      await send([dropOwnRecordOp(mine)]);
      assert.equal((await stored(mine))?.value.toString(), theirs.stored);
      const outcome = await lands(mine);
      assert.equal(outcome.recordVersion, undefined);
      assert.match(outcome.previousRecord?.value ?? "", /"m":"h"/);
    });

    it("a later send finding an earlier send's record puts its own: the grant is not its own takeover", async () => {
      const w = fresh();
      const [first, later] = [w.mine(), w.mine()];
      await lands(first);
      const outcome = await lands(later);
      assert.equal(outcome.previousRecord, undefined);
      const kv = (await stored(later))!;
      assert.equal(kv.value.toString(), later.stored);
      assert.equal(outcome.recordVersion, BigInt(kv.mod_revision));
    });

    it("an earlier send landing after a later one leaves the later one's record, at its version", async () => {
      const w = fresh();
      const [first, later] = [w.mine(), w.mine()];
      const outcome = await lands(later);
      await lands(first);
      const kv = (await stored(later))!;
      assert.equal(kv.value.toString(), later.stored);
      assert.equal(BigInt(kv.mod_revision), outcome.recordVersion);
    });

    it("the held-already read knows its attempt's record by its tag, and takes its revision as the token", async () => {
      const w = fresh();
      const landed = w.mine();
      await lands(landed);
      const version = BigInt((await stored(landed))!.mod_revision);
      // Read by a later write of the attempt, as the held-already path reads it.
      const found = recordFound(w.mine(), await send(readRecordOps(landed)));
      assert.deepEqual(
        { recordVersion: found.recordVersion, token: found.token, previous: found.previousRecord },
        { recordVersion: version, token: version, previous: undefined },
      );
      const other = fresh();
      await lands(other.theirs());
      const theirs = recordFound(other.mine(), await send(readRecordOps(other.mine())));
      assert.equal(theirs.recordVersion, undefined);
      assert.equal(theirs.token, undefined);
      assert.match(theirs.previousRecord?.value ?? "", /"m":"h"/);
    });

    it("a tagged record reads as the core's record: the tag dropped, the token its revision", async () => {
      const w = fresh();
      const write = w.mine();
      await lands(write);
      const kv = (await stored(write))!;
      const read = JSON.parse(readRecordValue(kv.value.toString(), BigInt(kv.mod_revision)));
      assert.deepEqual(Object.keys(read), ["m", "s", "f", "d", "t", "at"]);
      assert.equal(read.t, kv.mod_revision);
    });
  });
});
