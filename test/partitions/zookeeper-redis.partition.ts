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

/**
 * Redis is not partition-safe (docs/backends/redis.md), and this test asserts what that
 * means, not more: the cut-off primary goes on serving its side (the prober on `cmin` is
 * granted a lock, the holder keeps renewing and its signal does not abort during the split)
 * while the majority's sentinels promote the replica, on which the holder's session expires
 * and the taker is granted with a higher token. The heal ends the split brain: once the
 * sentinels turn the old primary into a replica of the new one (its data replaced), the
 * holder's signal aborts and its release reports the loss. Only the token protected the
 * resource meanwhile: the holder's late write is refused.
 */
test("redis + sentinel: the primary cut off with a client: its side still grants, the majority fails over and grants with a higher token, the holder's signal aborts after the heal, its late write refused", {
  skip,
}, async (t) => {
  const hosts = await startHosts(["r1", "r2", "r3", ...SCENARIO_HOSTS]);
  try {
    const sentinel = await startHostedSentinel(hosts, { primary: "r1", replica: "r2", sentinels: ["r1", "r2", "r3"] });
    try {
      let failoverMs = Number.NaN;
      const r = await minoritySplit({
        hosts,
        url: sentinel.url,
        ttlMs: TTL_MS,
        split: () => hosts.split(["r1", "cmin"]),
        grantTimeoutMs: 15_000,
        afterHeal: async () => {
          const healed = performance.now();
          await sentinel.failedOver("r2", 20_000);
          failoverMs = performance.now() - healed;
        },
      });
      t.diagnostic(
        `r1 (primary) + cmin cut off: grant to cmaj after ${Math.round(r.grantMs)} ms; minority acquire: ${r.minorityOutcome}; ` +
          `old primary demoted ${Math.round(failoverMs)} ms after the heal; holder's signal ${Math.round(r.lossAfterHealMs)} ms after the heal`,
      );
      assert.equal(r.minorityOutcome, "granted", "the old primary still grants on its side (not partition-safe)");
      assert.ok(
        Number.isNaN(r.lossMs),
        `the holder renewed on the old primary: no signal during the split (${r.lossMs})`,
      );
      assert.ok(r.takerToken > r.holderToken, `tokens ${r.holderToken} then ${r.takerToken}`);
      assert.equal(r.takerWrite, 200);
      assert.deepEqual(r.lateWrite, { status: 409, body: String(r.takerToken) });
      assert.ok(r.lossAfterHealMs >= 0, `the holder's signal aborted after the heal (${r.lossAfterHealMs} ms)`);
      assert.match(r.holderRelease, /lost/);
      assert.equal(await sentinel.primaryHost(), "r2");
    } finally {
      await sentinel.stop();
    }
  } finally {
    await hosts.close();
  }
});
