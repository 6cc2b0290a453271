/**
 * Where a Redis handoff's time goes. N waiter processes per source tree loop acquire,
 * hold, release, think on one lock (the bench's handoff scenario, tracked by default), with
 * probes stamped with `process.hrtime.bigint()` (CLOCK_MONOTONIC: one clock for every
 * process of the host): in the holder, the release call, the RELEASE script sent by the
 * link (`sendCommand`), written to the socket, answered, and the release resolved; in the
 * next holder (a process already waiting), the grant message received by the subscriber,
 * the mailbox's wake delivered (`Mailbox.next` settled), and the user's grant; plus every
 * command the waiter sent between the message and its grant. Redis's own time per script
 * comes from SLOWLOG (threshold 0) of each block. Several trees (`--tree DIR`, each built:
 * DIR/dist/src) run in alternating blocks, for a before/after in the same run.
 *
 *   npx tsc -p bench/tsconfig.json && node .bench/dist/bench/redis-handoff.js \
 *     [--waiters 8] [--ms 2000] [--rounds 3] [--hold 1] [--think 1] [--tree DIR]...
 */
import { type ChildProcess, fork } from "node:child_process";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import net from "node:net";
import { basename, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const now = () => Number(process.hrtime.bigint());
const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

interface Cycle {
  proc: number;
  req: number;
  grant: number;
  msg: number;
  box: number;
  /** Commands the waiter sent after the grant message, before its grant. */
  extra: string;
  rel: number;
  /** CPU time of the waiter from the message to its grant; of the holder from its release call to the write. */
  grantCpu: number;
  writeCpu: number;
  send: number;
  write: number;
  reply: number;
  done: number;
}

interface ScriptLike {
  readonly name: string;
  readonly source: string;
}

const sha = (source: string) => createHash("sha1").update(source).digest("hex");

async function scriptNames(tree: string): Promise<Map<string, string>> {
  const lua = (await import(pathToFileURL(`${tree}/dist/src/backends/redis/lua.js`).href)) as Record<string, unknown>;
  const names = new Map<string, string>();
  for (const value of Object.values(lua)) {
    const script = value as ScriptLike;
    if (script && typeof script.source === "string") names.set(sha(script.source), script.name);
  }
  return names;
}

// ---- child ---------------------------------------------------------------------------------

async function child(tree: string, url: string): Promise<void> {
  const names = await scriptNames(tree);
  const requireFromTree = createRequire(`${tree}/dist/src/index.js`);
  const { RedisClient } = requireFromTree("@redis/client") as {
    RedisClient: { prototype: Record<string, (...args: unknown[]) => unknown> };
  };
  const cpuNow = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) * 1000;
  };
  const probe = {
    msgCpu: 0,
    writeCpu: 0,
    msg: 0,
    box: 0,
    send: 0,
    write: 0,
    reply: 0,
    waitingWrite: false,
    cmds: [] as [number, string][],
  };
  const proto = RedisClient.prototype;
  const send = proto.sendCommand!;
  proto.sendCommand = function (this: unknown, ...args: unknown[]) {
    const t = now();
    const command = args[0] as string[];
    const promise = send.apply(this, args) as Promise<unknown>;
    const name = command[0] === "EVALSHA" ? (names.get(command[1]!) ?? "evalsha?") : String(command[0]);
    probe.cmds.push([t, name]);
    if (name === "release") {
      probe.send = t;
      probe.waitingWrite = true;
      promise.then(
        () => {
          probe.reply = now();
        },
        () => {},
      );
    }
    return promise;
  };
  const write = net.Socket.prototype.write;
  net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
    if (probe.waitingWrite) {
      probe.waitingWrite = false;
      probe.write = now();
      probe.writeCpu = cpuNow();
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof write;
  const wrapped = new WeakMap<object, (message: string, channel: string) => void>();
  const wrap = (listener: (message: string, channel: string) => void) => {
    let w = wrapped.get(listener);
    if (!w) {
      w = (message, channel) => {
        if (String(channel).includes(":c:")) {
          probe.msg = now();
          probe.msgCpu = cpuNow();
        }
        listener(message, channel);
      };
      wrapped.set(listener, w);
    }
    return w;
  };
  for (const method of ["SUBSCRIBE", "UNSUBSCRIBE"]) {
    const original = proto[method]!;
    proto[method] = function (this: unknown, channels: unknown, listener: unknown, ...rest: unknown[]) {
      const l = typeof listener === "function" ? wrap(listener as (m: string, c: string) => void) : listener;
      return original.call(this, channels, l, ...rest);
    };
  }
  const wakeups = (await import(pathToFileURL(`${tree}/dist/src/backends/redis/wakeups.js`).href)) as {
    Mailbox?: { prototype: Record<string, (...args: unknown[]) => unknown> };
  };
  const mailbox = wakeups.Mailbox?.prototype;
  const next = mailbox?.next;
  if (mailbox && next) {
    mailbox.next = function (this: unknown, ...args: unknown[]) {
      const promise = next.apply(this, args) as Promise<unknown>;
      promise.then(
        () => {
          probe.box = now();
        },
        () => {},
      );
      return promise;
    };
  }
  const { connect } = (await import(
    pathToFileURL(`${tree}/dist/src/index.js`).href
  )) as typeof import("../src/index.js");
  const coord = await connect(url);
  await coord.openSession();
  process.on(
    "message",
    (message: {
      op: string;
      lock: string;
      startAt: number;
      endAt: number;
      hold: number;
      think: number;
      proc: number;
    }) => {
      if (message.op === "exit") {
        void coord.close().finally(() => process.exit(0));
        return;
      }
      void (async () => {
        const lock = coord.lock(message.lock);
        const cycles: Cycle[] = [];
        while (now() < message.startAt) await sleep(1);
        const cpu0 = process.cpuUsage();
        while (now() < message.endAt) {
          probe.cmds.length = 0;
          probe.msg = 0;
          probe.box = 0;
          const req = now();
          const handle = await lock.acquire();
          const grant = now();
          const grantCpu = cpuNow() - probe.msgCpu;
          const { msg, box } = probe;
          const extra = msg
            ? probe.cmds
                .filter(([t]) => t > msg)
                .map(([, n]) => n)
                .join(",")
            : "";
          await sleep(message.hold);
          probe.send = probe.write = probe.reply = 0;
          const rel = now();
          const relCpu = cpuNow();
          const { status } = await handle.release();
          const done = now();
          if (status !== "released") throw new Error(`release: ${status}`);
          cycles.push({
            proc: message.proc,
            req,
            grant,
            msg,
            box,
            extra,
            rel,
            ...pick(probe),
            done,
            grantCpu,
            writeCpu: probe.writeCpu - relCpu,
          });
          if (message.think > 0) await sleep(message.think);
        }
        // HANDOFF_DUMP=DIR: this process's cycles as JSON, to match with CPU profiles.
        if (process.env.HANDOFF_DUMP) {
          const { writeFileSync } = await import("node:fs");
          writeFileSync(`${process.env.HANDOFF_DUMP}/cycles-${process.pid}.json`, JSON.stringify(cycles));
        }
        const used = process.cpuUsage(cpu0);
        process.send?.({ cycles, cpuUs: used.user + used.system });
      })();
    },
  );
  process.send?.({ up: true });
}

const pick = (p: { send: number; write: number; reply: number }) => ({ send: p.send, write: p.write, reply: p.reply });

// ---- parent --------------------------------------------------------------------------------

interface Stats {
  handoffs: number;
  byMessage: number;
  grantsPerSec: number;
  stages: Map<string, number[]>;
  extra: Map<string, number>;
}

const quantile = (list: number[], q: number) => {
  if (list.length === 0) return Number.NaN;
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};

function analyse(cycles: Cycle[], startAt: number, endAt: number): Stats {
  cycles.sort((a, b) => a.grant - b.grant);
  const stages = new Map<string, number[]>();
  const add = (name: string, value: number) => {
    if (!(value > 0 || value < 0)) return;
    let list = stages.get(name);
    if (!list) stages.set(name, (list = []));
    list.push(value / 1000);
  };
  const extra = new Map<string, number>();
  let handoffs = 0;
  let byMessage = 0;
  for (let i = 0; i < cycles.length; i++) {
    const held = cycles[i]!;
    if (held.rel < startAt || held.rel > endAt) continue;
    let j = i + 1;
    while (j < cycles.length && cycles[j]!.req >= held.rel) j++;
    const next = cycles[j];
    if (!next) continue;
    handoffs++;
    add("handoff (release call -> next holder's grant)", next.grant - held.rel);
    if (held.send) add("holder: release call -> RELEASE sent to node-redis", held.send - held.rel);
    if (held.write) add("holder: -> written to the socket", held.write - held.rel);
    if (held.reply) add("holder: -> RELEASE reply", held.reply - held.rel);
    if (held.write) add("  holder CPU: release call -> socket write", held.writeCpu);
    add("holder: -> release() resolved", held.done - held.rel);
    if (next.msg) {
      byMessage++;
      add("waiter: -> grant message received", next.msg - held.rel);
      if (next.box) add("waiter: -> mailbox wake delivered", next.box - held.rel);
      add("waiter: -> user's grant", next.grant - held.rel);
      if (held.write) add("  socket write -> message received (server + wake)", next.msg - held.write);
      if (held.reply) add("  message received - holder's reply", next.msg - held.reply);
      if (next.box) add("  message -> mailbox wake", next.box - next.msg);
      if (next.box) add("  mailbox wake -> user's grant", next.grant - next.box);
      add("  message -> user's grant", next.grant - next.msg);
      add("  waiter CPU: message -> user's grant", next.grantCpu);
      const key = next.extra || "(none)";
      extra.set(key, (extra.get(key) ?? 0) + 1);
    }
  }
  const granted = cycles.filter((c) => c.grant >= startAt && c.grant <= endAt).length;
  return { handoffs, byMessage, grantsPerSec: (granted / (endAt - startAt)) * 1e9, stages, extra };
}

async function parent(): Promise<void> {
  const { values } = parseArgs({
    options: {
      waiters: { type: "string" },
      ms: { type: "string" },
      rounds: { type: "string" },
      hold: { type: "string" },
      think: { type: "string" },
      tree: { type: "string", multiple: true },
      slowlog: { type: "boolean" },
    },
  });
  const slowlog = values.slowlog === true;
  const waiters = Number(values.waiters ?? 8);
  const ms = Number(values.ms ?? 2000);
  const rounds = Number(values.rounds ?? 3);
  const hold = Number(values.hold ?? 1);
  const think = Number(values.think ?? 1);
  const here = fileURLToPath(import.meta.url);
  const trees = (values.tree ?? [resolve(here, "../../../..")]).map((t) => resolve(t));
  const { startRedis } = await import("../test/harness/redis.js");
  const { createClient } = await import("redis");
  const server = await startRedis();
  const admin = createClient({ url: server.url });
  await admin.connect();
  // Off unless asked: logging every command (those scripts call too) costs the server.
  await admin.sendCommand(["CONFIG", "SET", "slowlog-log-slower-than", slowlog ? "0" : "-1"]);
  await admin.sendCommand(["CONFIG", "SET", "slowlog-max-len", "1000000"]);
  const names = new Map<string, string>();
  for (const tree of trees) for (const [k, v] of await scriptNames(tree)) names.set(k, v);
  const groups: { tree: string; label: string; children: ChildProcess[] }[] = [];
  for (const [i, tree] of trees.entries()) {
    const children: ChildProcess[] = [];
    for (let n = 0; n < waiters; n++) {
      // HANDOFF_CHILD_ARGS: node flags for diagnosis, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p".
      const execArgv = process.env.HANDOFF_CHILD_ARGS?.split(" ").filter(Boolean) ?? [];
      const c = fork(here, ["--child", tree, server.url], { serialization: "advanced", stdio: "inherit", execArgv });
      children.push(c);
    }
    await Promise.all(children.map((c) => new Promise<void>((done) => c.once("message", () => done()))));
    groups.push({ tree, label: `${i}:${basename(tree)}`, children });
  }
  const results = new Map<string, Stats[]>();
  const server_ = new Map<string, Map<string, { n: number; us: number }>>();
  let lockSeq = 0;
  for (let round = 0; round < rounds; round++) {
    for (const group of groups) {
      if (slowlog) await admin.sendCommand(["SLOWLOG", "RESET"]);
      await admin.sendCommand(["CONFIG", "RESETSTAT"]);
      const cpu0 = await serverCpu(admin);
      const startAt = now() + 300e6;
      const endAt = startAt + ms * 1e6;
      const lock = `h${++lockSeq}`;
      const replies = await Promise.all(
        group.children.map(
          (c, proc) =>
            new Promise<{ cycles: Cycle[]; cpuUs: number }>((done) => {
              c.once("message", (m: { cycles: Cycle[]; cpuUs: number }) => done(m));
              c.send({ op: "run", lock, startAt, endAt, hold, think, proc });
            }),
        ),
      );
      const cpu1 = await serverCpu(admin);
      const cycles = replies.flatMap((r) => r.cycles);
      const stats = analyse(cycles, startAt, endAt);
      stats.stages.set("server CPU per grant (INFO cpu)", [(cpu1 - cpu0) / Math.max(1, cycles.length)]);
      const commandstats = String(await admin.sendCommand(["INFO", "commandstats"]));
      const evalsha = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(commandstats);
      if (evalsha)
        stats.stages.set("server: EVALSHA us per call (commandstats)", [Number(evalsha[2]) / Number(evalsha[1])]);
      stats.stages.set("client CPU per grant (all processes)", [
        replies.reduce((a, r) => a + r.cpuUs, 0) / Math.max(1, cycles.length),
      ]);
      const list = results.get(group.label) ?? [];
      list.push(stats);
      results.set(group.label, list);
      const log = slowlog
        ? ((await admin.sendCommand(["SLOWLOG", "GET", "1000000"])) as [number, number, number, string[]][])
        : [];
      const perScript = server_.get(group.label) ?? new Map<string, { n: number; us: number }>();
      server_.set(group.label, perScript);
      for (const [, , us, args] of log) {
        const name = args[0] === "EVALSHA" ? (names.get(String(args[1])) ?? "evalsha?") : String(args[0]);
        const row = perScript.get(name) ?? { n: 0, us: 0 };
        row.n++;
        row.us += Number(us);
        perScript.set(name, row);
      }
      process.stderr.write(
        `round ${round + 1} ${group.label}: handoff p50 ${quantile(stats.stages.get("handoff (release call -> next holder's grant)") ?? [], 0.5).toFixed(0)} us, ${stats.handoffs} handoffs, ${stats.grantsPerSec.toFixed(0)} grants/s\n`,
      );
    }
  }
  const median = (list: number[]) => quantile(list, 0.5);
  process.stdout.write(
    `\n${waiters} waiter processes per tree, hold ${hold} ms, think ${think} ms, ${rounds} rounds of ${ms} ms; p50 per round, median over rounds (us)\n\n`,
  );
  const stageNames = [...new Set([...results.values()].flatMap((l) => l.flatMap((s) => [...s.stages.keys()])))];
  const labels = [...results.keys()];
  process.stdout.write(`| stage | ${labels.join(" | ")} |\n| --- |${labels.map(() => " ---: |").join("")}\n`);
  for (const stage of stageNames) {
    const cells = labels.map((label) => {
      const list = results.get(label)!.map((s) => median(s.stages.get(stage) ?? []));
      return median(list).toFixed(1);
    });
    process.stdout.write(`| ${stage} | ${cells.join(" | ")} |\n`);
  }
  for (const label of labels) {
    const list = results.get(label)!;
    const handoffs = list.reduce((a, s) => a + s.handoffs, 0);
    const byMessage = list.reduce((a, s) => a + s.byMessage, 0);
    const extra = new Map<string, number>();
    for (const s of list) for (const [k, v] of s.extra) extra.set(k, (extra.get(k) ?? 0) + v);
    process.stdout.write(
      `\n${label}: ${handoffs} handoffs, ${byMessage} by message, grants/s ${median(list.map((s) => s.grantsPerSec)).toFixed(0)}; commands between message and grant: ${[...extra].map(([k, v]) => `${k} x${v}`).join(", ")}\n`,
    );
    const perScript = server_.get(label)!;
    if (perScript.size > 0)
      process.stdout.write(
        `  Redis (SLOWLOG, per call): ${[...perScript]
          .sort((a, b) => b[1].n - a[1].n)
          .map(([k, v]) => `${k} ${(v.us / v.n).toFixed(1)} us x${v.n}`)
          .join(", ")}\n`,
      );
  }
  for (const group of groups) for (const c of group.children) c.send({ op: "exit" });
  await sleep(500);
  await admin.close();
  await server.stop();
}

async function serverCpu(admin: { sendCommand(args: string[]): Promise<unknown> }): Promise<number> {
  const info = String(await admin.sendCommand(["INFO", "cpu"]));
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return (field("used_cpu_user") + field("used_cpu_sys")) * 1e6;
}

if (process.argv[2] === "--child") await child(process.argv[3]!, process.argv[4]!);
else await parent();
