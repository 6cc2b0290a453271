/**
 * Real Redis servers for tests, from Debian's redis-server and redis-sentinel (see
 * scripts/ensure-servers.sh): a single server (`startRedis`, persistence on or off) or a
 * Sentinel setup (`startSentinelSetup`: one primary, one replica, three sentinels). Every
 * process gets a free loopback port and a temp directory; logs go to files whose tails are
 * included in startup errors.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { freePort } from "./ports.js";
import { type Proxy as TcpProxy, startProxy } from "./proxy.js";
import { makeTempDir, removeTempDir, retryOnAddressInUse, ServerProcess, waitUntil } from "./proc.js";

const HOST = "127.0.0.1";
const STARTUP_TIMEOUT_MS = 30_000;

export function binary(name: "redis-server" | "redis-sentinel"): string {
  for (const dir of ["/usr/bin", "/usr/local/bin"]) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  return name;
}

/**
 * Sends one inline command and resolves with the first reply line (e.g. "+PONG"), or
 * rejects within `timeoutMs`. Enough for the harness; tests use a real client otherwise.
 */
export function rawCommand(port: number, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port });
    let text = "";
    const done = (error: Error | null, line?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(line ?? "");
    };
    const timer = setTimeout(() => done(new Error(`redis :${port}: no answer to ${command}`)), timeoutMs);
    socket.on("error", (error) => done(error));
    socket.on("data", (chunk) => {
      text += chunk.toString();
      if (text.includes("\r\n")) done(null, text);
    });
    socket.write(`${command}\r\n`);
  });
}

/** One redis-server process with its own port and directory. */
export interface RedisServer {
  readonly port: number;
  /** "redis://127.0.0.1:PORT" */
  readonly url: string;
  readonly dir: string;
  readonly logFile: string;
  readonly pid: number;
  readonly running: boolean;
  /** SIGTERM (redis saves its AOF/RDB if persistence is on), then remove the directory. */
  stop(): Promise<void>;
  /** SIGKILL; keeps the directory. */
  kill(): Promise<void>;
  /** Stops (SIGKILL unless `graceful`) and starts again on the same port and directory. */
  restart(opts?: { graceful?: boolean }): Promise<void>;
  pause(): void;
  resume(): void;
  /** Starts the process again after `kill()`. */
  start(): Promise<void>;
}

export interface StartRedisOptions {
  /** Append-only file with fsync on every write (default false: nothing is saved). */
  readonly persistence?: boolean;
  /** Make it a replica of this port. */
  readonly replicaOf?: number;
  readonly name?: string;
  /** Created in a fresh temp dir if not given. */
  readonly dir?: string;
}

/** redis-server's arguments; `bind` and the primary's address default to 127.0.0.1 (hosts.ts gives others). */
export function serverArgs(
  port: number,
  dir: string,
  opts: StartRedisOptions,
  bind = HOST,
  primaryHost = HOST,
): string[] {
  return [
    "--port",
    String(port),
    "--bind",
    bind,
    "--dir",
    dir,
    "--daemonize",
    "no",
    "--protected-mode",
    "no",
    "--save",
    "",
    "--logfile",
    "",
    ...(opts.persistence ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]),
    ...(opts.replicaOf !== undefined ? ["--replicaof", primaryHost, String(opts.replicaOf)] : []),
  ];
}

export function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer> {
  return retryOnAddressInUse(() => startRedisOnce(opts));
}

async function startRedisOnce(opts: StartRedisOptions): Promise<RedisServer> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? makeTempDir("baton-redis-");
  const port = await freePort();
  const logFile = path.join(dir, `${opts.name ?? "redis"}.log`);
  let proc: ServerProcess | undefined;
  const spawn = async () => {
    proc = new ServerProcess(`redis ${opts.name ?? ""} :${port}`, binary("redis-server"), serverArgs(port, dir, opts), {
      logFile,
      cwd: dir,
    });
    const started = proc;
    await waitUntil(`redis on :${port}`, async () => (await rawCommand(port, "PING", 1000)).startsWith("+PONG"), {
      timeoutMs: STARTUP_TIMEOUT_MS,
      intervalMs: 20,
      procs: [started],
    });
  };
  try {
    await spawn();
  } catch (error) {
    await proc?.kill();
    if (ownDir) removeTempDir(dir);
    throw error;
  }
  let stopped = false;
  return {
    port,
    url: `redis://${HOST}:${port}`,
    dir,
    logFile,
    get pid() {
      return proc!.pid;
    },
    get running() {
      return proc?.running ?? false;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await proc?.stop("SIGTERM", 10_000);
      if (ownDir) removeTempDir(dir);
    },
    kill: async () => {
      await proc?.kill();
    },
    async restart(restartOpts = {}) {
      if (restartOpts.graceful) await proc?.stop("SIGTERM", 10_000);
      else await proc?.kill();
      await spawn();
    },
    pause: () => proc?.signal("SIGSTOP"),
    resume: () => proc?.signal("SIGCONT"),
    start: spawn,
  };
}

/** One primary, one replica and three sentinels watching them. */
export interface SentinelSetup {
  readonly masterName: string;
  readonly primary: RedisServer;
  readonly replica: RedisServer;
  readonly sentinelPorts: readonly number[];
  /** "redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/baton" */
  readonly url: string;
  /** The port the sentinels currently name as the primary (asked of sentinel `ask`, default 0). */
  currentPrimaryPort(ask?: number): Promise<number>;
  /**
   * With `proxied`: the proxies that silence each process, for everyone (clients, sentinels,
   * the replica): `primary` and `replica` are in front of the first primary and replica,
   * `sentinels[i]` in front of sentinel i. Every process announces its proxy's port.
   */
  readonly proxies?: { primary: TcpProxy; replica: TcpProxy; sentinels: readonly TcpProxy[] };
  stop(): Promise<void>;
}

/** Sentinels that decide quickly: down after 1 s, failover timeout 3 s. */
export async function startSentinelSetup(opts: { proxied?: boolean } = {}): Promise<SentinelSetup> {
  const root = makeTempDir("baton-redis-sentinel-");
  const masterName = "baton";
  const procs: ServerProcess[] = [];
  const proxies: TcpProxy[] = [];
  let primary: RedisServer | undefined;
  let replica: RedisServer | undefined;
  /** A proxy in front of `port` when proxied; the port others use to reach it. */
  const front = async (port: number) => {
    if (!opts.proxied) return { port, proxy: undefined };
    const proxy = await startProxy({ host: HOST, port });
    proxies.push(proxy);
    return { port: proxy.port, proxy };
  };
  /** A server announces its proxy as its address (to its primary, hence to the sentinels). */
  const announce = async (server: RedisServer, port: number) => {
    if (!opts.proxied) return;
    await rawCommand(server.port, `CONFIG SET replica-announce-ip ${HOST}`);
    await rawCommand(server.port, `CONFIG SET replica-announce-port ${port}`);
  };
  try {
    fs.mkdirSync(path.join(root, "primary"));
    fs.mkdirSync(path.join(root, "replica"));
    primary = await startRedis({ name: "primary", dir: path.join(root, "primary") });
    const primaryFront = await front(primary.port);
    await announce(primary, primaryFront.port);
    // Proxied, the replica announces its proxy before it replicates: set during the sync
    // handshake, the setting stalled the handshake now and then (about 1 start in 5).
    replica = await startRedis({
      name: "replica",
      dir: path.join(root, "replica"),
      ...(opts.proxied ? {} : { replicaOf: primaryFront.port }),
    });
    const replicaFront = await front(replica.port);
    await announce(replica, replicaFront.port);
    if (opts.proxied) await rawCommand(replica.port, `REPLICAOF ${HOST} ${primaryFront.port}`);
    const primaryPort = primaryFront.port;
    await waitUntil(
      "replica in sync",
      async () => (await rawCommand(replica!.port, "INFO replication")).length > 0 && (await synced(replica!.port)),
      { timeoutMs: STARTUP_TIMEOUT_MS, intervalMs: 50, procs: [] },
    );
    const sentinelPorts: number[] = [];
    const sentinelFronts: TcpProxy[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const sentinelFront = await front(port);
      if (sentinelFront.proxy) sentinelFronts.push(sentinelFront.proxy);
      const dir = path.join(root, `sentinel${i}`);
      fs.mkdirSync(dir);
      const conf = path.join(dir, "sentinel.conf");
      fs.writeFileSync(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          "protected-mode no",
          `dir ${dir}`,
          `sentinel monitor ${masterName} ${HOST} ${primaryPort} 2`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 3000`,
          `sentinel parallel-syncs ${masterName} 1`,
          ...(opts.proxied ? [`sentinel announce-ip ${HOST}`, `sentinel announce-port ${sentinelFront.port}`] : []),
          "",
        ].join("\n"),
      );
      const proc = new ServerProcess(`sentinel ${i}`, binary("redis-sentinel"), [conf], {
        logFile: path.join(dir, "sentinel.log"),
        cwd: dir,
      });
      procs.push(proc);
      sentinelPorts.push(sentinelFront.port);
      await waitUntil(`sentinel on :${port}`, async () => (await rawCommand(port, "PING", 1000)).startsWith("+PONG"), {
        timeoutMs: STARTUP_TIMEOUT_MS,
        intervalMs: 20,
        procs: [proc],
      });
    }
    const setup: SentinelSetup = {
      masterName,
      primary,
      replica,
      sentinelPorts,
      url: `redis+sentinel://${sentinelPorts.map((p) => `${HOST}:${p}`).join(",")}/${masterName}`,
      ...(opts.proxied
        ? { proxies: { primary: primaryFront.proxy!, replica: replicaFront.proxy!, sentinels: sentinelFronts } }
        : {}),
      async currentPrimaryPort(ask = 0) {
        const reply = await rawCommand(sentinelPorts[ask]!, `SENTINEL get-master-addr-by-name ${masterName}`);
        const lines = reply.split("\r\n");
        return Number(lines[4]);
      },
      async stop() {
        await Promise.all(procs.map((p) => p.kill()));
        await Promise.all([primary?.kill(), replica?.kill()]);
        await Promise.all(proxies.map((p) => p.close()));
        removeTempDir(root);
      },
    };
    return setup;
  } catch (error) {
    await Promise.all(procs.map((p) => p.kill()));
    await Promise.all([primary?.kill(), replica?.kill()]);
    await Promise.all(proxies.map((p) => p.close()));
    removeTempDir(root);
    throw error;
  }
}

/** Whether the replica on 127.0.0.1:`port` reports its link to the primary up. */
export async function synced(port: number): Promise<boolean> {
  const socket = await new Promise<string>((resolve, reject) => {
    const s = net.connect({ host: HOST, port });
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error("INFO timed out"));
    }, 2000);
    s.on("error", reject);
    s.on("data", (chunk) => {
      text += chunk.toString();
      if (/master_link_status:\w+/.test(text)) {
        clearTimeout(timer);
        s.destroy();
        resolve(text);
      }
    });
    s.write("INFO replication\r\n");
  });
  return socket.includes("master_link_status:up");
}
