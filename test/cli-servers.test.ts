/**
 * `baton lock` / `elect` / `status` against real etcd, PostgreSQL, Redis, ZooKeeper and MariaDB servers, including a
 * lock lost while the command runs (exit 76, SIGTERM then SIGKILL), and on ZooKeeper a session expired by the server
 * behind a silent TCP cut.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import pg from "pg";
import { observed, waitFor } from "./conformance/helpers.js";
import { connect } from "../src/index.js";
import { baton, start } from "./fixtures/cli.js";
import { killBatonWhileItsCommandRuns, running, waitQueued } from "./fixtures/killed-baton.js";
import { type EtcdServer, startEtcd } from "./harness/etcd.js";
import { type MariadbServer, startMariadb } from "./harness/mariadb.js";
import { type PgServer, startPostgres } from "./harness/postgres.js";
import { startProxy } from "./harness/proxy.js";
import { type RedisServer, rawCommand, startRedis } from "./harness/redis.js";
import { startZooKeeper, type ZooKeeperServer } from "./harness/zookeeper.js";

interface Target {
  name: string;
  url: () => string;
  /** The server's address, for a proxy in front of it. */
  address: () => { host: string; port: number };
  /** The URL through a proxy listening on `port`. */
  viaProxy: (port: number) => string;
  /** Makes the backend drop the session holding locks in `namespace`. */
  cut: (namespace: string) => Promise<void>;
}

let etcd: EtcdServer | undefined;
let postgres: PgServer | undefined;
let redis: RedisServer | undefined;
let zookeeper: ZooKeeperServer | undefined;
let mariadb: MariadbServer | undefined;

const targets: Target[] = [
  {
    name: "etcd",
    url: () => etcd!.url,
    address: () => {
      const [host, port] = etcd!.endpoints[0]!.split(":");
      return { host: host!, port: Number(port) };
    },
    viaProxy: (port) => `etcd://127.0.0.1:${port}`,
    cut: async () => {
      // Revoke every lease: the holder's next keep-alive learns its session is gone.
      const client = new Etcd3({ hosts: etcd!.endpoints });
      try {
        const { leases } = await client.leaseClient.leaseLeases({});
        for (const lease of leases) await client.leaseClient.leaseRevoke({ ID: lease.ID });
      } finally {
        client.close();
      }
    },
  },
  {
    name: "postgres",
    url: () => postgres!.url,
    address: () => ({ host: postgres!.host, port: postgres!.port }),
    viaProxy: (port) => postgres!.url.replace(`:${postgres!.port}/`, `:${port}/`),
    cut: async () => {
      // Terminate the connections holding advisory locks, as an operator (or a failover) would.
      const client = new pg.Client({ connectionString: postgres!.url });
      await client.connect();
      try {
        await client.query(
          "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
        );
      } finally {
        await client.end();
      }
    },
  },
  {
    name: "redis",
    url: () => redis!.url,
    address: () => ({ host: "127.0.0.1", port: redis!.port }),
    viaProxy: (port) => `redis://127.0.0.1:${port}`,
    cut: async () => {
      // Drop everything, as a restart without persistence would: the session keys go.
      assert.match(await rawCommand(redis!.port, "FLUSHALL"), /^\+OK/);
    },
  },
  {
    name: "zookeeper",
    url: () => zookeeper!.url,
    address: () => {
      const [host, port] = zookeeper!.address.split(":");
      return { host: host!, port: Number(port) };
    },
    viaProxy: (port) => `zookeeper://127.0.0.1:${port}`,
    cut: async (namespace) => {
      // Delete the holders' nodes, as an operator would; a holder watches its own node.
      const { default: zk } = (await import("node-zookeeper-client" as string)) as { default: RawZk };
      const client = zk.createClient(zookeeper!.address);
      await new Promise<void>((resolve) => {
        client.once("connected", () => resolve());
        client.connect();
      });
      const call = <T>(f: (cb: (error: unknown, value: T) => void) => void) =>
        new Promise<T>((resolve, reject) => f((error, value) => (error ? reject(error) : resolve(value))));
      try {
        const locks = `/baton/${namespace}/q/lock`;
        for (const name of await call<string[]>((cb) => client.getChildren(locks, cb))) {
          for (const node of await call<string[]>((cb) => client.getChildren(`${locks}/${name}`, cb))) {
            await call((cb) => client.remove(`${locks}/${name}/${node}`, cb));
          }
        }
      } finally {
        client.close();
      }
    },
  },
  {
    name: "mysql",
    url: () => mariadb!.url,
    address: () => ({ host: mariadb!.host, port: mariadb!.port }),
    viaProxy: (port) => mariadb!.url.replace(`:${mariadb!.port}/`, `:${port}/`),
    cut: async (namespace) => {
      // Kill the connections holding the namespace's locks, as an operator (or a failover) would.
      const rows = await mariadb!.query<{ conn: string | number }>(
        `SELECT DISTINCT e.conn FROM baton.baton_entries e JOIN baton.baton_queues q ON q.qid = e.qid
         WHERE q.namespace = ? AND IS_USED_LOCK(e.lock_key) = e.conn`,
        [namespace],
      );
      for (const row of rows) await mariadb!.query(`KILL CONNECTION ${Number(row.conn)}`);
    },
  },
];

interface RawZk {
  createClient(address: string): {
    connect(): void;
    close(): void;
    once(event: string, listener: () => void): void;
    getChildren(path: string, cb: (error: unknown, children: string[]) => void): void;
    remove(path: string, cb: (error: unknown, value?: unknown) => void): void;
  };
}

describe("baton CLI against servers", () => {
  before(async () => {
    [etcd, postgres, redis, zookeeper, mariadb] = await Promise.all([
      startEtcd(),
      startPostgres(),
      startRedis(),
      startZooKeeper(),
      startMariadb(),
    ]);
  });
  after(async () => {
    await Promise.all([etcd?.stop(), postgres?.stop(), redis?.stop(), zookeeper?.stop(), mariadb?.stop()]);
  });

  for (const target of targets) {
    describe(target.name, () => {
      const env = () => ({ ...process.env, BATON_URL: target.url() });

      it("runs a command under a lock with a fencing token, and shows it in status", async () => {
        const ns = `cli-${randomUUID().slice(0, 8)}`;
        const url = `${target.url()}${target.url().includes("?") ? "&" : "?"}namespace=${ns}`;
        const first = await baton(
          ["lock", "job", "--url", url, "--", "sh", "-c", 'echo "$BATON_FENCING_TOKEN"'],
          env(),
        );
        assert.equal(first.status, 0, first.stderr);
        assert.match(first.stdout.trim(), /^\d+$/);
        const holder = start(["lock", "job", "--url", url, "--", "sh", "-c", "echo in; exec sleep 30"], env());
        await waitFor(() => holder.out().includes("in"), "the holder to run");
        const busy = await baton(["lock", "job", "--url", url, "--no-wait", "--", "true"], env());
        assert.equal(busy.status, 75);
        const status = await baton(["status", "--json", "--url", url], env());
        assert.equal(status.status, 0, status.stderr);
        const parsed = JSON.parse(status.stdout) as {
          backend: string;
          locks: { name: string; holders: { token: string }[] }[];
        };
        assert.equal(parsed.backend, target.name);
        const job = parsed.locks.find((l) => l.name === "job");
        assert.ok(BigInt(job!.holders[0]!.token) > BigInt(first.stdout.trim()));
        holder.child.kill("SIGTERM");
        await holder.exit;
      });

      it("runs an elected command only while leading", async () => {
        const url = `${target.url()}${target.url().includes("?") ? "&" : "?"}namespace=cli-e-${randomUUID().slice(0, 8)}`;
        const a = start(
          ["elect", "cron", "--url", url, "--value", "a", "--", "sh", "-c", "echo lead-a; exec sleep 30"],
          env(),
        );
        await waitFor(() => a.out().includes("lead-a"), "a to lead");
        const b = start(
          ["elect", "cron", "--url", url, "--value", "b", "--", "sh", "-c", "echo lead-b; exec sleep 30"],
          env(),
        );
        await waitFor(async () => {
          const s = JSON.parse((await baton(["status", "--json", "--url", url], env())).stdout) as {
            elections: { id: string; candidates: unknown[] }[];
          };
          return s.elections.some((e) => e.id === "cron" && e.candidates.length === 1);
        }, "b to campaign");
        assert.ok(!b.out().includes("lead-b"));
        a.child.kill("SIGTERM");
        await a.exit;
        await waitFor(() => b.out().includes("lead-b"), "b to lead");
        b.child.kill("SIGTERM");
        await b.exit;
      });

      for (const [kind, extra] of [
        ["lock", []],
        ["semaphore", ["--limit", "1"]],
        ["elect", []],
      ] as const) {
        it(`${kind}: a SIGKILLed baton takes its command and the command's children with it`, async () => {
          const url = `${target.url()}${target.url().includes("?") ? "&" : "?"}namespace=cli-k-${randomUUID().slice(0, 8)}`;
          const me = await connect(url);
          try {
            await killBatonWhileItsCommandRuns(kind, "orphan", ["--url", url, "--ttl", "2s", ...extra], env(), () =>
              waitQueued(me, kind, "orphan"),
            );
          } finally {
            await me.close();
          }
        });
      }

      // On etcd the lease runs out a TTL after baton's death whatever the watchdog does; on
      // PostgreSQL the connection is the lock, and the watchdog keeps it open.
      if (target.name === "postgres") {
        it("keeps the lock until the watchdog has killed the command (watchdog stalled)", async () => {
          const url = `${target.url()}${target.url().includes("?") ? "&" : "?"}namespace=cli-s-${randomUUID().slice(0, 8)}`;
          const me = await connect(url);
          try {
            await killBatonWhileItsCommandRuns(
              "lock",
              "stalled",
              ["--url", url, "--ttl", "2s"],
              env(),
              () => waitQueued(me, "lock", "stalled"),
              true,
            );
          } finally {
            await me.close();
          }
        });
      }

      it("exits within about a second when its command ended and the release cannot be confirmed", async () => {
        const proxy = await startProxy(target.address());
        const flag = join(tmpdir(), `baton-done-${randomUUID()}`);
        try {
          const url = `${target.viaProxy(proxy.port)}${target.url().includes("?") ? "&" : "?"}namespace=cli-c-${randomUUID().slice(0, 8)}`;
          const script = 'echo ready; while [ ! -e "$FLAG" ]; do sleep 0.02; done';
          const run = start(["lock", "cut", "--url", url, "--ttl", "20s", "--", "sh", "-c", script], {
            ...env(),
            FLAG: flag,
          });
          await waitFor(() => run.out().includes("ready"), "the command to start");
          proxy.cut();
          writeFileSync(flag, "");
          const ended = Date.now();
          assert.equal(await run.exit, 0, run.out());
          const took = Date.now() - ended;
          // Unbounded, baton waits on the silent connection for the 20 s TTL or longer.
          assert.ok(took < 3000, `baton took ${took} ms to exit after its command ended`);
          assert.match(run.out(), /the release of lock "cut" was not confirmed/);
        } finally {
          rmSync(flag, { force: true });
          await proxy.close();
        }
      });

      it("exits 76 after SIGTERM then SIGKILL when the lock is lost while the command runs", async () => {
        const ns = `cli-lost-${randomUUID().slice(0, 8)}`;
        const url = `${target.url()}${target.url().includes("?") ? "&" : "?"}namespace=${ns}`;
        // The command ignores SIGTERM, so only --kill-after's SIGKILL can stop it.
        const script = 'trap "echo got-term" TERM; echo ready; while :; do sleep 0.05; done';
        const run = start(
          ["lock", "lost", "--url", url, "--ttl", "2s", "--kill-after", "300ms", "--", "sh", "-c", script],
          env(),
        );
        await waitFor(() => run.out().includes("ready"), "the command to start");
        await target.cut(ns);
        assert.equal(await run.exit, 76, run.out());
        assert.match(run.out(), /got-term/);
        assert.match(run.out(), /lost/);
      });

      // A real session expiry: nothing deleted by hand, the network goes silent (no FIN, no
      // RST) past the session timeout. baton's local deadline (4/5 of the timeout after the
      // last answered request) stops the command; the server expires the session a fifth of
      // the timeout later at the earliest, and only then is the next waiter granted.
      if (target.name === "zookeeper") {
        it("exits 76 after SIGTERM then SIGKILL when a silent TCP cut outlasts the session, before the server expires it and grants the next waiter", async () => {
          const proxy = await startProxy(target.address());
          const query = `?namespace=cli-x-${randomUUID().slice(0, 8)}`;
          const next = await connect(`${target.url()}${query}`, { memberId: "next-holder" });
          try {
            // The command ignores SIGTERM (only --kill-after's SIGKILL stops it), and leaves a
            // child in its group, which SIGTERM ends.
            const script =
              'trap "echo got-term" TERM; sleep 600 & echo "command $$ child $! token $BATON_FENCING_TOKEN"; while :; do sleep 0.05; done';
            const run = start(
              [
                "lock",
                "expiry",
                "--url",
                `${target.viaProxy(proxy.port)}${query}`,
                "--ttl",
                // A fifth of it (1 s) between baton's deadline and the server's expiry: room
                // for a stalled process on a loaded 2-core machine.
                "5s",
                "--kill-after",
                "300ms",
                "--",
                "sh",
                "-c",
                script,
              ],
              env(),
            );
            await waitFor(() => /token \d+/.test(run.out()), "the command to start");
            const [, command, child, token] = /command (\d+) child (\d+) token (\d+)/.exec(run.out())!;
            let lossShownAtGrant: boolean | undefined;
            const waiting = observed(
              next
                .lock("expiry")
                .acquire({ timeoutMs: 60_000 })
                .then((handle) => {
                  lossShownAtGrant = /stopping the command/.test(run.out());
                  return handle;
                }),
            );
            await waitQueued(next, "lock", "expiry");
            proxy.cut();
            assert.equal(await run.exit, 76, run.out());
            assert.match(run.out(), /lost/);
            assert.match(run.out(), /baton: .*; stopping the command/);
            assert.match(run.out(), /got-term/);
            // SIGTERM went to the command's group (its child is gone), SIGKILL ended the command.
            assert.ok(!running(Number(child)), "the command's child outlived baton");
            assert.ok(!running(Number(command)), "the command outlived baton");
            const granted = await waiting;
            try {
              assert.equal(
                lossShownAtGrant,
                true,
                `the next waiter was granted before baton saw the loss:\n${run.out()}`,
              );
              assert.ok(granted.token > BigInt(token!), `token ${granted.token} after ${token}`);
              // Granted because the server expired the session (the lost holding's takeover
              // record is handed over): baton could not have released through the cut.
              assert.match(granted.takeover?.memberId ?? "", new RegExp(`:${run.child.pid}:`));
            } finally {
              await granted.release();
            }
          } finally {
            await next.close();
            await proxy.close();
          }
        });
      }
    });
  }
});
