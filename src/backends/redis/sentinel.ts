/**
 * Following a Sentinel-managed primary without letting one silent sentinel stall
 * everything. node-redis's own Sentinel client holds every command while it re-reads the
 * topology, and reads it from the first sentinel that accepts a connection: a sentinel cut
 * off by a failed switch accepts nothing but never answers either, so every command of
 * every client waited behind it (0 grants/s, every session lost; issue 20). Here commands
 * go straight to the primary's connections, and the primary's address is asked of every
 * sentinel at once, twice a second, each answer bounded: the first sentinel that answers
 * names the primary, a silent one is simply not heard. When the name changes, new
 * connections are opened to the new primary, the subscriptions moved to them, and only
 * then are the old ones dropped.
 *
 * @module
 */
import { createClient, type RedisClientOptions } from "redis";
import { BackendUnavailableError } from "../../core/errors.js";
import { COMMAND_CLIENT, type RedisConfig, SUB_CLIENT } from "./config.js";
import { BACKEND } from "./errors.js";

type Listener = (message: string) => void;
type Client = ReturnType<typeof createClient>;

/** How often the sentinels are asked: a promotion is followed within about this long. */
const SCAN_MS = 500;

/** The primary's two connections, and what the link needs of them. */
export interface SentinelEnds {
  send(args: readonly string[]): Promise<unknown>;
  subscribe(channel: string, listener: Listener): Promise<unknown>;
  unsubscribe(channel: string, listener: Listener): Promise<unknown>;
  close(): Promise<void>;
}

interface Primary {
  readonly address: string;
  readonly main: Client;
  readonly sub: Client;
}

/**
 * Finds the primary through the sentinels and follows it. `socket` are the connection
 * options of every client, `auth` those of the primary's.
 */
export async function followPrimary(
  config: RedisConfig,
  how: {
    readonly socket: object;
    readonly auth: object;
    /** Runs once subscriptions are in effect on a new connection (messages meanwhile are lost). */
    readonly onResubscribed: () => void;
    readonly timed: <T>(promise: Promise<T>, ms: number, what: string) => Promise<T>;
    readonly shut: (client: Client, ms: number) => Promise<void>;
  },
): Promise<SentinelEnds> {
  const { socket, auth, timed, shut } = how;
  const name = config.masterName as string;
  const askMs = Math.min(1000, config.requestTimeoutMs);
  const sentinels = config.nodes.map((n) => {
    const client = createClient({ socket: { ...socket, host: n.host, port: n.port } } as RedisClientOptions);
    client.on("error", () => {});
    return { client, connecting: null as Promise<unknown> | null };
  });
  const subscriptions = new Map<string, Set<Listener>>();
  let closed = false;

  /** The primary's address as the first sentinel to answer names it. */
  const ask = (): Promise<string> =>
    Promise.any(
      sentinels.map(async (s) => {
        s.connecting ??= s.client.connect().catch((error: unknown) => {
          s.connecting = null;
          throw error;
        });
        await timed(s.connecting, askMs, "connecting to a sentinel");
        const reply = (await timed(
          s.client.sendCommand(["SENTINEL", "get-master-addr-by-name", name]),
          askMs,
          "asking a sentinel",
        )) as [string, string] | null;
        if (!reply) throw new Error(`the sentinel knows no master ${name}`);
        return `${reply[0]}:${reply[1]}`;
      }),
    );

  const open = async (address: string): Promise<Primary> => {
    const colon = address.lastIndexOf(":");
    const host = address.slice(0, colon);
    const port = Number(address.slice(colon + 1));
    const main = createClient({ ...auth, ...COMMAND_CLIENT, socket: { ...socket, host, port } } as RedisClientOptions);
    const sub = main.duplicate(SUB_CLIENT);
    main.on("error", () => {});
    sub.on("error", () => {});
    let ready = 0;
    sub.on("ready", () => {
      if (ready++ === 0) return;
      // Back on the same primary: node-redis resubscribes; a PING behind that answers once
      // the subscriptions are in effect.
      void sub
        .sendCommand(["PING"])
        .catch(() => {})
        .then(() => how.onResubscribed());
    });
    try {
      await timed(Promise.all([main.connect(), sub.connect()]), 2 * config.requestTimeoutMs, "connecting");
      for (const [channel, listeners] of subscriptions) {
        for (const listener of listeners) await sub.subscribe(channel, listener);
      }
    } catch (error) {
      main.destroy();
      sub.destroy();
      throw error;
    }
    return { address, main, sub };
  };

  let primary: Primary;
  try {
    primary = await open(await timed(ask(), 2 * config.requestTimeoutMs, "asking the sentinels"));
  } catch (error) {
    for (const s of sentinels) s.client.destroy();
    throw error instanceof AggregateError
      ? new BackendUnavailableError(`no sentinel named the primary of ${name}`, { backend: BACKEND, cause: error })
      : error;
  }

  let scanning = false;
  const scan = async () => {
    if (scanning || closed) return;
    scanning = true;
    try {
      const address = await ask();
      if (address === primary.address || closed) return;
      const next = await open(address);
      const old = primary;
      primary = next;
      old.main.destroy();
      old.sub.destroy();
      how.onResubscribed();
    } catch {
      // No sentinel answered, or the named primary did not: ask again at the next scan.
    } finally {
      scanning = false;
    }
  };
  const timer = setInterval(() => void scan(), SCAN_MS);
  timer.unref();

  return {
    send: (args) => primary.main.sendCommand(args as string[]),
    async subscribe(channel, listener) {
      let listeners = subscriptions.get(channel);
      if (!listeners) subscriptions.set(channel, (listeners = new Set()));
      listeners.add(listener);
      return primary.sub.subscribe(channel, listener);
    },
    async unsubscribe(channel, listener) {
      const listeners = subscriptions.get(channel);
      listeners?.delete(listener);
      if (listeners?.size === 0) subscriptions.delete(channel);
      return primary.sub.unsubscribe(channel, listener);
    },
    async close() {
      closed = true;
      clearInterval(timer);
      for (const s of sentinels) s.client.destroy();
      await Promise.all([shut(primary.main, config.requestTimeoutMs), shut(primary.sub, config.requestTimeoutMs)]);
    },
  };
}
