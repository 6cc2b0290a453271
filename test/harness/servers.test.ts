/**
 * Exercises the real-server harness itself: etcd (single + cluster),
 * PostgreSQL and the fault-injecting TCP proxy. Needs the binaries from
 * `bash scripts/ensure-servers.sh etcd postgres`.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { Etcd3 } from "etcd3";
import pg from "pg";
import { startEtcd, startEtcdCluster } from "./etcd.js";
import { freePort } from "./ports.js";
import { startPostgres } from "./postgres.js";
import { startProxy } from "./proxy.js";
import { raceTimeout } from "./proc.js";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still "exists" for kill(0); treat it as dead.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, Math.round(performance.now() - t0)];
}

async function pgClient(connectionString: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 10_000 });
  client.on("error", () => {}); // errors surface through the promises below
  await client.connect();
  return client;
}

test("freePort hands out distinct ports", async () => {
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
  assert.equal(new Set(ports).size, ports.length);
  for (const p of ports) assert.ok(p > 0 && p < 65536);
});

test("single etcd: put/get, restart, stop cleans up", async (t) => {
  const [etcd, ms] = await timed(() => startEtcd({ name: "single" }));
  t.after(() => etcd.stop());
  t.diagnostic(`single etcd ready in ${ms} ms (${etcd.url})`);

  assert.match(etcd.url, /^etcd:\/\/127\.0\.0\.1:\d+$/);
  assert.deepEqual(etcd.endpoints, [etcd.url.slice("etcd://".length)]);

  const client = new Etcd3({ hosts: etcd.endpoints });
  t.after(() => client.close());
  await client.put("baton/harness").value("hello");
  assert.equal(await client.get("baton/harness").string(), "hello");

  // pause(): requests hang (no error) until resume().
  etcd.pause();
  const paused = client.get("baton/harness").string();
  assert.equal(await raceTimeout(paused, 300), true, "paused etcd must not answer");
  etcd.resume();
  assert.equal(await paused, "hello");

  const oldPid = etcd.pid;
  await etcd.restart();
  assert.notEqual(etcd.pid, oldPid);
  assert.equal(isAlive(oldPid), false);
  const client2 = new Etcd3({ hosts: etcd.endpoints });
  t.after(() => client2.close());
  assert.equal(await client2.get("baton/harness").string(), "hello", "data survives restart");

  const { pid, dataDir } = etcd;
  await etcd.stop();
  assert.equal(isAlive(pid), false);
  assert.equal(fs.existsSync(dataDir), false);
});

test("etcd cluster: leader stop keeps quorum, member restarts", async (t) => {
  const [cluster, ms] = await timed(() => startEtcdCluster(3));
  t.after(() => cluster.stop());
  t.diagnostic(`3-node etcd cluster ready in ${ms} ms (${cluster.url})`);

  assert.equal(cluster.members.length, 3);
  assert.equal(cluster.url, `etcd://${cluster.endpoints.join(",")}`);

  const client = new Etcd3({ hosts: cluster.endpoints });
  t.after(() => client.close());
  await client.put("k").value("before");

  const leader = await cluster.leader();
  const followers = await cluster.followers();
  assert.equal(followers.length, 2);
  assert.ok(!followers.includes(leader));

  const leaderPid = leader.pid;
  await leader.stop();
  assert.equal(leader.running, false);
  assert.equal(isAlive(leaderPid), false);

  await client.put("k").value("after");
  assert.equal(await client.get("k").string(), "after");
  const newLeader = await cluster.leader();
  assert.notEqual(newLeader, leader);

  await leader.start(); // same data dir, --initial-cluster-state existing
  assert.equal(leader.running, true);
  assert.notEqual(leader.pid, leaderPid);
  // A linearizable read served through the restarted member sees the write
  // made while it was down.
  const direct = new Etcd3({ hosts: [leader.clientEndpoint] });
  t.after(() => direct.close());
  assert.equal(await direct.get("k").string(), "after");

  // SIGKILL a follower: the cluster still has quorum.
  const [follower] = await cluster.followers();
  assert.ok(follower);
  await follower.kill();
  await client.put("k").value("after-kill");
  assert.equal(await client.get("k").string(), "after-kill");
  await follower.start();

  const pids = cluster.members.map((m) => m.pid);
  const dirs = cluster.members.map((m) => m.dataDir);
  await cluster.stop();
  for (const pid of pids) assert.equal(isAlive(pid), false);
  for (const dir of dirs) assert.equal(fs.existsSync(dir), false);
});

test("postgres: query, restart, kill + crash recovery, stop cleans up", async (t) => {
  const [server, ms] = await timed(() => startPostgres());
  t.after(() => server.stop());
  t.diagnostic(`postgres ready in ${ms} ms (${server.url})`);
  assert.equal(server.url, `postgres://postgres@127.0.0.1:${server.port}/baton`);

  let client = await pgClient(server.url);
  await client.query("CREATE TABLE t (v int)");
  await client.query("INSERT INTO t VALUES (42)");
  const { rows } = await client.query<{ db: string; max: number }>(
    "SELECT current_database() AS db, current_setting('max_connections')::int AS max",
  );
  assert.deepEqual(rows, [{ db: "baton", max: 200 }]);
  await client.end();

  const pid1 = server.pid;
  const [, restartMs] = await timed(() => server.restart());
  t.diagnostic(`postgres restart in ${restartMs} ms`);
  assert.notEqual(server.pid, pid1);
  assert.equal(isAlive(pid1), false);
  client = await pgClient(server.url);
  assert.deepEqual((await client.query("SELECT v FROM t")).rows, [{ v: 42 }]);

  // kill() takes the backends down too: the open connection breaks.
  const pid2 = server.pid;
  const broken = client.query("SELECT pg_sleep(30)").then(
    () => "answered",
    () => "failed",
  );
  await server.kill();
  assert.equal(await broken, "failed");
  assert.equal(isAlive(pid2), false);
  await client.end().catch(() => {});

  const [, recoverMs] = await timed(() => server.restart());
  t.diagnostic(`postgres restart after SIGKILL in ${recoverMs} ms`);
  client = await pgClient(server.url);
  assert.deepEqual((await client.query("SELECT v FROM t")).rows, [{ v: 42 }]);
  await client.end();

  const { dataDir } = server;
  const pid3 = server.pid;
  await server.stop();
  assert.equal(isAlive(pid3), false);
  assert.equal(fs.existsSync(dataDir), false);
});

test("proxy: forwards, cut blackholes, heal and reset", async (t) => {
  const server = await startPostgres();
  t.after(() => server.stop());
  const proxy = await startProxy({ host: server.host, port: server.port });
  t.after(() => proxy.close());
  assert.equal(proxy.address, `127.0.0.1:${proxy.port}`);
  const viaProxy = `postgres://postgres@${proxy.address}/baton`;

  // Forwarding works.
  const c1 = await pgClient(viaProxy);
  assert.deepEqual((await c1.query("SELECT 1 AS one")).rows, [{ one: 1 }]);

  // cut(): the open connection goes silent, no error, no answer.
  proxy.cut();
  let c1Error: unknown;
  c1.on("error", (err) => {
    c1Error = err;
  });
  const hung = c1.query("SELECT 2 AS two").then(
    () => "answered" as const,
    (err: Error) => err,
  );
  assert.equal(await raceTimeout(hung, 500), true, "query must not be answered while cut");
  assert.equal(c1Error, undefined, "no FIN/RST while cut");

  // New connections are accepted but never get the server's handshake.
  const c2 = new pg.Client({ connectionString: viaProxy });
  c2.on("error", () => {});
  const connecting = c2.connect().then(
    () => "connected" as const,
    (err: Error) => err,
  );
  assert.equal(await raceTimeout(connecting, 500), true, "connect must hang while cut");
  assert.equal(proxy.connectionCount, 2);

  // heal(): blackholed connections are destroyed; new ones work.
  proxy.heal();
  assert.ok((await hung) instanceof Error, "hung query fails once healed");
  assert.ok((await connecting) instanceof Error, "hung connect fails once healed");
  const c3 = await pgClient(viaProxy);
  assert.deepEqual((await c3.query("SELECT 3 AS three")).rows, [{ three: 3 }]);

  // heal({ resumeExisting: true }): a cut connection resumes where it was.
  proxy.cut();
  const delayed = c3.query("SELECT 4 AS four");
  assert.equal(await raceTimeout(delayed, 300), true);
  proxy.heal({ resumeExisting: true });
  assert.deepEqual((await delayed).rows, [{ four: 4 }]);

  // reset(): RST on every connection.
  const pending = c3.query("SELECT pg_sleep(30)").then(
    () => "answered" as const,
    (err: Error & { code?: string }) => err,
  );
  proxy.reset();
  const err = await pending;
  assert.ok(err instanceof Error);
  assert.equal(proxy.connectionCount, 0);

  const c4 = await pgClient(viaProxy);
  assert.deepEqual((await c4.query("SELECT 5 AS five")).rows, [{ five: 5 }]);
  await c4.end();
  await proxy.close();
});
