/**
 * Network splits on ZooKeeper and Redis Sentinel (hosts.ts), the same scenario as the CI's
 * etcd and PostgreSQL ones (test/partitions.alone.test.ts). Not in CI (a JVM ensemble, a
 * Sentinel failover): `npm run chaos -- --partitions` runs this file.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { assertMinoritySplit, describeSplit, minoritySplit, SCENARIO_HOSTS } from "../fixtures/minority-split.js";
import { hostsUnavailable, startHosts } from "../harness/hosts.js";
import { startHostedSentinel } from "../harness/redis-hosts.js";
import { startHostedZooKeeperEnsemble } from "../harness/zookeeper.js";

const skip = hostsUnavailable() ?? false;
const TTL_MS = 2000;
/**
 * Found by this test (2026-12-01): with the primary's host cut off (silent, not closed), a
 * client on the majority side never follows the failover the majority's sentinels made: its
 * acquisitions fail with "Redis did not answer within 5000 ms" for as long as the split lasts.
 */
const REDIS_TODO = "clients do not follow a Sentinel failover while the old primary is silent (see REDIS_TODO)";

test("zookeeper: the leader cut off with a client: its signal aborts before the majority grants, none granted on its side, its late write refused", {
  skip,
}, async (t) => {
  const on = ["z1", "z2", "z3"];
  const hosts = await startHosts([...on, ...SCENARIO_HOSTS]);
  try {
    const ensemble = await startHostedZooKeeperEnsemble(hosts, on);
    try {
      const leader = on[(await ensemble.leader()).id - 1] as string;
      const r = await minoritySplit({
        hosts,
        url: ensemble.url,
        ttlMs: TTL_MS,
        split: () => hosts.split([leader, "cmin"]),
      });
      t.diagnostic(`leader ${leader} + cmin cut off: ${describeSplit(r)}`);
      assertMinoritySplit(r);
    } finally {
      await ensemble.stop();
    }
  } finally {
    await hosts.close();
  }
});

test("redis + sentinel: the primary cut off with a client: the majority fails over and grants with a higher token, the late write is refused", {
  skip,
  todo: REDIS_TODO,
}, async (t) => {
  const hosts = await startHosts(["r1", "r2", "r3", ...SCENARIO_HOSTS]);
  try {
    const sentinel = await startHostedSentinel(hosts, { primary: "r1", replica: "r2", sentinels: ["r1", "r2", "r3"] });
    try {
      const r = await minoritySplit({
        hosts,
        url: sentinel.url,
        ttlMs: TTL_MS,
        split: () => hosts.split(["r1", "cmin"]),
        grantTimeoutMs: 15_000,
      });
      const primary = await sentinel.primaryHost();
      // Not partition-safe (docs/backends/redis.md): the old primary goes on granting on its
      // side and its holder keeps its lock until the heal; only fencing protects the resource.
      t.diagnostic(
        `r1 (primary) + cmin cut off: ${describeSplit(r)}; minority acquire: ${r.minorityOutcome}; primary after the heal: ${primary}`,
      );
      assert.equal(primary, "r2", "the majority's sentinels promoted the replica");
      assert.ok(r.takerToken > r.holderToken, `tokens ${r.holderToken} then ${r.takerToken}`);
      assert.equal(r.takerWrite, 200);
      assert.deepEqual(r.lateWrite, { status: 409, body: String(r.takerToken) });
    } finally {
      await sentinel.stop();
    }
  } finally {
    await hosts.close();
  }
});
