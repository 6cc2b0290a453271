import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startMariadb } from "../harness/mariadb.js";
import { waitForWaiters } from "../conformance/helpers.js";
import { ownServer } from "./fixtures/backend-suite.js";

/** The server's statement counters (`Com_*`, statements inside procedures included). */
async function statements(server: { query<R>(sql: string): Promise<R[]> }): Promise<Map<string, number>> {
  const rows = await server.query<{ Variable_name: string; Value: string }>("SHOW GLOBAL STATUS LIKE 'Com\\_%'");
  return new Map(rows.map((row) => [row.Variable_name.slice(4), Number(row.Value)]));
}

/** Statements the server's clients sent (`Questions`: not those run inside procedures). */
async function questions(server: { query<R>(sql: string): Promise<R[]> }): Promise<number> {
  const [row] = await server.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Questions'");
  return Number(row?.Value);
}

/** Statements run between two readings, per cycle, leaving out the readings themselves. */
function perCycle(before: Map<string, number>, after: Map<string, number>, cycles: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, value] of after) {
    const ran = value - (before.get(name) ?? 0);
    if (ran > 0 && name !== "show_status") out[name] = ran / cycles;
  }
  return out;
}

// In: GET_LOCK (a procedure's IF), BEGIN, the UPDATE that checks the count and bumps the
// token, the SELECT of the queue's id, the INSERT of the entry (its trigger's UPDATE counts
// it), COMMIT, the SELECT of the answer. Out: the DELETE (its trigger's UPDATE counts it
// out), DO RELEASE_LOCK.
const untracked = { call_procedure: 2, begin: 1, commit: 1, select: 2, insert: 1, update: 3, delete: 1, do: 1 };

// The server-side cost of the uncontended path, counted by the server itself: one CALL each
// way, and on the way in no read of the queue's entries (a read that walks every deleted
// entry not purged yet: the dearest statement of the path before schema version 3). Speed
// itself is measured by `npm run bench`; this pins down the work that makes it.
describe("mysql uncontended cost", () => {
  const { server, client } = ownServer(() => startMariadb());

  it("tracking costs no round trip: as many statements sent per cycle as untracked", async () => {
    // First in the file, so no other coordinator of the server is open yet, and no heartbeat
    // for 200 s: every statement sent in a window is the loop's.
    const coord = await client({ ttlMs: 600_000 });
    await coord.openSession();
    const sent: Record<string, number> = {};
    for (const [what, acquire] of [
      ["untracked", { takeover: false }],
      ["tracked", {}],
    ] as const) {
      const lock = coord.lock(`round-trips-${what}`);
      const first = await lock.acquire(acquire);
      const record = (await coord.inspect()).takeovers?.find((r) => r.name === `round-trips-${what}`);
      assert.equal(record?.token, what === "tracked" ? first.token : undefined, `${what}: the record`);
      await first.release();
      const cycles = 20;
      const before = await questions(server());
      for (let i = 0; i < cycles; i++) {
        const handle = await lock.acquire(acquire);
        assert.equal(handle.takeover, null);
        assert.equal((await handle.release()).status, "released");
      }
      sent[what] = (await questions(server())) - before;
    }
    // Two per cycle (the CALL in, the CALL out), and the two readings.
    assert.deepEqual(sent, { untracked: 42, tracked: 42 });
  });

  // Tracked (the default): the record is one INSERT inside the grant's call (its nested
  // CALL counted too) and one DELETE inside the release's.
  const tracked = { call_procedure: 3, begin: 1, commit: 1, select: 2, insert: 2, update: 3, delete: 2, do: 1 };
  for (const [what, acquire, expected] of [
    ["an exclusive lock, untracked", { takeover: false }, untracked],
    ["a shared lock", { mode: "shared" }, untracked],
    ["an exclusive lock, tracked (the default)", {}, tracked],
  ] as const) {
    it(`${what}: one CALL each way, no read of the queue's entries`, async () => {
      // A TTL that no heartbeat interrupts during the loop.
      const coord = await client({ ttlMs: 60_000 });
      await coord.openSession();
      const lock = coord.lock(`cost-${what}`);
      // The first grant of a name creates its row (the slow path); the loop runs after.
      await (await lock.acquire(acquire)).release();
      const cycles = 20;
      const before = await statements(server());
      for (let i = 0; i < cycles; i++) {
        const handle = await lock.acquire(acquire);
        assert.equal((await handle.release()).status, "released");
      }
      const ran = perCycle(before, await statements(server()), cycles);
      assert.deepEqual(ran, expected, JSON.stringify(ran));
    });
  }

  it("a semaphore below its limit takes the same path", async () => {
    const coord = await client({ ttlMs: 60_000 });
    await coord.openSession();
    const semaphore = coord.semaphore("cost-semaphore", { limit: 3 });
    const held = await semaphore.acquire();
    // A wait runs on a lane holding nothing: the first cycle opens the second lane.
    await (await semaphore.acquire()).release();
    const cycles = 10;
    const before = await statements(server());
    for (let i = 0; i < cycles; i++) await (await semaphore.acquire()).release();
    const ran = perCycle(before, await statements(server()), cycles);
    await held.release();
    assert.equal(ran.select, 2, JSON.stringify(ran));
    assert.equal(ran.call_procedure, 2, JSON.stringify(ran));
  });
});

// The fast path trusts the queue's entry count (`live`, schema version 3): these pin down
// that the count never lets a request past a live holder, and heals where it is not known.
describe("mysql entry count", () => {
  const { server, client } = ownServer(() => startMariadb());
  const live = async (name: string) => {
    const [row] = await server().query<{ live: number }>("SELECT live FROM baton.baton_queues WHERE name = ?", [name]);
    return Number(row?.live);
  };

  it("a row not counted yet (as migrated from version 2) refuses a try while held, and is counted by the next grant", async () => {
    const holder = await client({ ttlMs: 60_000 });
    const other = await client({ ttlMs: 60_000 });
    const held = await holder.lock("migrated").acquire();
    assert.equal(await live("migrated"), 1);
    // What the migration leaves on a name with entries made before the triggers.
    await server().query("UPDATE baton.baton_queues SET live = 1000000000 WHERE name = 'migrated'");
    assert.equal(await other.lock("migrated").tryAcquire(), null);
    // A refused try leaves no trace, its count of the entries included.
    assert.equal(await live("migrated"), 1000000000);
    await held.release();
    assert.equal(await live("migrated"), 999999999);
    const next = await other.lock("migrated").acquire({ timeoutMs: 5000 });
    assert.equal(next.token, held.token + 1n);
    assert.equal(await live("migrated"), 1);
    await next.release();
    assert.equal(await live("migrated"), 0);
  });

  it("a holder's dead connection keeps its entry counted until swept; the next request is granted by the slow path", async () => {
    const holder = await client({ ttlMs: 60_000 });
    const other = await client({ ttlMs: 60_000 });
    const held = await holder.lock("dead").acquire();
    const lost = new Promise<void>((resolve) => held.signal.addEventListener("abort", () => resolve()));
    // The holder's lane: the connection that holds its entry's key.
    const [lane] = await server().query<{ conn: string }>(
      "SELECT e.conn FROM baton.baton_entries e JOIN baton.baton_queues q ON q.qid = e.qid WHERE q.name = 'dead'",
    );
    await server().query(`KILL CONNECTION ${Number(lane?.conn)}`);
    await lost;
    const next = await other.lock("dead").acquire({ timeoutMs: 10_000 });
    assert.ok(next.token > held.token);
    // The dead entry and the new one, until a heartbeat sweeps the dead one.
    assert.equal(await live("dead"), 2);
    await next.release();
    assert.equal(await live("dead"), 1);
  });
});

// A waiter on a full semaphore sleeps in GET_LOCK on the first live entry ahead. With limit
// 1 that entry must go before it can be granted, so the wait misses nothing without a poll;
// with a limit of 2 or more a permit freed by another holder wakes nothing, so it polls.
describe("mysql semaphore waits", () => {
  const { server, client } = ownServer(() => startMariadb());

  it("a waiter on a full semaphore of limit 1 does not poll; of limit 2 it does", async () => {
    // The only coordinators of this server, with no heartbeat for 200 s: every procedure
    // call in the window is the waiter's.
    const holder = await client({ ttlMs: 600_000 });
    const waiter = await client({ ttlMs: 600_000 });
    const calls: Record<number, number> = {};
    for (const limit of [1, 2]) {
      const name = `poll-${limit}`;
      const held = await Promise.all(Array.from({ length: limit }, () => holder.semaphore(name, { limit }).acquire()));
      const waiting = waiter.semaphore(name, { limit }).acquire({ timeoutMs: 30_000 });
      await waitForWaiters(waiter, name, 1, "semaphores");
      const before = await statements(server());
      // A measurement window, not a wait for an event: what the wait runs meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 600));
      const ran = perCycle(before, await statements(server()), 1);
      calls[limit] = ran.call_procedure ?? 0;
      await Promise.all(held.map((h) => h.release()));
      const granted = await waiting;
      assert.ok(granted.token > 0n);
      await granted.release();
    }
    assert.equal(calls[1], 0, `limit 1: ${calls[1]} procedure calls while it waited`);
    // Every 50 ms: about 12 in the window, fewer on a loaded machine.
    assert.ok((calls[2] ?? 0) >= 3, `limit 2: ${calls[2]} procedure calls while it waited`);
  });
});
