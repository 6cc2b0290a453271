/**
 * A TCP proxy on a free loopback port, for injecting network faults between a
 * client and a real server:
 *
 * - `cut()`   blackholes: nothing is forwarded in either direction, but no
 *             socket is closed (no FIN, no RST), so both ends just see
 *             silence. New connections are accepted and then also ignored.
 * - `heal()`  forwards again for new connections; connections that were
 *             blackholed are destroyed (or resumed with `resumeExisting`).
 * - `reset()` destroys every connection with an RST.
 * - `close()` stops listening and destroys everything.
 *
 * With `latency`, every chunk is held back for a delay per direction (fixed, or uniform in
 * `ms ± jitterMs`), never reordered: a round trip of tens of milliseconds between a client
 * and a server on one machine, as kernel queueing disciplines (netem) are not available.
 */
import net from "node:net";
import { freePort } from "./ports.js";

const HOST = "127.0.0.1";

export interface ProxyTarget {
  host: string;
  port: number;
}

export interface HealOptions {
  /**
   * Resume the connections that were blackholed instead of destroying them
   * (like a healed network partition: data the peers sent meanwhile is
   * delivered late). Default false.
   */
  resumeExisting?: boolean;
}

/** An added one-way delay: `ms`, or uniform in [ms - jitterMs, ms + jitterMs]. */
export interface Delay {
  ms: number;
  jitterMs?: number;
}

/** Added delays per direction: `up` client to server, `down` server to client. */
export interface Latency {
  up?: Delay;
  down?: Delay;
}

export interface ProxyOptions {
  latency?: Latency;
}

function checkDelay(what: string, d: Delay | undefined): void {
  if (d === undefined) return;
  const jitter = d.jitterMs ?? 0;
  if (!Number.isFinite(d.ms) || d.ms < 0 || !Number.isFinite(jitter) || jitter < 0 || jitter > d.ms) {
    throw new RangeError(
      `proxy latency ${what}: ms must be a finite number >= 0 and jitterMs between 0 and ms, got ${JSON.stringify(d)}`,
    );
  }
}

export interface Proxy {
  readonly port: number;
  /** "127.0.0.1:PORT" */
  readonly address: string;
  readonly host: string;
  readonly target: ProxyTarget;
  /** Whether the proxy is currently cut. */
  readonly isCut: boolean;
  /** Number of accepted client connections currently open. */
  readonly connectionCount: number;
  /** Total client connections accepted so far. */
  readonly acceptedCount: number;
  cut(): void;
  heal(opts?: HealOptions): void;
  /** Changes the added latency for what is sent from now on (`{}`: none). */
  setLatency(latency: Latency): void;
  reset(): void;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  /** Forwarding handlers installed (upstream connected while not cut). */
  wired: boolean;
  blackholed: boolean;
}

export async function startProxy(target: ProxyTarget, options: ProxyOptions = {}): Promise<Proxy> {
  const pairs = new Set<Pair>();
  let latency: Latency = {};
  const setLatency = (l: Latency): void => {
    checkDelay("up", l.up);
    checkDelay("down", l.down);
    latency = { ...l };
  };
  setLatency(options.latency ?? {});
  const delayOf = (d: Delay | undefined): number =>
    d === undefined ? 0 : d.ms + (d.jitterMs ? (Math.random() * 2 - 1) * d.jitterMs : 0);
  let cut = false;
  let accepted = 0;
  let closed = false;

  const blackhole = (pair: Pair): void => {
    pair.blackholed = true;
    pair.client.pause();
    pair.upstream?.pause();
  };

  const destroyPair = (pair: Pair, rst: boolean): void => {
    pairs.delete(pair);
    for (const s of [pair.client, pair.upstream]) {
      if (s === undefined || s.destroyed) continue;
      if (rst) s.resetAndDestroy();
      else s.destroy();
    }
  };

  /**
   * Forward `from` -> `to`, respecting backpressure and the blackhole flag; with a delay
   * for the direction, each chunk (and the end) goes out at its time, in order.
   */
  const forward = (pair: Pair, from: net.Socket, to: net.Socket, direction: "up" | "down"): void => {
    // One queue and one timer per direction: chunks leave in order, never before their time.
    const queue: { at: number; fn: () => void }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const drain = (): void => {
      timer = undefined;
      while (queue.length > 0 && (queue[0] as { at: number }).at <= performance.now()) queue.shift()?.fn();
      const head = queue[0];
      if (head !== undefined) timer = setTimeout(drain, Math.max(1, Math.ceil(head.at - performance.now())));
    };
    const later = (fn: () => void): void => {
      const ms = delayOf(latency[direction]);
      if (ms <= 0 && queue.length === 0) {
        fn();
        return;
      }
      const at = Math.max(queue.at(-1)?.at ?? 0, performance.now() + ms);
      queue.push({ at, fn });
      if (timer === undefined) timer = setTimeout(drain, Math.max(1, Math.ceil(at - performance.now())));
    };
    from.on("data", (chunk: Buffer) => {
      if (pair.blackholed) {
        // Read before pause() took effect: push it back, so it is delivered
        // if the connection is resumed and dropped if it is destroyed.
        from.pause();
        from.unshift(chunk);
        return;
      }
      later(() => {
        if (to.destroyed) return;
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => {
            if (!pair.blackholed) from.resume();
          });
        }
      });
    });
    from.on("end", () => {
      later(() => {
        if (!pair.blackholed && !to.destroyed) to.end();
      });
    });
    from.on("close", () => {
      if (pair.blackholed) return; // silence: the other side learns nothing
      pairs.delete(pair);
      const errored = from.errored;
      // After the chunks still held back by a delay.
      later(() => {
        if (to.destroyed) return;
        // Mirror an RST as an RST; a clean close was already mirrored by end().
        if (errored) to.resetAndDestroy();
        else to.end();
      });
    });
  };

  const wire = (pair: Pair, upstream: net.Socket): void => {
    pair.wired = true;
    forward(pair, pair.client, upstream, "up");
    forward(pair, upstream, pair.client, "down");
    pair.client.resume();
    upstream.resume();
  };

  const connectUpstream = (pair: Pair): void => {
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    pair.upstream = upstream;
    upstream.on("error", () => {
      // Before connecting: refuse the client like the target refused us.
      // After: handled by forward()'s close handler.
      if (!pair.wired && !pair.blackholed) {
        pairs.delete(pair);
        pair.client.resetAndDestroy();
      }
    });
    upstream.once("connect", () => {
      if (pair.blackholed) upstream.pause();
      else wire(pair, upstream);
    });
  };

  // noDelay: Nagle on the proxy's own sockets held small writes back for the peer's delayed
  // ACK (40 ms a request on gRPC), a delay no real network path adds.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    accepted++;
    const pair: Pair = { client, upstream: undefined, wired: false, blackholed: false };
    pairs.add(pair);
    client.on("error", () => {});
    client.once("close", () => {
      if (pair.blackholed) return;
      pairs.delete(pair);
      if (!pair.wired) pair.upstream?.destroy();
    });
    if (closed) {
      destroyPair(pair, false);
    } else if (cut) {
      // Accept but never forward; the client socket stays paused.
      pair.blackholed = true;
    } else {
      connectUpstream(pair);
    }
  });

  const port = await listen(server);

  const proxy: Proxy = {
    port,
    address: `${HOST}:${port}`,
    host: HOST,
    target: { ...target },
    get isCut() {
      return cut;
    },
    get connectionCount() {
      return pairs.size;
    },
    get acceptedCount() {
      return accepted;
    },
    cut() {
      cut = true;
      for (const pair of pairs) blackhole(pair);
    },
    heal(opts: HealOptions = {}) {
      cut = false;
      for (const pair of [...pairs]) {
        if (!pair.blackholed) continue;
        if (!opts.resumeExisting) {
          destroyPair(pair, false);
          continue;
        }
        pair.blackholed = false;
        const upstream = pair.upstream;
        if (pair.client.destroyed || upstream?.destroyed) {
          destroyPair(pair, true);
        } else if (upstream === undefined) {
          connectUpstream(pair); // accepted while cut
        } else if (upstream.connecting) {
          // the connect handler wires it up
        } else if (!pair.wired) {
          wire(pair, upstream);
        } else {
          pair.client.resume();
          upstream.resume();
        }
      }
    },
    setLatency,
    reset() {
      for (const pair of [...pairs]) destroyPair(pair, true);
    },
    async close() {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const pair of [...pairs]) destroyPair(pair, false);
      await done;
    },
  };
  return proxy;
}

async function listen(server: net.Server): Promise<number> {
  // freePort() can race with other processes; retry on EADDRINUSE.
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: HOST, port }, () => {
          server.off("error", reject);
          resolve();
        });
      });
      return port;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt >= 5) throw err;
    }
  }
}
