/**
 * Real ZooKeeper servers for tests, from Debian's `zookeeper` package (see
 * scripts/ensure-servers.sh): a standalone server (`startZooKeeper`) or a 3-member
 * ensemble (`startZooKeeperEnsemble`). Each member runs QuorumPeerMain straight from the
 * package's jars with a zoo.cfg written to a temp dir: free loopback ports, tickTime 100 ms
 * (sessions may be as short as 200 ms; the suites use about 2-4 s), no admin server, no
 * four-letter words. Logs go to a file (slf4j-simple), whose tail is in startup errors and
 * from which the ensemble's leader is read ("Peer state changed: leading").
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { Gateway, Host } from "./hosts.js";
import { freePort } from "./ports.js";
import { type Proxy as TcpProxy, startProxy } from "./proxy.js";
import { makeTempDir, removeTempDir, retryOnAddressInUse, ServerProcess, waitUntil } from "./proc.js";

const HOST = "127.0.0.1";
const STARTUP_TIMEOUT_MS = 60_000;
const TICK_MS = 100;
const CLASSPATH = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"].join(":");
const JVM = [
  // A ceiling, not a reservation (the serial collector grows the heap only as needed): the
  // bench's 100,000 tracked locks are about 300,000 znodes, which ran 192 MiB out of heap.
  "-Xmx768m",
  "-XX:+UseSerialGC",
  "-XX:TieredStopAtLevel=1",
  "-Xshare:auto",
  "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
  "-Dorg.slf4j.simpleLogger.showDateTime=true",
  "-Dzookeeper.jmx.log4j.disable=true",
  // Empty containers are removed within a second, so "no litter" is observable in tests.
  "-Dznode.container.checkIntervalMs=500",
  "-Dzookeeper.admin.enableServer=false",
];

/** One member's settings; `host` (hosts.ts) runs it inside that host, on its address. */
export interface MemberConfig {
  readonly id: number;
  readonly host?: Host;
  readonly dir: string;
  readonly clientPort: number;
  readonly quorumPort: number;
  readonly electionPort: number;
}

/** One ZooKeeper process; restartable on the same ports and data. */
export class ZooKeeperMember {
  #proc: ServerProcess | undefined;
  readonly #cfg: MemberConfig;
  readonly #peers: readonly MemberConfig[];

  readonly #proxies: TcpProxy[];
  readonly #clientAddress: string;

  /**
   * `links`: this member's view of its peers' quorum and election ports (proxies, in a
   * proxied ensemble); `proxies`: every proxy a `cut()` silences (its client proxy and the
   * peer links into and out of it).
   */
  constructor(
    cfg: MemberConfig,
    peers: readonly MemberConfig[],
    minSessionTimeoutMs = 2 * TICK_MS,
    wiring: {
      links?: ReadonlyMap<number, { quorumPort: number; electionPort: number }>;
      proxies?: TcpProxy[];
      clientPort?: number;
    } = {},
  ) {
    this.#cfg = cfg;
    this.#peers = peers;
    this.#proxies = wiring.proxies ?? [];
    this.#clientAddress = `${cfg.host?.address ?? HOST}:${wiring.clientPort ?? cfg.clientPort}`;
    fs.mkdirSync(path.join(cfg.dir, "data"), { recursive: true });
    if (peers.length > 1) fs.writeFileSync(path.join(cfg.dir, "data", "myid"), `${cfg.id}\n`);
    const lines = [
      `tickTime=${TICK_MS}`,
      // A leader elected in a round its followers missed waits initLimit for them before a new
      // election (seen after a silent leader cut): keep that short.
      "initLimit=20",
      "syncLimit=20",
      `dataDir=${path.join(cfg.dir, "data")}`,
      `clientPort=${cfg.clientPort}`,
      `clientPortAddress=${cfg.host?.address ?? HOST}`,
      "admin.enableServer=false",
      // wchs only: tests count the watches a server holds (a leaked watch stays there).
      "4lw.commands.whitelist=wchs",
      `minSessionTimeout=${minSessionTimeoutMs}`,
      "maxSessionTimeout=60000",
      "maxClientCnxns=0",
      "autopurge.purgeInterval=0",
      "forceSync=no",
      ...(peers.length > 1
        ? peers.map((p) => {
            const link = p.id === cfg.id ? undefined : wiring.links?.get(p.id);
            const at = p.host?.address ?? HOST;
            return `server.${p.id}=${at}:${link?.quorumPort ?? p.quorumPort}:${link?.electionPort ?? p.electionPort}`;
          })
        : ["standaloneEnabled=true"]),
    ];
    fs.writeFileSync(this.configFile, `${lines.join("\n")}\n`);
  }

  get id(): number {
    return this.#cfg.id;
  }
  get clientPort(): number {
    return this.#cfg.clientPort;
  }
  /** Where clients connect: its client proxy in a proxied ensemble. */
  get address(): string {
    return this.#clientAddress;
  }
  get logFile(): string {
    return path.join(this.#cfg.dir, "zookeeper.log");
  }
  get configFile(): string {
    return path.join(this.#cfg.dir, "zoo.cfg");
  }
  get running(): boolean {
    return this.#proc?.running ?? false;
  }
  get pid(): number {
    if (!this.#proc) throw new Error(`zookeeper ${this.id}: never started`);
    return this.#proc.pid;
  }
  get process(): ServerProcess | undefined {
    return this.#proc;
  }

  spawn(): ServerProcess {
    if (this.#proc?.running) throw new Error(`zookeeper ${this.id}: already running`);
    fs.appendFileSync(this.logFile, "\n[harness] starting\n");
    const args = [...JVM, "-cp", CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain", this.configFile];
    const opts = { logFile: this.logFile, cwd: this.#cfg.dir };
    const host = this.#cfg.host;
    this.#proc = host
      ? host.spawn(`zookeeper ${this.id}`, "java", args, opts)
      : new ServerProcess(`zookeeper ${this.id}`, "java", args, opts);
    return this.#proc;
  }

  /** Waits until it serves clients (in an ensemble: until it has joined a quorum). */
  async waitServing(timeoutMs = STARTUP_TIMEOUT_MS): Promise<void> {
    const proc = this.#proc;
    if (!proc) throw new Error(`zookeeper ${this.id}: not started`);
    const port = await this.localPort();
    await waitUntil(`zookeeper ${this.id} on ${this.address}`, () => serves(port), {
      timeoutMs,
      intervalMs: 100,
      procs: [proc],
    });
  }

  #gateway: Gateway | undefined;
  /** Its client port as the test process reaches it (through a gateway when in a host). */
  async localPort(): Promise<number> {
    const host = this.#cfg.host;
    if (host === undefined) return this.#cfg.clientPort;
    this.#gateway ??= await host.gateway(this.#cfg.clientPort);
    return this.#gateway.port;
  }

  /** Closes the gateway, if any (the hosts' close() does too). */
  async closeGateway(): Promise<void> {
    await this.#gateway?.close();
    this.#gateway = undefined;
  }

  async start(): Promise<void> {
    this.spawn();
    await this.waitServing();
  }

  /** Whether its log says it leads and serves (broadcast phase), since its last start. */
  leads(): boolean {
    const text = fs.readFileSync(this.logFile, "utf8");
    const since = text.slice(text.lastIndexOf("[harness] starting"));
    // "leading" alone is still in discovery (a leader elected by a minority that is waiting
    // out initLimit for followers that will never come); only "broadcast" serves.
    const states = [...since.matchAll(/Peer state changed: ([\w -]+)/g)].map((m) => m[1]?.trim());
    return states.at(-1) === "leading - broadcast";
  }

  async stop(): Promise<void> {
    await this.#proc?.stop("SIGTERM", 10_000);
  }
  async kill(): Promise<void> {
    await this.#proc?.kill();
  }
  pause(): void {
    this.#proc?.signal("SIGSTOP");
  }
  resume(): void {
    this.#proc?.signal("SIGCONT");
  }
  /**
   * Silences it (a proxied ensemble only): nothing reaches it or leaves it, from clients or
   * peers, but no connection is closed, as when a switch fails or a VM freezes.
   */
  cut(): void {
    if (this.#proxies.length === 0) throw new Error(`zookeeper ${this.id}: cut() needs a proxied ensemble`);
    for (const proxy of this.#proxies) proxy.cut();
  }
  /** Ends a `cut()`: the silenced connections carry on with what was held back. */
  heal(): void {
    for (const proxy of this.#proxies) proxy.heal({ resumeExisting: true });
  }
  /** Used by the peers list only. */
  get config(): MemberConfig {
    return this.#cfg;
  }
  get peers(): readonly MemberConfig[] {
    return this.#peers;
  }
}

/**
 * Probes with a real ZooKeeper session handshake (the four-letter words are off): a
 * ConnectResponse with a positive timeout means the server serves clients, which in an
 * ensemble needs a quorum. The session is closed at once.
 */
function serves(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    let received = Buffer.alloc(0);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    socket.on("error", () => done(false));
    socket.on("close", () => done(false));
    socket.on("connect", () => {
      // ConnectRequest: protocol 0, last zxid 0, timeout 2000 ms, session 0, 16-byte password.
      const body = Buffer.alloc(4 + 8 + 4 + 8 + 4 + 16);
      body.writeInt32BE(2000, 12);
      body.writeInt32BE(16, 24);
      const frame = Buffer.alloc(4);
      frame.writeInt32BE(body.length);
      socket.write(Buffer.concat([frame, body]));
    });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 12) return;
      const timeout = received.readInt32BE(8);
      // closeSession: xid 1, type -11, so the probe leaves no session behind.
      const close = Buffer.alloc(12);
      close.writeInt32BE(8, 0);
      close.writeInt32BE(1, 4);
      close.writeInt32BE(-11, 8);
      clearTimeout(timer);
      resolve(timeout > 0);
      socket.end(close);
    });
  });
}

/** Whether something accepts TCP connections on the loopback port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function allocate(root: string, n: number): Promise<MemberConfig[]> {
  const cfgs: MemberConfig[] = [];
  for (let id = 1; id <= n; id++) {
    cfgs.push({
      id,
      dir: path.join(root, `zk${id}`),
      clientPort: await freePort(),
      quorumPort: await freePort(),
      electionPort: await freePort(),
    });
  }
  return cfgs;
}

/** A standalone server. */
export interface ZooKeeperServer {
  readonly member: ZooKeeperMember;
  /** "zookeeper://127.0.0.1:PORT" */
  readonly url: string;
  readonly address: string;
  /** SIGKILL, then start again on the same port and data; waits until it serves. */
  restart(): Promise<void>;
  /** Stops the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/** `minSessionTimeoutMs`: the shortest session the server grants (default 200 ms). */
export function startZooKeeper(options: { minSessionTimeoutMs?: number } = {}): Promise<ZooKeeperServer> {
  return retryOnAddressInUse(async () => {
    const root = makeTempDir("baton-zk-");
    const [cfg] = await allocate(root, 1);
    const member = new ZooKeeperMember(cfg as MemberConfig, [cfg as MemberConfig], options.minSessionTimeoutMs);
    try {
      await member.start();
    } catch (error) {
      await member.kill();
      removeTempDir(root);
      throw error;
    }
    let stopped = false;
    return {
      member,
      url: `zookeeper://${member.address}`,
      address: member.address,
      async restart() {
        await member.kill();
        await member.start();
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await member.kill();
        removeTempDir(root);
      },
    };
  });
}

/** A 3-member (or `size`) ensemble. */
export interface ZooKeeperEnsemble {
  readonly members: readonly ZooKeeperMember[];
  /** "zookeeper://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" */
  readonly url: string;
  /** The running member that leads, once the running members agree (bounded wait). */
  leader(timeoutMs?: number, among?: readonly ZooKeeperMember[]): Promise<ZooKeeperMember>;
  stop(): Promise<void>;
}

/**
 * `proxied`: a TCP proxy in front of each member's client port, and one for each direction
 * of each peer link (quorum and election ports; each member's zoo.cfg names its peers by
 * their proxies), so that `member.cut()` silences it from clients and peers alike. A member
 * may be cut and healed, not restarted: its election links to higher-numbered peers lead
 * nowhere (see proxyWiring), so a restarted member hears of them only if they call it.
 */
export function startZooKeeperEnsemble(size = 3, opts: { proxied?: boolean } = {}): Promise<ZooKeeperEnsemble> {
  return retryOnAddressInUse(async () => {
    const root = makeTempDir("baton-zk-ensemble-");
    const cfgs = await allocate(root, size);
    const proxies: TcpProxy[] = [];
    const cleanup = async () => {
      await Promise.all(proxies.map((p) => p.close()));
      removeTempDir(root);
    };
    try {
      return await ensembleOf(cfgs, cleanup, opts.proxied ? await proxyWiring(cfgs, proxies) : undefined);
    } catch (error) {
      await Promise.all(proxies.map((p) => p.close()));
      throw error;
    }
  });
}

type Wiring = ConstructorParameters<typeof ZooKeeperMember>[3];

/** The proxies of a proxied ensemble (pushed to `all`), and each member's view of them. */
async function proxyWiring(cfgs: readonly MemberConfig[], all: TcpProxy[]): Promise<Map<number, Wiring>> {
  const touching = new Map<number, TcpProxy[]>(cfgs.map((c) => [c.id, []]));
  const proxy = async (port: number, ...ids: number[]) => {
    const p = await startProxy({ host: HOST, port });
    all.push(p);
    for (const id of ids) touching.get(id)?.push(p);
    return p;
  };
  const wiring = new Map<number, Wiring>();
  for (const from of cfgs) {
    const clientPort = (await proxy(from.clientPort, from.id)).port;
    const links = new Map<number, { quorumPort: number; electionPort: number }>();
    for (const to of cfgs) {
      if (to.id === from.id) continue;
      const quorum = await proxy(to.quorumPort, from.id, to.id);
      // A member that reaches a higher-numbered peer's election port is dropped and called
      // back at the address it announced, its own real port: a path around every proxy. So
      // only the higher-numbered one calls (through a proxy); the lower one is given a port
      // where nothing listens, which changes nothing else.
      const election = to.id > from.id ? { port: await freePort() } : await proxy(to.electionPort, from.id, to.id);
      links.set(to.id, { quorumPort: quorum.port, electionPort: election.port });
    }
    wiring.set(from.id, { links, proxies: touching.get(from.id) as TcpProxy[], clientPort });
  }
  return wiring;
}

/** Starts the members of `cfgs` and waits until each serves; `cleanup` runs on stop or failure. */
async function ensembleOf(
  cfgs: MemberConfig[],
  cleanup: () => Promise<void>,
  wiring?: ReadonlyMap<number, Wiring>,
): Promise<ZooKeeperEnsemble> {
  const members = cfgs.map((c) => new ZooKeeperMember(c, cfgs, undefined, wiring?.get(c.id)));
  const closeAll = async () => {
    await Promise.all(members.map((m) => m.kill()));
    await Promise.all(members.map((m) => m.closeGateway()));
    await cleanup();
  };
  try {
    for (const m of members) {
      const proc = m.spawn();
      // Proxied, only a higher-numbered member calls a lower one: start them in order, each
      // once its election port listens, so every call finds its callee (an early call that
      // fails is retried only after a backoff that doubles up to a minute).
      if (wiring) {
        await waitUntil(`zookeeper ${m.id} election port`, () => listening(m.config.electionPort), {
          timeoutMs: STARTUP_TIMEOUT_MS,
          intervalMs: 50,
          procs: [proc],
        });
      }
    }
    await Promise.all(members.map((m) => m.waitServing()));
  } catch (error) {
    await closeAll();
    throw error;
  }
  let stopped = false;
  return {
    members,
    url: `zookeeper://${members.map((m) => m.address).join(",")}`,
    async leader(timeoutMs = 30_000, among = members) {
      let found: ZooKeeperMember | undefined;
      await waitUntil(
        "zookeeper ensemble leader",
        async () => {
          const leaders = among.filter((m) => m.running && m.leads());
          found = leaders.length === 1 ? leaders[0] : undefined;
          return found !== undefined && (await serves(await found.localPort()));
        },
        { timeoutMs, intervalMs: 100 },
      );
      return found as ZooKeeperMember;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await closeAll();
    },
  };
}

/**
 * An ensemble with member i on host `on[i]` (hosts.ts), on each host's address and the
 * standard ports; `url` names the hosts' addresses, for clients in other hosts.
 */
export async function startHostedZooKeeperEnsemble(
  hosts: { dir: string; host(name: string): Host },
  on: readonly string[],
): Promise<ZooKeeperEnsemble> {
  const cfgs: MemberConfig[] = on.map((name, i) => ({
    id: i + 1,
    host: hosts.host(name),
    dir: path.join(hosts.dir, `zk-${name}`),
    clientPort: 2181,
    quorumPort: 2888,
    electionPort: 3888,
  }));
  return ensembleOf(cfgs, async () => {});
}
