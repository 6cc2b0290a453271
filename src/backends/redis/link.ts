/**
 * The connection to Redis, one shape for a single server and for a Sentinel-managed
 * primary: commands and scripts on one connection (in order, so two calls from this
 * process reach the server in call order), pub/sub on another. Every command is bounded
 * by the request timeout; connections reconnect on their own, and every time the pub/sub
 * side comes back `onResubscribed` listeners run, since messages sent meanwhile are lost.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createClient, type RedisClientOptions } from "redis";
import { BackendUnavailableError } from "../../core/errors.js";
import { COMMAND_CLIENT, type RedisConfig, SUB_CLIENT } from "./config.js";
import { BACKEND, translate } from "./errors.js";
import type { Script } from "./lua.js";
import { followPrimary } from "./sentinel.js";

type Args = readonly string[];
type Listener = (message: string) => void;

/** A connected Redis (or Sentinel-managed primary). */
export interface Link {
  /** One command, bounded by the request timeout. */
  command(args: Args): Promise<unknown>;
  /** Runs a script by its SHA-1, sending its text only when the server does not know it. */
  run(script: Script, args: Args): Promise<unknown>;
  subscribe(channel: string, listener: Listener): Promise<void>;
  unsubscribe(channel: string, listener: Listener): Promise<void>;
  /** Registers `fn` to run after every resubscription; returns its removal. */
  onResubscribed(fn: () => void): () => void;
  close(): Promise<void>;
}

/** The subset of node-redis both client kinds offer, as the link uses it. */
interface Ends {
  /** Unbounded: the link bounds every command itself. */
  send(args: Args, timeoutMs: number): Promise<unknown>;
  subscribe(channel: string, listener: Listener): Promise<unknown>;
  unsubscribe(channel: string, listener: Listener): Promise<unknown>;
  close(): Promise<void>;
}

const shas = new WeakMap<Script, string>();
function sha(script: Script): string {
  let hash = shas.get(script);
  if (!hash) shas.set(script, (hash = createHash("sha1").update(script.source).digest("hex")));
  return hash;
}

/** A command in flight, for the timeout sweep. */
interface InFlight {
  readonly sentAt: number;
  readonly reject: (error: Error) => void;
}

class RedisLink implements Link {
  readonly #ends: Ends;
  readonly #timeoutMs: number;
  readonly #resubscribed = new Set<() => void>();
  /**
   * Commands in flight, oldest first. One sweeping timer bounds them all: a timer per
   * command (node-redis's own `timeout`) costs more than the round trip on loopback.
   */
  readonly #inFlight = new Set<InFlight>();
  #sweep: NodeJS.Timeout | null = null;

  constructor(ends: Ends, timeoutMs: number) {
    this.#ends = ends;
    this.#timeoutMs = timeoutMs;
  }

  command(args: Args): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const entry: InFlight = { sentAt: performance.now(), reject };
      this.#inFlight.add(entry);
      this.#armSweep();
      this.#ends.send(args, 0).then(
        (value) => {
          this.#inFlight.delete(entry);
          resolve(value);
        },
        (error: unknown) => {
          this.#inFlight.delete(entry);
          reject(error);
        },
      );
    });
  }

  #armSweep(): void {
    if (this.#sweep) return;
    const period = Math.max(25, Math.floor(this.#timeoutMs / 4));
    this.#sweep = setInterval(() => {
      const limit = performance.now() - this.#timeoutMs;
      for (const entry of this.#inFlight) {
        if (entry.sentAt > limit) break; // insertion order: the rest are younger
        this.#inFlight.delete(entry);
        entry.reject(
          new BackendUnavailableError(`Redis did not answer within ${this.#timeoutMs} ms`, { backend: BACKEND }),
        );
      }
      if (this.#inFlight.size === 0 && this.#sweep) {
        clearInterval(this.#sweep);
        this.#sweep = null;
      }
    }, period);
    this.#sweep.unref();
  }

  run(script: Script, args: Args): Promise<unknown> {
    // Not async: one promise fewer between the reply and its caller.
    return this.command(["EVALSHA", sha(script), "0", ...args]).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return this.command(["EVAL", script.source, "0", ...args]);
    });
  }

  async subscribe(channel: string, listener: Listener): Promise<void> {
    await withTimeout(this.#ends.subscribe(channel, listener), this.#timeoutMs, `subscribing to ${channel}`);
  }

  async unsubscribe(channel: string, listener: Listener): Promise<void> {
    await withTimeout(this.#ends.unsubscribe(channel, listener), this.#timeoutMs, `unsubscribing ${channel}`);
  }

  onResubscribed(fn: () => void): () => void {
    this.#resubscribed.add(fn);
    return () => this.#resubscribed.delete(fn);
  }

  resubscribed(): void {
    for (const fn of [...this.#resubscribed]) fn();
  }

  close(): Promise<void> {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = null;
    return this.#ends.close();
  }
}

/** Connects; rejects with `BackendUnavailableError` when the server does not answer. */
export async function openLink(config: RedisConfig): Promise<Link> {
  const where = config.nodes.map((n) => `${n.host}:${n.port}`).join(",");
  let everReady = false;
  const socket = {
    connectTimeout: config.requestTimeoutMs,
    // Before the first connection, fail (connect() rejects); afterwards retry for ever,
    // quickly: a session needs its keep-alives through within a third of its TTL.
    reconnectStrategy: (retries: number, cause: Error) => (everReady ? Math.min(50 * 2 ** retries, 500) : cause),
    ...(config.tls ? { tls: true as const, ...(config.ca ? { ca: config.ca } : {}) } : {}),
  };
  const auth = {
    ...(config.username !== undefined ? { username: config.username } : {}),
    ...(config.password !== undefined ? { password: config.password } : {}),
  };
  let link: RedisLink;
  let ends: Ends;
  if (config.masterName !== undefined) {
    // Not node-redis's Sentinel client: one silent sentinel stalls it (see sentinel.ts).
    let resubscribed = () => {};
    const followed = await followPrimary(config, {
      socket,
      auth,
      onResubscribed: () => resubscribed(),
      timed: withTimeout,
      shut,
    }).catch((error: unknown) => {
      throw translate(error, `connecting to Redis through Sentinel at ${where} (master ${config.masterName})`);
    });
    ends = followed;
    link = new RedisLink(ends, config.requestTimeoutMs);
    resubscribed = () => link.resubscribed();
  } else {
    const node = config.nodes[0]!;
    const options: RedisClientOptions = {
      ...auth,
      ...COMMAND_CLIENT,
      database: config.database,
      socket: { ...socket, host: node.host, port: node.port },
    } as RedisClientOptions;
    const main = createClient(options);
    const sub = main.duplicate(SUB_CLIENT);
    main.on("error", () => {});
    sub.on("error", () => {});
    ends = {
      send: (args) => main.sendCommand(args as string[]),
      subscribe: (channel, listener) => sub.subscribe(channel, listener),
      unsubscribe: (channel, listener) => sub.unsubscribe(channel, listener),
      close: async () => {
        await Promise.all([shut(main, config.requestTimeoutMs), shut(sub, config.requestTimeoutMs)]);
      },
    };
    link = new RedisLink(ends, config.requestTimeoutMs);
    let subReady = 0;
    sub.on("ready", () => {
      if (subReady++ === 0) return;
      // node-redis resubscribes as the connection comes back; a PING queued behind those
      // SUBSCRIBEs answers once they are in effect.
      void sub
        .sendCommand(["PING"], { timeout: config.requestTimeoutMs })
        .catch(() => {})
        .then(() => link.resubscribed());
    });
    try {
      await withTimeout(Promise.all([main.connect(), sub.connect()]), 2 * config.requestTimeoutMs, "connecting");
    } catch (error) {
      main.destroy();
      sub.destroy();
      throw translate(error, `connecting to Redis at ${where}`);
    }
  }
  everReady = true;
  return link;
}

/**
 * Closes a client gracefully when it is connected; destroys it when it is not (node-redis
 * would wait for a reconnection that may never come) or when closing takes too long.
 */
async function shut(
  client: { isReady: boolean; close(): Promise<unknown>; destroy(): void },
  ms: number,
): Promise<void> {
  if (!client.isReady) {
    client.destroy();
    return;
  }
  try {
    await withTimeout(client.close(), ms, "closing");
  } catch {
    client.destroy();
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BackendUnavailableError(`${what}: Redis did not answer within ${ms} ms`, { backend: BACKEND })),
      ms,
    );
    timer.unref();
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
