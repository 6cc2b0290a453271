/**
 * CPU per uncontended acquire + release on Redis, for a loaded machine: wall-clock ratios
 * swing with the load, CPU time much less. Baton against the raw floor (SET NX PX +
 * compare-and-delete on node-redis, as in the bench) and the same floor on ioredis (the
 * peers' client), in interleaved rounds in one process: client CPU (`process.cpuUsage`),
 * Redis's CPU (`INFO cpu`) and the wall p50, per cycle. `--also DIR` adds the Baton of
 * another source tree (a checkout of main, say), for a before/after in the same run.
 *
 *   node --import tsx bench/redis-cpu.ts [--cycles N] [--rounds N] [--also DIR] [--tracked]
 */
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { connect } from "../src/index.js";
import { startRedis } from "../test/harness/redis.js";

const { values } = parseArgs({
  options: {
    cycles: { type: "string" },
    rounds: { type: "string" },
    also: { type: "string" },
    tracked: { type: "boolean" },
  },
});
const cycles = Number(values.cycles ?? 4000);
const rounds = Number(values.rounds ?? 5);
// --tracked: Baton's default (the takeover record written with the grant, deleted with the release).
const tracked = values.tracked ? {} : { takeover: false };
const server = await startRedis();
const admin = createClient({ url: server.url });
await admin.connect();
const serverCpuUs = async () => {
  const info = String(await admin.sendCommand(["INFO", "cpu"]));
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return (field("used_cpu_user") + field("used_cpu_sys")) * 1e6;
};
const closers: (() => Promise<unknown>)[] = [];
const batonCycle = async (url: string, from: string | undefined, namespace: string) => {
  const open = from ? ((await import(`${from}/src/index.ts`)) as { connect: typeof connect }).connect : connect;
  const coord = await open(url, { namespace });
  await coord.openSession();
  closers.push(() => coord.close());
  return async () => {
    await (await coord.lock("n").acquire(tracked)).release();
  };
};
const CAD = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
const raw = createClient({ url: server.url });
await raw.connect();
closers.push(() => raw.close());
const cad = String(await raw.sendCommand(["SCRIPT", "LOAD", CAD]));
const IoRedis = ((await import("ioredis")) as unknown as { default: new (url: string) => IoLike }).default;
interface IoLike {
  call(...args: string[]): Promise<unknown>;
  quit(): Promise<unknown>;
}
const io = new IoRedis(server.url);
closers.push(() => io.quit());
let seq = 0;
const impls: Record<string, () => Promise<void>> = {
  baton: await batonCycle(server.url, undefined, "baton"),
  ...(values.also ? { also: await batonCycle(server.url, values.also, "also") } : {}),
  "raw node-redis": async () => {
    const token = String(++seq);
    await raw.sendCommand(["SET", "raw:n", token, "NX", "PX", "10000"]);
    await raw.sendCommand(["EVALSHA", cad, "1", "raw:n", token]);
  },
  "raw ioredis": async () => {
    const token = String(++seq);
    await io.call("SET", "io:n", token, "NX", "PX", "10000");
    await io.call("EVALSHA", cad, "1", "io:n", token);
  },
};
for (const run of Object.values(impls)) for (let i = 0; i < 1000; i++) await run();
const results = new Map<string, { client: number[]; server: number[]; p50: number[] }>();
for (let round = 0; round < rounds; round++) {
  for (const [id, run] of Object.entries(impls)) {
    const samples = new Float64Array(cycles);
    const server0 = await serverCpuUs();
    const client0 = process.cpuUsage();
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < cycles; i++) {
      await run();
      const t1 = process.hrtime.bigint();
      samples[i] = Number(t1 - t0);
      t0 = t1;
    }
    const client = process.cpuUsage(client0);
    const server1 = await serverCpuUs();
    samples.sort();
    const row = results.get(id) ?? { client: [], server: [], p50: [] };
    results.set(id, row);
    row.client.push((client.user + client.system) / cycles);
    row.server.push((server1 - server0) / cycles);
    row.p50.push(samples[cycles >> 1]! / 1000);
  }
}
const median = (list: number[]) => [...list].sort((a, b) => a - b)[list.length >> 1]!;
const floor = results.get("raw node-redis")!;
process.stdout.write(
  `| per cycle (median of ${rounds} rounds of ${cycles}) | client CPU | Redis CPU | wall p50 | wall / floor |\n| --- | --- | --- | --- | --- |\n`,
);
for (const [id, row] of results) {
  process.stdout.write(
    `| ${id} | ${median(row.client).toFixed(1)} us | ${median(row.server).toFixed(1)} us | ${median(row.p50).toFixed(1)} us | ${(median(row.p50) / median(floor.p50)).toFixed(2)}x |\n`,
  );
}
for (const close of closers) await close();
await admin.close();
await server.stop();
