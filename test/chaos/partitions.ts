/**
 * Chaos targets on network-namespace hosts (test/harness/hosts.ts) and the partition
 * nemesis: real network splits, silent as behind a failed switch, between server hosts and
 * client hosts. Clients are spread round-robin over their own hosts; each partition is one
 * of, in turn:
 *
 * - `leader`: the leader with one client host, cut off from the rest;
 * - `client` (a single server): one client host cut off from everything;
 * - `symmetric`: one member and half the client hosts against the others;
 * - `flap`: 4 short splits of a member and a client host, 150-600 ms each, 150-600 ms apart;
 * - `upgrade`: a client that is upgrading a shared lock cut off, healed before its TTL runs
 *   out (in the middle of the upgrade; a holder if nobody upgrades within 3 s).
 *
 * The side without a quorum of the servers is the minority: its clients are told to hold on
 * until their signal aborts and then until the heal, and to write late (the checker wants
 * the signal before any re-grant, no grant on that side, and every late write refused).
 */
import { startHostedEtcd } from "../harness/etcd-hosts.js";
import { type Hosts, startHosts } from "../harness/hosts.js";
import { startPostgres } from "../harness/postgres.js";
import { delay } from "../harness/proc.js";
import { startHostedZooKeeperEnsemble } from "../harness/zookeeper.js";
import type { ChaosTarget, ClientLink, PartitionHooks } from "./backends.js";

const CLIENT_HOSTS = ["c1", "c2", "c3", "c4"];
type Kind = "leader" | "client" | "symmetric" | "flap" | "upgrade";
/** A cluster starts with its leader; a single server with one client host cut off from it. */
const CLUSTER_KINDS: readonly Kind[] = ["leader", "symmetric", "flap", "upgrade"];
const SINGLE_KINDS: readonly Kind[] = ["client", "symmetric", "flap", "upgrade"];

/** What a hosted target knows about its servers, for the nemesis. */
interface Servers {
  /** Host names of the servers. */
  readonly hosts: readonly string[];
  /** The host of the leader (a single server's own). */
  leader(): Promise<string>;
}

/** Spreads client links over the client hosts and runs partitions between all hosts. */
export function hostedTarget(
  hosts: Hosts,
  servers: Servers,
  base: { url: string; clientUrl: string; stop(): Promise<void> },
  ttlMs: number,
): ChaosTarget {
  const hostOf = new Map<ClientLink, string>();
  let next = 0;
  let round = 0;
  const quorum = Math.floor(servers.hosts.length / 2) + 1;
  const pickClientHost = (random: () => number, prefer: readonly ClientLink[]): string => {
    const held = prefer[Math.floor(random() * prefer.length)];
    return (held && hostOf.get(held)) ?? (CLIENT_HOSTS[Math.floor(random() * CLIENT_HOSTS.length)] as string);
  };
  /** Splits `side` off the rest; tells the hooks which clients lost the quorum. */
  const split = async (side: readonly string[], hooks: PartitionHooks): Promise<void> => {
    const inSide = side.filter((h) => servers.hosts.includes(h)).length;
    const minorityIsSide = inSide < quorum;
    const minority = [...hostOf].filter(([, h]) => side.includes(h) === minorityIsSide).map(([l]) => l);
    // Told first, so that a holder cut off is still holding when the split is in force.
    hooks.cutting(minority);
    await hosts.split(side);
    hooks.split(minority);
  };
  // The fault ends when the heal begins: the first link moved back carries packets already.
  const heal = async (hooks: PartitionHooks): Promise<void> => {
    hooks.healed();
    await hosts.heal();
  };
  // Long enough for the majority side to let the cut-off holders' sessions expire and grant
  // again (etcd renews every lease when it elects a leader), so that late writes are stale.
  const hold = (random: () => number) => 2 * ttlMs + 1500 + Math.floor(random() * 1000);
  return {
    url: base.url,
    async link() {
      const name = CLIENT_HOSTS[next++ % CLIENT_HOSTS.length] as string;
      const host = hosts.host(name);
      const link: ClientLink = {
        url: base.clientUrl,
        fork: (script, args) => host.fork(script, args),
        close: async () => {
          hostOf.delete(link);
        },
      };
      hostOf.set(link, name);
      return link;
    },
    upgradeShare: 0.3,
    async partition(random, hooks) {
      const kinds = servers.hosts.length > 1 ? CLUSTER_KINDS : SINGLE_KINDS;
      const kind = kinds[round++ % kinds.length] as Kind;
      if (kind === "client") {
        const client = pickClientHost(random, hooks.holders());
        const ms = hold(random);
        await split([client], hooks);
        await delay(ms);
        await heal(hooks);
        return `client host ${client} cut off for ${ms} ms`;
      }
      if (kind === "leader") {
        const leader = await servers.leader();
        const client = pickClientHost(random, hooks.holders());
        const ms = hold(random);
        await split([leader, client], hooks);
        await delay(ms);
        await heal(hooks);
        return `leader ${leader} with client host ${client} cut off for ${ms} ms`;
      }
      if (kind === "symmetric") {
        const member = servers.hosts[Math.floor(random() * servers.hosts.length)] as string;
        const first = pickClientHost(random, hooks.holders());
        const others = CLIENT_HOSTS.filter((h) => h !== first);
        const side = [member, first, ...others.slice(0, CLIENT_HOSTS.length / 2 - 1)];
        const ms = hold(random);
        await split(side, hooks);
        await delay(ms);
        await heal(hooks);
        return `${side.join(",")} | the rest for ${ms} ms`;
      }
      if (kind === "flap") {
        const steps: string[] = [];
        for (let i = 0; i < 4; i++) {
          const member = servers.hosts[Math.floor(random() * servers.hosts.length)] as string;
          const client = pickClientHost(random, hooks.holders());
          const down = 150 + Math.floor(random() * 450);
          await split([member, client], hooks);
          await delay(down);
          await heal(hooks);
          steps.push(`${member},${client} ${down} ms`);
          await delay(150 + Math.floor(random() * 450));
        }
        return `flapping: ${steps.join("; ")}`;
      }
      const deadline = performance.now() + 3000;
      while (hooks.upgrading().length === 0 && performance.now() < deadline) await delay(5);
      const upgrading = hooks.upgrading().length > 0;
      const client = pickClientHost(random, upgrading ? hooks.upgrading() : hooks.holders());
      const ms = 200 + Math.floor(random() * Math.max(1, ttlMs / 2 - 200));
      await split([client], hooks);
      await delay(ms);
      await heal(hooks);
      return `client host ${client}${upgrading ? " (upgrading)" : ""} cut off for ${ms} ms, healed before its TTL`;
    },
    stop: async () => {
      try {
        await base.stop();
      } finally {
        await hosts.close();
      }
    },
  };
}

/** etcd, 3 members each on its own host, clients on 4 other hosts. */
export async function startEtcdHosts(ttlMs: number): Promise<ChaosTarget> {
  const hosts = await startHosts(["e1", "e2", "e3", ...CLIENT_HOSTS]);
  try {
    const cluster = await startHostedEtcd(hosts, ["e1", "e2", "e3"]);
    const servers: Servers = {
      hosts: ["e1", "e2", "e3"],
      leader: async () => (await cluster.leader()).name,
    };
    return hostedTarget(hosts, servers, { url: cluster.gatewayUrl, clientUrl: cluster.url, stop: cluster.stop }, ttlMs);
  } catch (err) {
    await hosts.close();
    throw err;
  }
}

/** PostgreSQL on host `db`, clients on 4 other hosts. */
export async function startPostgresHosts(ttlMs: number): Promise<ChaosTarget> {
  const hosts = await startHosts(["db", ...CLIENT_HOSTS]);
  try {
    const server = await startPostgres({ host: hosts.host("db") });
    const servers: Servers = { hosts: ["db"], leader: async () => "db" };
    return hostedTarget(
      hosts,
      servers,
      { url: server.localUrl, clientUrl: server.url, stop: () => server.stop() },
      ttlMs,
    );
  } catch (err) {
    await hosts.close();
    throw err;
  }
}

/** ZooKeeper, 3 servers each on its own host, clients on 4 other hosts. */
export async function startZooKeeperHosts(ttlMs: number): Promise<ChaosTarget> {
  const on = ["z1", "z2", "z3"];
  const hosts = await startHosts([...on, ...CLIENT_HOSTS]);
  try {
    const ensemble = await startHostedZooKeeperEnsemble(hosts, on);
    const local = await Promise.all(ensemble.members.map(async (m) => `127.0.0.1:${await m.localPort()}`));
    const servers: Servers = { hosts: on, leader: async () => on[(await ensemble.leader()).id - 1] as string };
    const base = { url: `zookeeper://${local.join(",")}`, clientUrl: ensemble.url, stop: () => ensemble.stop() };
    return hostedTarget(hosts, servers, base, ttlMs);
  } catch (err) {
    await hosts.close();
    throw err;
  }
}
