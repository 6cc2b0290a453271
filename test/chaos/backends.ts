/**
 * The backends a chaos run can target, one table entry each: how to start the server (if
 * any), the URL a client connects with (through its own TCP proxy where a connection can
 * be cut), and which nemeses make sense. A new backend (ZooKeeper, Redis, MySQL) plugs in
 * with one more entry here; the runner and the checker need nothing else.
 */
import type { ChildProcess } from "node:child_process";
import path from "node:path";
import { startEtcd, startEtcdCluster } from "../harness/etcd.js";
import { startMariadb } from "../harness/mariadb.js";
import { startPostgres } from "../harness/postgres.js";
import { delay, makeTempDir, removeTempDir } from "../harness/proc.js";
import { startProxy } from "../harness/proxy.js";
import { startRedis, startSentinelSetup } from "../harness/redis.js";
import { startZooKeeper, startZooKeeperEnsemble } from "../harness/zookeeper.js";
import type { FaultKind } from "./history.js";
import { startEtcdHosts, startPostgresHosts, startZooKeeperHosts } from "./partitions.js";

/** A client's way in: its URL and, on server backends, a cuttable connection. */
export interface ClientLink {
  readonly url: string;
  /** Blackholes this client's connections (no FIN, no RST); absent: not cuttable. */
  readonly cut?: () => void;
  /** Forwards again; the blackholed connections are destroyed. */
  readonly heal?: () => void;
  /** Starts the client process where this link lives (a host of hosts.ts); default: fork here. */
  readonly fork?: (script: string, args: readonly string[]) => ChildProcess;
  close(): Promise<void>;
}

/** What a partition nemesis is told of the clients, and tells the runner. */
export interface PartitionHooks {
  /** Links of clients holding something now (a nemesis cuts these off by preference). */
  holders(): readonly ClientLink[];
  /** Links of clients waiting in an upgrade now. */
  upgrading(): readonly ClientLink[];
  /** Call just before a split with the links about to be cut off from a quorum: they hold on. */
  cutting(minority: readonly ClientLink[]): void;
  /** Call once a split is in force, with the links of the clients cut off from a quorum. */
  split(minority: readonly ClientLink[]): void;
  /** Call as the heal begins (from then on packets may cross again). */
  healed(): void;
}

/** A running target of a chaos run. */
export interface ChaosTarget {
  /** A direct URL, for the runner's own inspection at the end. */
  readonly url: string;
  /** A fresh link for one client process. */
  link(): Promise<ClientLink>;
  /** Restarts the server; resolves once it serves again. Returns what was done. */
  restart?(): Promise<string>;
  /** Kills one cluster member, waits, starts it again. Returns which member. */
  member?(random: () => number): Promise<string>;
  /** Splits the network (one or more times, calling `hooks`), heals it; says what it did. */
  partition?(random: () => number, hooks: PartitionHooks): Promise<string>;
  /** Clients upgrade this share of their shared sections (default none). */
  readonly upgradeShare?: number;
  stop(): Promise<void>;
}

/** One entry of the table. */
export interface ChaosBackend {
  readonly name: string;
  /** The nemeses that apply (a default run uses all of them). */
  readonly nemeses: readonly FaultKind[];
  /** Whether it needs root for network namespaces (see hostsUnavailable). */
  readonly hosts?: boolean;
  start(options: { ttlMs: number }): Promise<ChaosTarget>;
}

/** A link through a private TCP proxy to host:port; `url(port)` spells the proxied URL. */
async function proxiedLink(host: string, port: number, url: (port: number) => string): Promise<ClientLink> {
  const proxy = await startProxy({ host, port });
  return {
    url: url(proxy.port),
    cut: () => proxy.cut(),
    heal: () => proxy.heal(),
    close: () => proxy.close(),
  };
}

const directLink = (url: string): ClientLink => ({ url, close: async () => {} });

/** A started single server, as {@link singleServer} needs it. */
interface SingleServer {
  /** The direct URL. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The URL through a proxy listening on `port` of the same host. */
  via(port: number): string;
  /** Restarts the server; says how. */
  restart(): Promise<string>;
  stop(): Promise<void>;
}

/** A harness server as a {@link SingleServer}: `how` says what its restart does. */
function onServer(
  server: { url: string; host?: string; restart(): Promise<void>; stop(): Promise<void> },
  port: number,
  via: (port: number) => string,
  how: string,
  restart: () => Promise<void> = () => server.restart(),
): SingleServer {
  return {
    url: server.url,
    host: server.host ?? "127.0.0.1",
    port,
    via,
    restart: async () => {
      await restart();
      return how;
    },
    stop: () => server.stop(),
  };
}

/** `via` for a server whose URL names its port before the path. */
const swapPort = (server: { url: string; port: number }) => (p: number) =>
  server.url.replace(`:${server.port}/`, `:${p}/`);

/**
 * The entry of a backend on one server, each client through its own cuttable proxy, with
 * every nemesis but the cluster ones: etcd, PostgreSQL, MySQL, Redis and ZooKeeper.
 */
function singleServer(name: string, start: () => Promise<SingleServer>): ChaosBackend {
  return {
    name,
    nemeses: ["kill", "pause", "cut", "restart"],
    async start() {
      const server = await start();
      return {
        url: server.url,
        link: () => proxiedLink(server.host, server.port, (p) => server.via(p)),
        restart: () => server.restart(),
        stop: () => server.stop(),
      };
    },
  };
}

export const BACKENDS: readonly ChaosBackend[] = [
  {
    name: "file",
    // No server to restart or connection to cut: the kernel holds the locks.
    nemeses: ["kill", "pause"],
    async start() {
      const dir = makeTempDir("baton-chaos-file-");
      const url = `file://${path.join(dir, "locks")}`;
      return { url, link: async () => directLink(url), stop: async () => removeTempDir(dir) };
    },
  },
  singleServer("etcd", async () => {
    const server = await startEtcd();
    return onServer(server, server.clientPort, (p) => `etcd://127.0.0.1:${p}`, "etcd stopped and started");
  }),
  {
    name: "etcd-cluster",
    nemeses: ["kill", "pause", "member"],
    async start() {
      // Proxied: a member can be silenced (cut) as well as killed.
      const cluster = await startEtcdCluster(3, { proxied: true });
      return {
        url: cluster.url,
        link: async () => directLink(cluster.url),
        async member(random) {
          const leader = await cluster.leader();
          // Half the time the leader, which forces an election.
          const followers = cluster.members.filter((m) => m !== leader && m.running);
          const victim = random() < 0.5 || followers.length === 0 ? leader : followers[0]!;
          const role = victim === leader ? " (leader)" : "";
          const ms = 500 + Math.floor(random() * 2500);
          if (random() < 0.5) {
            victim.cut();
            await delay(ms);
            victim.heal();
            return `${victim.name}${role} cut for ${ms} ms`;
          }
          await victim.kill();
          await delay(ms);
          await victim.start();
          return `${victim.name}${role} killed for ${ms} ms and restarted`;
        },
        stop: () => cluster.stop(),
      };
    },
  },
  singleServer("postgres", async () => {
    const server = await startPostgres();
    return onServer(server, server.port, swapPort(server), "postgres fast shutdown and start");
  }),
  singleServer("mysql", async () => {
    const server = await startMariadb();
    // A crash, not a shutdown: each commit reaches the redo log in the OS's cache (harness
    // tuning), so the lock rows and the token counter must survive it.
    return onServer(server, server.port, swapPort(server), "mariadb SIGKILL and start", async () => {
      await server.kill();
      await server.restart();
    });
  }),
  singleServer("redis", async () => {
    // Persistence on (fsync always): without it a restart forgets every lock and token,
    // which no lock service may do.
    const server = await startRedis({ persistence: true });
    return onServer(
      server,
      server.port,
      (p) => `redis://127.0.0.1:${p}`,
      "redis SIGKILL and start (AOF, fsync always)",
    );
  }),
  {
    name: "redis-sentinel",
    nemeses: ["kill", "pause", "member"],
    async start() {
      // Proxied: every process announces its proxy, so a cut silences it for everyone.
      const setup = await startSentinelSetup({ proxied: true });
      const proxies = setup.proxies!;
      return {
        url: setup.url,
        link: async () => directLink(setup.url),
        async member(random) {
          const ms = 500 + Math.floor(random() * 2500);
          // Half the time the primary (a failover follows a cut past 1 s), else a sentinel.
          if (random() < 0.5) {
            const port = await setup.currentPrimaryPort(2).catch(() => proxies.primary.port);
            const victim = port === proxies.replica.port ? proxies.replica : proxies.primary;
            victim.cut();
            await delay(ms);
            victim.heal({ resumeExisting: true });
            return `primary :${port} cut for ${ms} ms`;
          }
          const i = Math.floor(random() * proxies.sentinels.length);
          proxies.sentinels[i]!.cut();
          await delay(ms);
          proxies.sentinels[i]!.heal({ resumeExisting: true });
          return `sentinel ${i} cut for ${ms} ms`;
        },
        stop: () => setup.stop(),
      };
    },
  },
  singleServer("zookeeper", async () => {
    const server = await startZooKeeper();
    const [host, port] = server.address.split(":") as [string, string];
    return onServer(
      { url: server.url, host, restart: () => server.restart(), stop: () => server.stop() },
      Number(port),
      (p) => `zookeeper://${host}:${p}`,
      "zookeeper SIGKILL and start (sessions and nodes are on disk)",
    );
  }),
  {
    name: "zookeeper-ensemble",
    nemeses: ["kill", "pause", "member"],
    async start() {
      // Proxied, so a member can be silenced; killed members are not restarted here (in a
      // proxied ensemble a restarted member may not reach its higher-numbered peers: see
      // startZooKeeperEnsemble), so the member nemesis only cuts.
      const ensemble = await startZooKeeperEnsemble(3, { proxied: true });
      return {
        url: ensemble.url,
        link: async () => directLink(ensemble.url),
        async member(random) {
          const leader = await ensemble.leader();
          // Half the time the leader, which forces an election.
          const followers = ensemble.members.filter((m) => m !== leader && m.running);
          const victim = random() < 0.5 || followers.length === 0 ? leader : followers[0]!;
          const name = `zk${victim.id}${victim === leader ? " (leader)" : ""}`;
          const ms = 500 + Math.floor(random() * 2500);
          victim.cut();
          await delay(ms);
          victim.heal();
          return `${name} cut for ${ms} ms`;
        },
        stop: () => ensemble.stop(),
      };
    },
  },
  {
    name: "etcd-hosts",
    // Three members and four client hosts in network namespaces; partitions between them.
    nemeses: ["kill", "pause", "partition"],
    hosts: true,
    start: ({ ttlMs }) => startEtcdHosts(ttlMs),
  },
  {
    name: "postgres-hosts",
    // The server on one host, four client hosts; partitions between them.
    nemeses: ["kill", "pause", "partition"],
    hosts: true,
    start: ({ ttlMs }) => startPostgresHosts(ttlMs),
  },
  {
    name: "zookeeper-hosts",
    // Three servers and four client hosts; partitions between them.
    nemeses: ["kill", "pause", "partition"],
    hosts: true,
    start: ({ ttlMs }) => startZooKeeperHosts(ttlMs),
  },
];

/** The entry called `name`, or an error listing the known ones. */
export function backendNamed(name: string): ChaosBackend {
  const found = BACKENDS.find((b) => b.name === name);
  if (found === undefined) {
    throw new Error(`unknown chaos backend ${JSON.stringify(name)}; known: ${BACKENDS.map((b) => b.name).join(", ")}`);
  }
  return found;
}
