/**
 * A chaos client: a real process looping acquire -> register op -> hold -> late register op
 * -> release, reporting each step to the runner over the IPC channel and waiting for its
 * answer, so the runner's stamps fall inside the real hold (`begin` after the grant, `end`
 * before the release). It writes its late write even when its signal aborted: it plays the
 * naive client the fencing token is there to protect against.
 *
 *   node --import tsx client.ts <json ClientConfig>   (forked with an IPC channel)
 *
 * With `noop` it takes no locks at all and makes tokens up: the negative control.
 */
import { type Coordinator, connect, type LockHandle } from "../../src/index.js";
import { mulberry32 } from "./rng.js";

/** What the runner gives each client. */
export interface ClientConfig {
  url: string;
  namespace: string;
  seed: number;
  ttlMs: number;
  noop: boolean;
  locks: string[];
  semaphore: string;
  semaphoreLimit: number;
  acquireTimeoutMs: number;
  holdMs: [number, number];
  /** The share of shared holders that upgrade to exclusive (a new section, a new token). */
  upgradeShare?: number;
}

const config = JSON.parse(process.argv[2] ?? "") as ClientConfig;
const random = mulberry32(config.seed);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let nextId = 0;
const pending = new Map<number, (reply: Record<string, unknown>) => void>();
let stopping = false;
/**
 * Set by the runner when it cut this client off: hold on until the signal says the lock is
 * lost, and with `untilHeal` (partitions) on until the network heals, so that the late write
 * reaches the register after the majority side may have granted the lock again.
 */
let stretched = false;
let untilHeal = false;
let healSeen = false;
let wake: () => void = () => {};
let poke: () => void = () => {};
process.on("message", (message: Record<string, unknown>) => {
  if (message.op === "stop") stopping = true;
  else if (message.op === "stretch") {
    stretched = true;
    untilHeal = message.untilHeal === true;
    healSeen = false;
    wake();
  } else if (message.op === "healed") {
    healSeen = true;
    poke();
  } else pending.get(message.id as number)?.(message);
});
// A runner that died takes its clients with it.
process.on("disconnect", () => process.exit(0));

function rpc(message: Record<string, unknown>): Promise<Record<string, unknown>> {
  const id = ++nextId;
  return new Promise((resolve) => {
    pending.set(id, (reply) => {
      pending.delete(id);
      resolve(reply);
    });
    process.send?.({ id, ...message });
  });
}

/** How long a client keeps retrying a connect that fails as unavailable before it gives up. */
const CONNECT_BUDGET_MS = 30_000;

/**
 * Connecting is not under test: on a loaded machine the first call can miss a short TTL's
 * deadline (or a member can be cut, or a split in force), and connect() then rejects with
 * BackendUnavailableError, as documented. Each failure is journaled and retried, backing
 * off, for longer than any fault lasts; a stop ends the retries. Any other error, or one
 * that outlasts the budget, still crashes the client: the checker fails the run on it.
 */
async function connectRetrying(): Promise<Coordinator | undefined> {
  const giveUp = Date.now() + CONNECT_BUDGET_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await connect(config.url, {
        namespace: config.namespace,
        ttlMs: config.ttlMs,
        memberId: `chaos-${process.pid}`,
      });
    } catch (error) {
      // By code, as the API says to check: a backend may raise a subclass (MySQL's lost
      // connection is one), whose name is its own.
      if ((error as { code?: unknown }).code !== "BACKEND_UNAVAILABLE" || Date.now() > giveUp) throw error;
      await rpc({ op: "error", message: `connect: ${(error as Error).name}: ${(error as Error).message}` });
      if (stopping) return undefined;
      await sleep(Math.min(1000, 100 * 2 ** Math.min(attempt, 4)));
    }
  }
}

const coord = config.noop ? undefined : await connectRetrying();
if (!config.noop && coord === undefined) {
  // Stopped before it ever connected: nothing to release.
  await rpc({ op: "bye" });
  process.exit(0);
}
// Unique per client (pid-prefixed) so the control fails on overlaps and order, not only duplicates.
let fakeToken = BigInt(process.pid) * 1_000_000n;

async function acquire(name: string, mode: "exclusive" | "shared" | "semaphore"): Promise<LockHandle | bigint> {
  if (coord === undefined) return ++fakeToken;
  const timeoutMs = config.acquireTimeoutMs;
  if (mode === "semaphore") return coord.semaphore(name, { limit: config.semaphoreLimit }).acquire({ timeoutMs });
  return coord.lock(name).acquire({ mode, timeoutMs });
}

/**
 * Shared -> exclusive: the shared section ends once the upgrade is granted and an exclusive
 * one with the new token begins (the gap between the two stamps is inside the real hold).
 * On failure the shared section ends as usual.
 */
async function upgrade(handle: LockHandle, name: string, shared: unknown): Promise<void> {
  await rpc({ op: "upgrading", section: shared });
  try {
    await handle.upgrade({ timeoutMs: config.acquireTimeoutMs });
  } catch (error) {
    await rpc({ op: "error", message: `upgrade ${name}: ${(error as Error).name}: ${(error as Error).message}` });
    await rpc({ op: "end", section: shared, lost: handle.signal.aborted });
    await handle.release();
    return;
  }
  await rpc({ op: "end", section: shared, lost: handle.signal.aborted });
  const { section } = await rpc({ op: "begin", name, mode: "exclusive", token: String(handle.token) });
  let lost = handle.signal.aborted;
  if (!lost) {
    handle.signal.addEventListener(
      "abort",
      () => {
        lost = true;
        void rpc({ op: "lost", section });
      },
      { once: true },
    );
  } else await rpc({ op: "lost", section });
  await rpc({ op: "write", section, name, token: String(handle.token) });
  await sleep(config.holdMs[0] + random() * (config.holdMs[1] - config.holdMs[0]));
  await rpc({ op: "write", section, name, token: String(handle.token) });
  await rpc({ op: "end", section, lost });
  await handle.release();
}

/** Resolves once `done()` holds (checked on every poke) or after `ms`. */
async function until(done: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, end - Date.now());
      poke = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

await rpc({ op: "ready" });
while (!stopping) {
  // A stretch that found nothing held is over once the network healed.
  if (healSeen) stretched = untilHeal = false;
  const roll = random();
  const mode = roll < 0.7 ? "exclusive" : roll < 0.85 ? "shared" : "semaphore";
  const name = mode === "semaphore" ? config.semaphore : pick(config.locks);
  let handle: LockHandle | bigint;
  try {
    handle = await acquire(name, mode);
  } catch (error) {
    await rpc({ op: "error", message: `${mode} ${name}: ${(error as Error).name}: ${(error as Error).message}` });
    await sleep(20 + random() * 30);
    continue;
  }
  const token = typeof handle === "bigint" ? handle : handle.token;
  let lost = false;
  const { section } = await rpc({ op: "begin", name, mode, token: String(token) });
  if (typeof handle !== "bigint") {
    const onAbort = () => {
      lost = true;
      void rpc({ op: "lost", section });
    };
    if (handle.signal.aborted) onAbort();
    else handle.signal.addEventListener("abort", onAbort, { once: true });
  }
  const registerOp = mode === "exclusive" ? "write" : mode === "shared" ? "read" : undefined;
  if (registerOp) await rpc({ op: registerOp, section, name, token: String(token) });
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, config.holdMs[0] + random() * (config.holdMs[1] - config.holdMs[0]));
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  if (stretched && typeof handle !== "bigint") {
    // Cut off from the backend, this client keeps working until its signal aborts, as it
    // should: the backend must not grant the lock to anyone before that. A split that
    // heals first (shorter than the TTL) ends the wait too: the lock was never lost.
    const signal = handle.signal;
    signal.addEventListener("abort", () => poke(), { once: true });
    await until(() => signal.aborted || healSeen, 3 * config.ttlMs);
    if (untilHeal) await until(() => healSeen, 10_000);
  }
  stretched = false;
  untilHeal = false;
  if (mode === "shared" && typeof handle !== "bigint" && !lost && random() < (config.upgradeShare ?? 0)) {
    await upgrade(handle, name, section);
    continue;
  }
  if (registerOp === "write") await rpc({ op: "write", section, name, token: String(token) });
  await rpc({ op: "end", section, lost });
  if (typeof handle !== "bigint") await handle.release();
}
await coord?.close();
await rpc({ op: "bye" });
process.exit(0);
