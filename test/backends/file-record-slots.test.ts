/**
 * The file backend's takeover records in fixed binary slots (record-slots.ts): the slot
 * path, the overflow for records too large or buckets too full, the lock-free release, and
 * a killed holder's records (one in a slot, one in the overflow) handed to the next holder.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, describe, it } from "node:test";
import { connect } from "../../src/index.js";
import { hash53 } from "../../src/core/hash.js";
import { TAKEOVER_SPACE } from "../../src/core/takeover.js";
import { FILES, openDirectory, openFile } from "../../src/backends/file/directory.js";
import { BUCKETS, SLOTS, takeoverRecords } from "../../src/backends/file/record-slots.js";
import { Puppet } from "../fixtures/puppets.js";

const dir = mkdtempSync(join(tmpdir(), "baton-file-record-slots-"));
const url = pathToFileURL(dir).href;
after(() => rmSync(dir, { recursive: true, force: true }));

const SEP = "\u0000";
let nextNamespace = 0;

function store() {
  const namespace = `slots-${++nextNamespace}`;
  const directory = openDirectory(dir, false);
  // The fencing-token counter's file, whose mutex the records are written under.
  const records = takeoverRecords(directory, namespace, TAKEOVER_SPACE, openFile(directory, FILES.tokens));
  return { namespace, records };
}

/** `count` keys that hash to one bucket of `namespace` (so they share its slots). */
function sameBucket(namespace: string, count: number): string[] {
  const byBucket = new Map<number, string[]>();
  for (let i = 0; ; i++) {
    const key = `k${i}`;
    const bucket = hash53(`${namespace}${SEP}${TAKEOVER_SPACE}${SEP}${key}`) % BUCKETS;
    const keys = byBucket.get(bucket) ?? [];
    keys.push(key);
    byBucket.set(bucket, keys);
    if (keys.length === count) return keys;
  }
}

const put = (records: ReturnType<typeof store>["records"], key: string, value: string) =>
  records.put(TAKEOVER_SPACE, key, value, { ifVersion: 0n, fence: 1n });

describe("file takeover records in fixed slots", () => {
  it("keeps a small record in a slot (odd version) and a large one in the overflow (even version)", async () => {
    const { records } = store();
    try {
      const small = await put(records, "small", '{"f":1}');
      const large = await put(records, "large", JSON.stringify({ f: "x".repeat(2000) }));
      assert.ok(small.ok && large.ok);
      assert.equal(small.version % 2n, 1n, "in a slot");
      assert.equal(large.version % 2n, 0n, "in the overflow");
      assert.equal((await records.get(TAKEOVER_SPACE, "small"))?.value, '{"f":1}');
      assert.equal((await records.get(TAKEOVER_SPACE, "large"))?.value?.length, 2008);
      assert.deepEqual(
        (await records.list(TAKEOVER_SPACE)).map((e) => [e.key, e.version]),
        [
          ["large", large.version],
          ["small", small.version],
        ],
      );
      // A record whose replacement does not fit moves to the overflow; the slot's copy goes.
      const grown = await records.put(TAKEOVER_SPACE, "small", JSON.stringify({ f: "y".repeat(600) }), {
        ifVersion: small.version,
      });
      assert.ok(grown.ok && grown.version % 2n === 0n);
      assert.equal((await records.list(TAKEOVER_SPACE)).filter((e) => e.key === "small").length, 1);
      assert.ok(records.releaseNow("small", grown.version));
      assert.ok(records.releaseNow("large", large.version));
      assert.deepEqual(await records.list(TAKEOVER_SPACE), []);
    } finally {
      records.close();
    }
  });

  it("a full bucket sends the next record to the overflow; every key keeps its own record", async () => {
    const { namespace, records } = store();
    try {
      const keys = sameBucket(namespace, SLOTS + 2);
      const versions = new Map<string, bigint>();
      for (const key of keys) {
        const written = await put(records, key, JSON.stringify({ key }));
        assert.ok(written.ok);
        versions.set(key, written.version);
      }
      const parity = [...versions.values()].map((v) => Number(v % 2n));
      assert.deepEqual(parity, [...Array(SLOTS).fill(1), 0, 0], "slots first, then the overflow");
      for (const key of keys) assert.equal((await records.get(TAKEOVER_SPACE, key))?.value, JSON.stringify({ key }));
      // A second write of a key is refused at its old version and a new version is unique.
      const [first] = keys as [string];
      assert.deepEqual(await put(records, first, "{}"), {
        ok: false,
        reason: "conflict",
        current: await records.get(TAKEOVER_SPACE, first),
      });
      // The lock-free release of one slot frees that record only.
      assert.ok(records.releaseNow(first, versions.get(first) as bigint));
      assert.equal(await records.get(TAKEOVER_SPACE, first), null);
      for (const key of keys.slice(1))
        assert.equal((await records.get(TAKEOVER_SPACE, key))?.value, JSON.stringify({ key }));
      // Its slot is taken by the next new record, at a version its earlier use never had.
      const again = await put(records, first, '{"again":1}');
      assert.ok(again.ok && again.version % 2n === 1n && again.version !== versions.get(first));
      assert.equal((await records.list(TAKEOVER_SPACE)).length, keys.length);
      // A release at a version that is no longer the key's (a late unclaim) deletes nothing.
      const last = keys.at(-1) as string;
      assert.deepEqual(
        (await records.delete(TAKEOVER_SPACE, last, { ifVersion: (versions.get(last) as bigint) + 2n })).ok,
        false,
      );
      assert.ok(records.releaseNow(last, versions.get(last) as bigint));
      assert.equal(await records.get(TAKEOVER_SPACE, last), null);
    } finally {
      records.close();
    }
  });

  it("a killed holder's records, one in a slot and one in the overflow, go to the next holder", async () => {
    const small = { pid: 41 };
    const large = { pid: 42, note: "z".repeat(1500) };
    const puppet = new Puppet(url);
    await using coord = await connect(url);
    try {
      await puppet.ready;
      const a = await puppet.do("acquire", { name: "slot-small", fenceInfo: small });
      const b = await puppet.do("acquire", { name: "slot-large", fenceInfo: large });
      assert.ok(a.ok && b.ok, JSON.stringify([a, b]));
      const exited = new Promise((resolve) => puppet.child.once("exit", resolve));
      puppet.kill();
      await exited;
      for (const [name, fenceInfo, held] of [
        ["slot-small", small, a],
        ["slot-large", large, b],
      ] as const) {
        const handle = await coord.lock(name).acquire({ timeoutMs: 10_000 });
        assert.deepEqual(handle.takeover?.fenceInfo, fenceInfo);
        assert.equal(handle.takeover?.token, BigInt(held.token as string));
        assert.ok(handle.token > BigInt(held.token as string));
        await handle.release();
        // Released cleanly: nothing is handed on.
        const next = await coord.lock(name).acquire({ timeoutMs: 10_000 });
        assert.equal(next.takeover, null);
        await next.release();
      }
      assert.deepEqual((await coord.inspect()).takeovers ?? [], []);
    } finally {
      puppet.kill();
    }
  });
});
