/**
 * Faults against a real PostgreSQL server, with holders in child processes
 * (fixtures/pg-client.ts): a holder killed with SIGKILL, a holder's connection terminated
 * by the server, a server restart under contention, and a connection silently cut by a
 * TCP proxy (no FIN, no RST).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { PgConnection } from "../../src/backends/postgres/connection.js";
import { type Coordinator, connect } from "../../src/index.js";
import { observed, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { type PgServer, startPostgres } from "../harness/postgres.js";
import { type Proxy as TcpProxy, startProxy } from "../harness/proxy.js";

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "pg-client.ts");

interface ChildEvent {
  event: string;
  at: number;
  token?: string;
  reason?: string;
  message?: string;
}

/** A fixture process and the events it printed. */
class Child {
  readonly process: ChildProcess;
  readonly events: ChildEvent[] = [];
  readonly #waiters = new Set<() => void>();
  #stderr = "";

  constructor(url: string, mode: "hold" | "loop", lock: string, ttlMs: number) {
    this.process = spawn(process.execPath, ["--import", "tsx", FIXTURE, url, mode, lock, String(ttlMs)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    createInterface({ input: this.process.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        this.events.push(JSON.parse(line) as ChildEvent);
      } catch {
        return;
      }
      for (const wake of [...this.#waiters]) wake();
    });
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4000);
    });
    this.process.on("exit", () => {
      for (const wake of [...this.#waiters]) wake();
    });
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length;
  }

  /** Waits for the `n`-th event of a kind (1-based) and returns it. */
  async next(event: string, n = 1, timeoutMs = 30_000): Promise<ChildEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.filter((e) => e.event === event)[n - 1];
      if (found) return found;
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        assert.fail(
          `child exited (${this.process.exitCode ?? this.process.signalCode}) before "${event}": ${this.#stderr}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out waiting for "${event}" #${n}; events: ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
        const waiters = this.#waiters;
        waiters.add(done);
      });
    }
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.process.kill(signal);
    await exited;
  }
}

describe("postgres faults", { timeout: 120_000 }, () => {
  let server: PgServer;
  let admin: pg.Client;
  const children: Child[] = [];
  const coords: Coordinator[] = [];
  const child = (url: string, mode: "hold" | "loop", lock: string, ttlMs: number) => {
    const c = new Child(url, mode, lock, ttlMs);
    children.push(c);
    return c;
  };
  const client = async (namespace = "") => {
    const coord = await connect(server.url, { namespace });
    coords.push(coord);
    return coord;
  };
  /** The backend pids holding lock `name` (default namespace), from pg_locks. */
  const holderPids = async (name: string): Promise<number[]> => {
    const result = await admin.query<{ pid: number }>(
      `SELECT l.pid FROM pg_locks l JOIN baton.keys k
         ON k.key = ((l.classid::bigint << 32) | l.objid::bigint)
       WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
         AND k.namespace = '' AND k.kind = 'lock' AND k.name = $1 AND k.part = 0`,
      [name],
    );
    return result.rows.map((r) => r.pid);
  };

  before(async () => {
    server = await startPostgres();
    admin = new pg.Client({ connectionString: server.url });
    admin.on("error", () => {});
    await admin.connect();
  });

  after(async () => {
    await Promise.all(children.map((c) => c.kill()));
    await Promise.all(coords.map((c) => c.close()));
    await admin.end().catch(() => {});
    await server.stop();
  });

  it("frees a SIGKILLed holder's lock for the next waiter in under a second", async () => {
    const holder = child(server.url, "hold", "killed", 10_000);
    const granted = await holder.next("granted");
    const coord = await client();
    const waiting = observed(coord.lock("killed").acquire({ timeoutMs: 20_000 }));
    await waitForWaiters(coord, "killed", 1);
    const killedAt = Date.now();
    await holder.kill("SIGKILL");
    const next = await waiting;
    const tookMs = Date.now() - killedAt;
    assert.ok(tookMs < 1000, `took ${tookMs} ms`);
    assert.ok(next.token > BigInt(granted.token ?? "0"));
    await next.release();
  });

  it("fires the holder's signal when the server terminates its connection; the next token is higher", async () => {
    const holder = child(server.url, "hold", "terminated", 10_000);
    const granted = await holder.next("granted");
    const coord = await client();
    const waiting = observed(coord.lock("terminated").acquire({ timeoutMs: 20_000 }));
    await waitForWaiters(coord, "terminated", 1);
    const [pid] = await holderPids("terminated");
    assert.ok(pid, "the holder's backend holds the lock");
    await admin.query("SELECT pg_terminate_backend($1)", [pid]);
    const lost = await holder.next("lost", 1, 10_000);
    assert.match(lost.reason ?? "", /LockLostError|lost/);
    const next = await waiting;
    assert.ok(next.token > BigInt(granted.token ?? "0"));
    await next.release();
  });

  it("recovers from a server restart under contention without restarting the clients", async () => {
    const loops = [0, 1, 2, 3].map(() => child(server.url, "loop", "restart", 5000));
    await Promise.all(loops.map((c) => c.next("granted", 3)));
    await server.restart();
    const before = loops.map((c) => c.count("granted"));
    // Every client makes progress again on its own.
    await Promise.all(loops.map((c, i) => c.next("granted", (before[i] ?? 0) + 3, 60_000)));
    const tokens = loops.flatMap((c) =>
      c.events.filter((e) => e.event === "granted").map((e) => BigInt(e.token ?? "0")),
    );
    assert.equal(new Set(tokens).size, tokens.length, "no token is handed out twice");
    for (const c of loops) {
      const mine = c.events.filter((e) => e.event === "granted").map((e) => BigInt(e.token ?? "0"));
      for (let i = 1; i < mine.length; i++) assert.ok(mine[i]! > mine[i - 1]!, `tokens ${mine.join(",")}`);
    }
    await Promise.all(loops.map((c) => c.kill()));
  });

  it("fires the holder's signal before another client gets a lock on a silently cut connection", async () => {
    const proxy: TcpProxy = await startProxy({ host: server.host, port: server.port });
    try {
      const viaProxy = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
      const holder = child(viaProxy, "hold", "cut", 2000);
      const granted = await holder.next("granted");
      const coord = await client();
      const waiting = observed(coord.lock("cut").acquire({ timeoutMs: 30_000 }));
      await waitForWaiters(coord, "cut", 1);
      const cutAt = Date.now();
      proxy.cut();
      const next = await waiting;
      const grantedAt = Date.now();
      const lost = await holder.next("lost", 1, 5000);
      assert.ok(
        lost.at <= grantedAt,
        `holder lost at +${lost.at - cutAt} ms, next granted at +${grantedAt - cutAt} ms`,
      );
      assert.ok(next.token > BigInt(granted.token ?? "0"));
      assert.ok(grantedAt - cutAt < 10_000, `takeover took ${grantedAt - cutAt} ms`);
      await next.release();
      await holder.kill();
    } finally {
      await proxy.close();
    }
  });
  it("a connection dropped under a hold keeps its backend until the hold is let go, at most its bound", async () => {
    const open = () => PgConnection.open(pg.Client, { connectionString: server.url }, 9000);
    // Its own observer: the restart test above ended the shared admin connection.
    const [observer, letGo, bounded] = await Promise.all([open(), open(), open()]);
    const backend = async (pid: number) =>
      (await observer.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pid], 5000)).rows.length === 1;
    const release = letGo.hold(60_000);
    bounded.hold(1000);
    letGo.destroy(new Error("dropped"));
    bounded.destroy(new Error("dropped"));
    assert.equal(letGo.alive || bounded.alive, false, "dead at once: nothing more is sent");
    assert.deepEqual([await backend(letGo.pid), await backend(bounded.pid)], [true, true], "still open while held");
    release();
    await waitFor(async () => !(await backend(letGo.pid)), "the let-go backend to end", 5000);
    // Never let go: closed by its bound.
    await waitFor(async () => !(await backend(bounded.pid)), "the bounded backend to end", 5000);
    await observer.end();
  });

  it("a tracked grant whose answer came too late (after commit) takes its takeover record with it", async () => {
    const proxy: TcpProxy = await startProxy({ host: server.host, port: server.port });
    try {
      const viaProxy = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
      const a = await client();
      // TTL 9 s: a statement gets 3 s to answer; the answer below is held back 5 s.
      const b = await connect(viaProxy, { ttlMs: 9000 });
      coords.push(b);
      // Its lane connected before the answers are held back.
      await (await b.lock("warm-up").acquire({ takeover: false })).release();
      const recordOf = async () => (await a.inspect()).takeovers?.find((r) => r.name === "late-answer");
      proxy.setLatency({ down: { ms: 5000 } });
      // The answer came after the statement's timeout, which dropped the connection.
      const trying = observed(
        assert.rejects(
          b.lock("late-answer").tryAcquire(),
          (e: Error) => e.name === "ConnectionLostError" && /did not answer within/.test(e.message),
        ),
      );
      // Committed (the grant and its record); its answer, sent before this read's, is held back.
      await waitFor(async () => (await recordOf()) !== undefined, "the tracked grant to commit");
      // A waiter queued behind the grant nobody was handed: granted the moment the orphan's
      // backend ends, it must not find the orphan's record (the clean-up deletes it before
      // that connection is closed).
      const waiting = observed(a.lock("late-answer").acquire({ timeoutMs: 20_000 }));
      await waitForWaiters(a, "late-answer", 1);
      proxy.setLatency({});
      await trying;
      const next = await waiting;
      assert.equal(next.takeover, null, "no false takeover");
      await next.release();
      assert.equal(await recordOf(), undefined, "no record left");
    } finally {
      await proxy.close();
    }
  });
});
