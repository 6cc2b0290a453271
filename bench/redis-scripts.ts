/**
 * Redis's own cost of a handoff's scripts, without any client in the way: a queue of
 * `--waiters` entries (each its own session, tracked for takeover as by default), and a
 * loop of the two scripts a handoff makes the server run: RELEASE of the holder (which
 * grants the next waiter and publishes its grant) and ACQUIRE of a new waiter at the back
 * (the released process coming back). Per loop: Redis's CPU (`INFO cpu`) and each script's
 * `usec_per_call` (`INFO commandstats`, run apart). Several trees (`--tree DIR`, with
 * DIR/src) in alternating rounds, for a before/after in the same run; also the uncontended
 * pair (ACQUIRE granted at once + RELEASE of the only entry).
 *
 *   node --import tsx bench/redis-scripts.ts [--waiters 8] [--loops 3000] [--rounds 5] [--tree DIR]...
 */
import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { startRedis } from "../test/harness/redis.js";

const { values } = parseArgs({
  options: {
    waiters: { type: "string" },
    loops: { type: "string" },
    rounds: { type: "string" },
    tree: { type: "string", multiple: true },
  },
});
const waiters = Number(values.waiters ?? 8);
const loops = Number(values.loops ?? 3000);
const rounds = Number(values.rounds ?? 5);
const here = fileURLToPath(import.meta.url);
const trees = (values.tree ?? [resolve(here, "../..")]).map((t) => resolve(t));

interface ScriptLike {
  readonly name: string;
  readonly source: string;
}
interface Lua {
  ACQUIRE: ScriptLike;
  RELEASE: ScriptLike;
}

const server = await startRedis();
const client = createClient({ url: server.url, commandOptions: { timeout: 0 } });
await client.connect();
const send = (args: string[]) => client.sendCommand(args);
const serverCpu = async () => {
  const info = String(await send(["INFO", "cpu"]));
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return (field("used_cpu_user") + field("used_cpu_sys")) * 1e6;
};
const evalStats = async () => {
  const info = String(await send(["INFO", "commandstats"]));
  const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(info);
  let inside = 0;
  for (const c of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (!/^(evalsha|eval|info|config\|.*)$/.test(c[1]!)) inside += Number(c[2]);
  }
  lastInside = inside;
  return m ? Number(m[2]) / Number(m[1]) : Number.NaN;
};
/** Commands run inside the scripts, at the last evalStats(). */
let lastInside = 0;

const RECORD = (sid: string) => `{"m":"bench-member","s":"${sid}","f":null,"d":0}`;

interface Variant {
  label: string;
  acquire(entry: string, sid: string): Promise<unknown>;
  release(entry: string): Promise<unknown>;
}

async function variant(tree: string, index: number): Promise<Variant> {
  const lua = (await import(pathToFileURL(`${tree}/src/backends/redis/lua.ts`).href)) as Lua;
  const sha = (s: ScriptLike) => createHash("sha1").update(s.source).digest("hex");
  for (const s of [lua.ACQUIRE, lua.RELEASE]) await send(["SCRIPT", "LOAD", s.source]);
  const P = `baton:t${index}:`;
  const Q = `${P}q:lock:n`;
  const cell = [`${P}cl:takeover:n`, `${P}cs:takeover`, `${P}cw:takeover:n`, `${P}cv`, "n"];
  return {
    label: `${index}:${tree}`,
    acquire: (entry, sid) =>
      send([
        "EVALSHA",
        sha(lua.ACQUIRE),
        "0",
        P,
        Q,
        "lock",
        "n",
        entry,
        sid,
        "bench-member",
        "x",
        "1",
        "1",
        "10000",
        RECORD(sid),
        ...cell,
      ]),
    release: (entry) => send(["EVALSHA", sha(lua.RELEASE), "0", P, Q, entry, "1", ...cell]),
  };
}

const variants = await Promise.all(trees.map((t, i) => variant(t, i)));
// Sessions: one per queued entry, cycled; a long TTL.
const sessions = Array.from({ length: waiters + 1 }, (_, i) => `sess${i.toString().padStart(4, "0")}`);
for (const [i] of variants.entries()) {
  for (const sid of sessions) await send(["SET", `baton:t${i}:s:${sid}`, "bench-member", "PX", "3600000"]);
}
const entryId = (n: number) => `entry-bench-${n.toString(36).padStart(8, "0")}`;

const results = new Map<
  string,
  {
    handoffCpu: number[];
    handoffEval: number[];
    freeCpu: number[];
    freeEval: number[];
    handoffCommands: number[];
    freeCommands: number[];
  }
>();
for (let round = 0; round < rounds; round++) {
  for (const v of variants) {
    // The queue: a holder and `waiters` waiters.
    let n = 0;
    const queue: string[] = [];
    for (let i = 0; i <= waiters; i++) {
      const entry = entryId(++n);
      await v.acquire(entry, sessions[i % sessions.length]!);
      queue.push(entry);
    }
    await send(["CONFIG", "RESETSTAT"]);
    let cpu0 = await serverCpu();
    for (let i = 0; i < loops; i++) {
      await v.release(queue.shift()!);
      const entry = entryId(++n);
      await v.acquire(entry, sessions[n % sessions.length]!);
      queue.push(entry);
    }
    let cpu1 = await serverCpu();
    const handoffEval = await evalStats();
    const handoffCommands = lastInside / loops;
    const handoffCpu = (cpu1 - cpu0) / loops;
    for (const entry of queue) await v.release(entry);
    await send(["CONFIG", "RESETSTAT"]);
    cpu0 = await serverCpu();
    for (let i = 0; i < loops; i++) {
      const entry = entryId(++n);
      await v.acquire(entry, sessions[0]!);
      await v.release(entry);
    }
    cpu1 = await serverCpu();
    const freeEval = await evalStats();
    const freeCommands = lastInside / loops;
    const row = results.get(v.label) ?? {
      handoffCpu: [],
      handoffEval: [],
      freeCpu: [],
      freeEval: [],
      handoffCommands: [],
      freeCommands: [],
    };
    results.set(v.label, row);
    row.handoffCpu.push(handoffCpu);
    row.handoffCommands.push(handoffCommands);
    row.freeCommands.push(freeCommands);
    row.handoffEval.push(handoffEval);
    row.freeCpu.push((cpu1 - cpu0) / loops);
    row.freeEval.push(freeEval);
  }
}
const median = (list: number[]) => [...list].sort((a, b) => a - b)[list.length >> 1]!;
process.stdout.write(
  `\nRedis per loop, median of ${rounds} rounds of ${loops}; handoff: RELEASE granting the next of ${waiters} waiters + ACQUIRE queueing one (tracked)\n\n| tree | handoff: server CPU | handoff: EVALSHA us/call | handoff: commands in scripts | uncontended pair: server CPU | uncontended: EVALSHA us/call | uncontended: commands |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n`,
);
for (const [label, row] of results) {
  process.stdout.write(
    `| ${label} | ${median(row.handoffCpu).toFixed(1)} us | ${median(row.handoffEval).toFixed(1)} | ${median(row.handoffCommands).toFixed(1)} | ${median(row.freeCpu).toFixed(1)} us | ${median(row.freeEval).toFixed(1)} | ${median(row.freeCommands).toFixed(1)} |\n`,
  );
}
await client.close();
await server.stop();
