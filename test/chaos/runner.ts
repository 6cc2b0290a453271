/**
 * A chaos run: real client processes (client.ts) loop over a few locks and a semaphore
 * while a seeded nemesis injects faults; the runner is the one clock, the fenced register
 * and the journal. Everything is bounded: the run ends after `seconds`, clients get
 * `STOP_GRACE_MS` to finish their section, the final inspection waits out at most two TTLs.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect } from "../../src/index.js";
import { delay, raceTimeout } from "../harness/proc.js";
import type { ChaosBackend, ChaosTarget, ClientLink } from "./backends.js";
import type { ClientConfig } from "./client.js";
import { declaredPartitionSafe, type Fault, type FaultKind, type History, type Section } from "./history.js";
import { mulberry32 } from "./rng.js";

const CLIENT = fileURLToPath(new URL("./client.ts", import.meta.url));
const STOP_GRACE_MS = 20_000;
/** An event-loop gap of the runner past this is journaled as a stall. */
const STALL_MS = 1000;
const LOCKS = ["lk-0", "lk-1", "lk-2"];
const SEMAPHORE = "sem-0";
const SEMAPHORE_LIMIT = 2;

/** What to run. */
export interface RunOptions {
  readonly backend: ChaosBackend;
  readonly seconds: number;
  readonly clients: number;
  readonly nemeses: readonly FaultKind[];
  readonly seed: number;
  /** Replace locking by nothing (the negative control): the checker must fail the run. */
  readonly noop?: boolean;
  readonly ttlMs?: number;
  /** Progress lines (faults as they happen). */
  readonly log?: (line: string) => void;
  /**
   * Go on past `seconds` until this many faults were injected (a partition counts once,
   * however many clients it hits), up to three times as long: on a loaded machine a slow
   * fault (a respawn, a restart, a split whose `ip` commands crawl) can fill a short run
   * alone, and a run with one fault proves less than its verdict says. Default 0.
   */
  readonly minFaults?: number;
}

interface Client {
  readonly child: ChildProcess;
  readonly link: ClientLink;
  readonly pid: number;
  active: Section | undefined;
  /** Between its `upgrading` report and the end of that shared section. */
  upgrading: boolean;
  /** Set when the runner kills it or it said goodbye: its exit is expected. */
  expectedExit: boolean;
  paused: boolean;
  readonly exited: Promise<void>;
  readonly ready: Promise<void>;
}

/** Runs one chaos run and returns its history (check it with `check`). */
export async function runChaos(options: RunOptions): Promise<History> {
  const { backend, seconds, seed } = options;
  const ttlMs = options.ttlMs ?? 2000;
  const noop = options.noop ?? false;
  const log = options.log ?? (() => {});
  for (const kind of options.nemeses) {
    if (!backend.nemeses.includes(kind)) {
      throw new Error(`nemesis ${kind} does not apply to ${backend.name} (it takes ${backend.nemeses.join(", ")})`);
    }
  }
  const random = mulberry32(seed);
  const t0 = performance.now();
  const now = () => Math.round((performance.now() - t0) * 1000) / 1000;
  const history: History = {
    backend: backend.name,
    seed,
    noop,
    startedAt: 0,
    endedAt: 0,
    semaphoreLimit: SEMAPHORE_LIMIT,
    ttlMs,
    partitionSafe: declaredPartitionSafe(backend.name),
    sections: [],
    ops: [],
    faults: [],
    errors: [],
    stalls: [],
    crashes: [],
    leftHeld: [],
  };
  const namespace = `chaos-${seed}-${process.pid}`;
  const register = new Map<string, bigint>();
  const clients = new Map<number, Client>();
  let clientSeed = seed * 7919;
  let running = true;

  const target: ChaosTarget = await backend.start({ ttlMs });

  const onMessage = (client: Client, message: Record<string, unknown>): void => {
    const reply = (extra: Record<string, unknown> = {}) => {
      if (client.child.connected) client.child.send({ id: message.id, ...extra }, () => {});
    };
    const at = now();
    switch (message.op) {
      case "begin": {
        const section: Section = {
          id: history.sections.length,
          pid: client.pid,
          name: String(message.name),
          mode: message.mode as Section["mode"],
          token: String(message.token),
          start: at,
          end: undefined,
          endedBy: undefined,
          lost: false,
        };
        history.sections.push(section);
        // A grant reported by a client the runner already killed: it cannot act on it.
        if (client.expectedExit) {
          section.end = at;
          section.endedBy = "kill";
        } else client.active = section;
        reply({ section: section.id });
        return;
      }
      case "write":
      case "read": {
        const name = String(message.name);
        const token = BigInt(String(message.token));
        const highest = register.get(name) ?? -1n;
        const accepted = message.op === "read" || token >= highest;
        if (accepted && token > highest) register.set(name, token);
        history.ops.push({
          at,
          section: Number(message.section),
          kind: message.op,
          name,
          token: String(token),
          accepted,
        });
        reply({ accepted });
        return;
      }
      case "end": {
        const section = history.sections[Number(message.section)];
        if (section !== undefined && section.end === undefined) {
          section.end = at;
          section.endedBy = "release";
          section.lost = message.lost === true;
        }
        if (client.active === section) {
          client.active = undefined;
          client.upgrading = false;
        }
        reply();
        return;
      }
      case "upgrading":
        client.upgrading = true;
        reply();
        return;
      case "lost": {
        const section = history.sections[Number(message.section)];
        if (section !== undefined && section.lostAt === undefined) section.lostAt = at;
        reply();
        return;
      }
      case "error":
        history.errors.push({ at, pid: client.pid, message: String(message.message) });
        reply();
        return;
      case "bye":
        client.expectedExit = true;
        reply();
        return;
      default:
        reply();
    }
  };

  const spawnClient = async (): Promise<Client> => {
    const link = noop ? { url: target.url, close: async () => {} } : await target.link();
    // A respawn that raced the end of the run: nobody would stop it.
    if (!running) {
      await link.close();
      throw new Error("the run is over");
    }
    const config: ClientConfig = {
      url: link.url,
      namespace,
      seed: clientSeed++,
      ttlMs,
      noop,
      locks: LOCKS,
      semaphore: SEMAPHORE,
      semaphoreLimit: SEMAPHORE_LIMIT,
      acquireTimeoutMs: 1000,
      holdMs: [2, 40],
      ...(target.upgradeShare !== undefined ? { upgradeShare: target.upgradeShare } : {}),
    };
    const child = link.fork
      ? link.fork(CLIENT, [JSON.stringify(config)])
      : fork(CLIENT, [JSON.stringify(config)], {
          execArgv: ["--import", "tsx"],
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        });
    let markReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const client: Client = {
      child,
      link,
      pid: child.pid as number,
      active: undefined,
      upgrading: false,
      expectedExit: false,
      paused: false,
      exited,
      ready,
    };
    clients.set(client.pid, client);
    child.on("message", (message: Record<string, unknown>) => {
      if (message.op === "ready") markReady();
      onMessage(client, message);
    });
    child.once("exit", (code, signal) => {
      clients.delete(client.pid);
      markReady();
      void link.close();
      if (client.expectedExit) return;
      const at = now();
      history.crashes.push({ at, pid: client.pid, description: signal ? `killed by ${signal}` : `exit ${code}` });
      if (client.active) {
        client.active.end = at;
        client.active.endedBy = "kill";
      }
      if (running) void spawnClient().catch(() => {});
    });
    return client;
  };

  const victim = (): Client | undefined => {
    const live = [...clients.values()].filter((c) => !c.expectedExit && !c.paused);
    const holders = live.filter((c) => c.active !== undefined);
    const pool = holders.length > 0 ? holders : live;
    return pool[Math.floor(random() * pool.length)];
  };

  const inject = async (kind: FaultKind): Promise<void> => {
    if (kind === "partition") {
      const live = () => [...clients.values()].filter((c) => !c.expectedExit && !c.paused);
      let open: Fault[] = [];
      let split = 0;
      const started = now();
      const detail = await target.partition?.(random, {
        holders: () =>
          live()
            .filter((c) => c.active !== undefined)
            .map((c) => c.link),
        upgrading: () =>
          live()
            .filter((c) => c.upgrading)
            .map((c) => c.link),
        cutting(minority) {
          for (const c of live()) {
            if (minority.includes(c.link) && c.child.connected)
              c.child.send({ op: "stretch", untilHeal: true }, () => {});
          }
        },
        split(minority) {
          const at = now();
          split++;
          // Every client is hit: one cut off from the quorum, or one whose server was.
          open = live().map((c) => {
            const cutOff = minority.includes(c.link);
            return { kind, at, until: at, pid: c.pid, name: c.active?.name, detail: "", minority: cutOff };
          });
          history.faults.push(...open);
        },
        healed() {
          const until = now();
          for (const f of open) {
            (f as { until: number }).until = until;
            const c = clients.get(f.pid as number);
            if (f.minority && c?.child.connected) c.child.send({ op: "healed" }, () => {});
          }
          open = [];
        },
      });
      for (const f of history.faults)
        if (f.kind === kind && f.at >= started) (f as { detail: string }).detail = detail ?? "";
      log(`[${started.toFixed(0)} ms] partition: ${detail} (${split} split${split === 1 ? "" : "s"})`);
      return;
    }
    if (kind === "restart" || kind === "member") {
      const at = now();
      const fault: Fault = { kind, at, until: at, pid: undefined, name: undefined, detail: "" };
      history.faults.push(fault);
      const detail = kind === "restart" ? await target.restart?.() : await target.member?.(random);
      fault.until = now();
      (fault as { detail: string }).detail = detail ?? "";
      log(`[${at.toFixed(0)} ms] ${kind}: ${detail} (${(fault.until - at).toFixed(0)} ms)`);
      return;
    }
    const client = victim();
    if (client === undefined) return;
    const at = now();
    const name = client.active?.name;
    const fault: Fault = { kind, at, until: at, pid: client.pid, name, detail: "" };
    history.faults.push(fault);
    if (kind === "kill") {
      client.expectedExit = true;
      if (client.active) {
        client.active.end = at;
        client.active.endedBy = "kill";
        client.active = undefined;
      }
      client.child.kill("SIGKILL");
      await client.exited;
      (fault as { detail: string }).detail = "SIGKILL, respawned";
      log(`[${at.toFixed(0)} ms] kill ${client.pid} holding ${name ?? "nothing"}`);
      await (await spawnClient()).ready;
      return;
    }
    const holdMs = ttlMs + 1500 + Math.floor(random() * 1000);
    if (kind === "pause") {
      client.paused = true;
      client.child.kill("SIGSTOP");
      await delay(holdMs);
      client.child.kill("SIGCONT");
      client.paused = false;
    } else {
      client.link.cut?.();
      // Keep the victim holding until its signal aborts: the takeover must come after.
      if (client.child.connected) client.child.send({ op: "stretch" }, () => {});
      await delay(holdMs);
      client.link.heal?.();
    }
    fault.until = now();
    (fault as { detail: string }).detail = `${holdMs} ms`;
    log(`[${at.toFixed(0)} ms] ${kind} ${client.pid} holding ${name ?? "nothing"} for ${holdMs} ms`);
  };

  // Progress and recovery figures mean little while the runner itself stood still.
  let tick = now();
  const watchdog = setInterval(() => {
    const at = now();
    if (at - tick > STALL_MS) history.stalls?.push({ at: tick, ms: Math.round(at - tick) });
    tick = at;
  }, 100);
  try {
    await Promise.all(Array.from({ length: options.clients }, async () => (await spawnClient()).ready));
    const started = now();
    (history as { startedAt: number }).startedAt = started;
    let runEnd = started + seconds * 1000;
    const latestEnd = started + seconds * 3000;
    // A quiet tail after the last fault: recovery must show before the run ends.
    const tail = Math.min(4000, seconds * 250);
    let nemesisEnd = runEnd - tail;
    if (options.nemeses.length > 0) {
      await delay(300 + random() * 700);
      // Only start a fault expected to end before the quiet tail.
      const expectedMs = (kind: FaultKind) =>
        kind === "pause" || kind === "cut"
          ? ttlMs + 2500
          : kind === "kill"
            ? 1500
            : kind === "partition"
              ? ttlMs + 4000
              : 4000;
      let injected = 0;
      for (;;) {
        let fitting = options.nemeses.filter((k) => now() + expectedMs(k) <= nemesisEnd);
        if (fitting.length === 0 && injected < (options.minFaults ?? 0)) {
          // Too few faults so far: one more, with its quiet tail after it, if time allows.
          const quickest = Math.min(...options.nemeses.map(expectedMs));
          if (now() + quickest + tail <= latestEnd) {
            nemesisEnd = now() + quickest;
            runEnd = nemesisEnd + tail;
            fitting = options.nemeses.filter((k) => expectedMs(k) === quickest);
          }
        }
        if (fitting.length === 0) break;
        const kind = fitting[Math.floor(random() * fitting.length)] as FaultKind;
        await inject(kind);
        injected++;
        await delay(500 + random() * 1000);
      }
    }
    if (now() < runEnd) await delay(runEnd - now());
  } finally {
    running = false;
    const all = [...clients.values()];
    for (const c of all) {
      c.child.kill("SIGCONT");
      if (c.child.connected) c.child.send({ op: "stop" }, () => {});
    }
    await Promise.all(
      all.map(async (c) => {
        if (await raceTimeout(c.exited, STOP_GRACE_MS)) {
          history.crashes.push({ at: now(), pid: c.pid, description: `did not stop within ${STOP_GRACE_MS} ms` });
          c.expectedExit = true;
          c.child.kill("SIGKILL");
          await c.exited;
        }
      }),
    );
    history.endedAt = now();
    clearInterval(watchdog);
    for (const s of history.sections) {
      if (s.end === undefined) {
        s.end = history.endedAt;
        s.endedBy = "run-end";
      }
    }
    try {
      if (!noop) history.leftHeld = await leftHeld(target.url, namespace, ttlMs);
    } finally {
      await target.stop();
    }
  }
  return history;
}

/** What is still held in `namespace` once every client is gone, after at most two TTLs. */
async function leftHeld(url: string, namespace: string, ttlMs: number): Promise<string[]> {
  const coord = await connect(url, { namespace, memberId: "chaos-inspector" });
  try {
    const deadline = performance.now() + 2 * ttlMs + 5000;
    for (;;) {
      const info = await coord.inspect();
      const held = [...info.locks, ...info.semaphores].flatMap((l) =>
        l.holders.map((h) => `${l.name} token ${h.token} by ${h.memberId}`),
      );
      if (held.length === 0 || performance.now() > deadline) return held;
      await delay(200);
    }
  } finally {
    await coord.close();
  }
}
