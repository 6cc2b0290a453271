import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startMariadb } from "../harness/mariadb.js";
import { ownServer } from "./fixtures/backend-suite.js";

/** The server's statement counters (`Com_*`, statements inside procedures included). */
async function statements(server: { query<R>(sql: string): Promise<R[]> }): Promise<Map<string, number>> {
  const rows = await server.query<{ Variable_name: string; Value: string }>("SHOW GLOBAL STATUS LIKE 'Com\\_%'");
  return new Map(rows.map((row) => [row.Variable_name.slice(4), Number(row.Value)]));
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

// The server-side cost of the uncontended path, counted by the server itself: one CALL each
// way, and on the way in no read of the queue's entries (a read that walks every deleted
// entry not purged yet: the dearest statement of the path before schema version 3). Speed
// itself is measured by `npm run bench`; this pins down the work that makes it.
describe("mysql uncontended cost", () => {
  const { server, client } = ownServer(() => startMariadb());

  for (const [what, acquire] of [
    ["an exclusive lock", { takeover: false }],
    ["a shared lock", { mode: "shared" }],
  ] as const) {
    it(`${what}: one CALL each way, 11 statements inside, no read of the queue's entries`, async () => {
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
      // In: GET_LOCK (a procedure's IF), BEGIN, the UPDATE that checks the count and bumps
      // the token, the INSERT of the entry, COMMIT, the SELECT of the answer. Out: the
      // SELECT of the entry's queue, BEGIN, the UPDATE of the count, the DELETE, COMMIT,
      // DO RELEASE_LOCK.
      assert.deepEqual(
        ran,
        { call_procedure: 2, begin: 2, commit: 2, select: 2, insert: 1, update: 2, delete: 1, do: 1 },
        JSON.stringify(ran),
      );
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
