/**
 * `baton lock` / `elect` / `status` against real etcd, PostgreSQL and Redis servers, including a
 * lock lost while the command runs (exit 76, SIGTERM then SIGKILL).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import pg from "pg";
import { waitFor } from "./conformance/helpers.js";
import { baton, start } from "./fixtures/cli.js";
import { type EtcdServer, startEtcd } from "./harness/etcd.js";
import { type PgServer, startPostgres } from "./harness/postgres.js";
import { type RedisServer, rawCommand, startRedis } from "./harness/redis.js";

interface Target {
  name: string;
  url: () => string;
  /** Makes the backend drop the session holding locks in `namespace`. */
  cut: (namespace: string) => Promise<void>;
}

let etcd: EtcdServer | undefined;
let postgres: PgServer | undefined;
let redis: RedisServer | undefined;

const targets: Target[] = [
  {
    name: "etcd",
    url: () => etcd!.url,
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
    cut: async () => {
      // Drop everything, as a restart without persistence would: the session keys go.
      assert.match(await rawCommand(redis!.port, "FLUSHALL"), /^\+OK/);
    },
  },
];

describe("baton CLI against servers", () => {
  before(async () => {
    [etcd, postgres, redis] = await Promise.all([startEtcd(), startPostgres(), startRedis()]);
  });
  after(async () => {
    await Promise.all([etcd?.stop(), postgres?.stop(), redis?.stop()]);
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
    });
  }
});
