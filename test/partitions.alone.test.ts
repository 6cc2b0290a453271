/**
 * Real network splits between hosts (network namespaces, test/harness/hosts.ts), short
 * enough for CI: the etcd leader cut off with one client host. The longer runs (symmetric
 * splits, flapping, splits during upgrades; other backends) are behind `npm run chaos`
 * (`--backend etcd-hosts` etc.) and in test/partitions/*. Skipped, with the reason, where
 * namespaces cannot be created (no root).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { backendNamed } from "./chaos/backends.js";
import { check } from "./chaos/checker.js";
import { runChaos } from "./chaos/runner.js";
import { startHostedEtcd } from "./harness/etcd-hosts.js";
import { hostsUnavailable, startHosts } from "./harness/hosts.js";
import { startPostgres } from "./harness/postgres.js";
import { startHostedZooKeeperEnsemble } from "./harness/zookeeper.js";
import { assertMinoritySplit, describeSplit, minoritySplit, SCENARIO_HOSTS } from "./fixtures/minority-split.js";

const skip = hostsUnavailable() ?? false;
const TTL_MS = 2000;

test("etcd: the leader cut off with a client: its signal aborts before the majority grants, none granted on its side, its late write refused", {
  skip,
}, async (t) => {
  const hosts = await startHosts(["e1", "e2", "e3", ...SCENARIO_HOSTS]);
  try {
    const cluster = await startHostedEtcd(hosts, ["e1", "e2", "e3"]);
    const leader = await cluster.leader();
    const r = await minoritySplit({
      hosts,
      url: cluster.url,
      ttlMs: TTL_MS,
      split: () => hosts.split([leader.name, "cmin"]),
    });
    t.diagnostic(`leader ${leader.name} + cmin cut off: ${describeSplit(r)}`);
    assertMinoritySplit(r);
  } finally {
    await hosts.close();
  }
});

test("etcd on hosts: a 16 s chaos run of partitions (leader with a client, then a symmetric split) passes the checker", {
  skip,
}, async (t) => {
  const backend = backendNamed("etcd-hosts");
  // ttl 1 s: two partitions, each long enough for the majority to take over, fit in 16 s.
  const history = await runChaos({ backend, seconds: 16, clients: 4, nemeses: ["partition"], seed: 19, ttlMs: 1000 });
  const report = check(history);
  t.diagnostic(report.verdict);
  t.diagnostic(JSON.stringify(report.faults.partition));
  assert.ok(report.ok, `${report.verdict}\n${report.violations.slice(0, 5).join("\n")}`);
  const details = new Set(history.faults.map((f) => f.detail));
  assert.ok(details.size >= 2, `only ${details.size} partitions: ${[...details].join("; ")}`);
  assert.ok(
    history.faults.some((f) => f.minority === true),
    "some client was cut off from the quorum",
  );
  assert.equal(report.faults.partition?.minorityGrants ?? 0, 0);
});

test("postgres: a client host cut off from the server: its signal aborts before the server frees its lock, its late write refused", {
  skip,
}, async (t) => {
  const hosts = await startHosts(["db", ...SCENARIO_HOSTS]);
  try {
    const server = await startPostgres({ host: hosts.host("db") });
    try {
      const r = await minoritySplit({ hosts, url: server.url, ttlMs: TTL_MS, split: () => hosts.isolate("cmin") });
      t.diagnostic(`cmin cut off from db: ${describeSplit(r)}`);
      assertMinoritySplit(r);
    } finally {
      await server.stop();
    }
  } finally {
    await hosts.close();
  }
});

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
