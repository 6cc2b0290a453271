/**
 * Real network splits between hosts (network namespaces, test/harness/hosts.ts), short
 * enough for CI: the etcd leader cut off with one client host, a 20 s chaos run of
 * partitions on etcd, and a client host cut off from PostgreSQL. The longer runs (flapping,
 * splits during upgrades, every backend) are behind `npm run chaos -- --backend etcd-hosts`
 * (or postgres-hosts), and ZooKeeper and Redis Sentinel splits behind
 * `npm run chaos -- --partitions` (test/partitions/). Skipped, with the reason, where
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

test("etcd on hosts: a 20 s chaos run of partitions (leader with a client, then a symmetric split) passes the checker", {
  skip,
}, async (t) => {
  const backend = backendNamed("etcd-hosts");
  // Two partitions, each long enough for the majority to take over (ttl 2 s), fit in 20 s;
  // on a loaded machine (one CI run fit only one) the run goes on until the second is done.
  const history = await runChaos({ backend, seconds: 20, clients: 4, nemeses: ["partition"], seed: 19, minFaults: 2 });
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
