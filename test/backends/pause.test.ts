/**
 * A waiter really paused (SIGSTOP) past its TTL on a TTL-bound backend: the backend expires
 * its lease (and its place in the queue) while it sleeps; on SIGCONT it finds its session
 * lost, queues again on a fresh one and still gets the lock before its timeout.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { connect } from "../../src/index.js";
import { waitFor } from "../conformance/helpers.js";
import { type EtcdServer, startEtcd } from "../harness/etcd.js";
import { type PgServer, startPostgres } from "../harness/postgres.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/pause-waiter.ts", import.meta.url));
const TTL_MS = 2000;

describe("a waiter paused past its TTL", () => {
  let etcd: EtcdServer | undefined;
  let postgres: PgServer | undefined;
  after(async () => {
    await etcd?.stop();
    await postgres?.stop();
  });
  const targets: [string, () => Promise<string>][] = [
    ["etcd", async () => (etcd ??= await startEtcd()).url],
    ["postgres", async () => (postgres ??= await startPostgres()).url],
  ];

  for (const [name, target] of targets) {
    it(`${name}: goes on waiting after SIGCONT and is granted before its timeout`, async () => {
      const url = await target();
      const holder = await connect(url, { namespace: "", memberId: "holder" });
      const lock = `paused-${name}-${process.pid}`;
      const held = await holder.lock(lock).acquire();
      const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, url, lock, String(TTL_MS), "120000"], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const lines: string[] = [];
      createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      try {
        await waitFor(() => lines.some((l) => l.startsWith("session ")), "the child's session", 30_000);
        const firstSession = lines.find((l) => l.startsWith("session "))!.slice("session ".length);
        const waiterSessions = async () =>
          (await holder.inspect()).locks.find((l) => l.name === lock)?.waiters.map((w) => w.sessionId) ?? [];
        await waitFor(async () => (await waiterSessions()).includes(firstSession), "the child to queue", 30_000);
        child.kill("SIGSTOP");
        // The backend expires the paused child's lease: its waiter disappears from the queue.
        await waitFor(async () => (await waiterSessions()).length === 0, "the paused waiter's lease to expire", 60_000);
        child.kill("SIGCONT");
        await waitFor(
          async () => {
            const sessions = await waiterSessions();
            return sessions.length === 1 && sessions[0] !== firstSession;
          },
          "the resumed child to queue again on a fresh session",
          60_000,
        );
        await held.release();
        const code = await exited;
        const granted = lines.find((l) => l.startsWith("granted "));
        assert.ok(granted, `the child was not granted: ${lines.join(" | ")}`);
        assert.equal(code, 0, lines.join(" | "));
        const [, token, session] = granted.split(" ");
        assert.ok(BigInt(token!) > held.token);
        assert.notEqual(session, firstSession);
      } finally {
        child.kill("SIGCONT");
        child.kill("SIGKILL");
        await holder.close();
      }
    });
  }
});
