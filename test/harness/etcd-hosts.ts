/**
 * A 3-member (or N-member) etcd cluster with each member on its own host (hosts.ts), for
 * real network splits: members talk over the hosts' 127.1.0.x addresses, clients on other
 * hosts connect to all of them, and the test process reaches each member through a
 * gateway (for health, leader and the final inspection), which no split cuts.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { etcdBinary, etcdEnv, type MemberConfig, memberArgs } from "./etcd.js";
import type { Gateway, Host, Hosts } from "./hosts.js";
import type { ServerProcess } from "./proc.js";
import { waitUntil } from "./proc.js";

const CLIENT_PORT = 2379;
const PEER_PORT = 2380;
const STARTUP_TIMEOUT_MS = 30_000;

/** One member on its host. */
export interface HostedEtcdMember {
  readonly name: string;
  readonly host: Host;
  /** "127.1.0.x:2379", as clients in other hosts reach it. */
  readonly endpoint: string;
  /** The member's client port, seen from the test process (through its gateway). */
  readonly gateway: Gateway;
  readonly running: boolean;
  kill(): Promise<void>;
  /** Starts a killed member again on its data dir; waits until it answers /health. */
  start(): Promise<void>;
}

/** The cluster. */
export interface HostedEtcd {
  readonly members: readonly HostedEtcdMember[];
  /** `etcd://` URL listing every member by its host address: for clients in hosts. */
  readonly url: string;
  /** `etcd://` URL through the gateways: for the test process. */
  readonly gatewayUrl: string;
  /** The member a majority of the members answering names as leader (waits up to `timeoutMs`). */
  leader(timeoutMs?: number): Promise<HostedEtcdMember>;
  stop(): Promise<void>;
}

async function memberStatus(gw: Gateway): Promise<{ id: string; leader: string }> {
  const res = await fetch(`http://${gw.address}/v3/maintenance/status`, {
    method: "POST",
    body: "{}",
    signal: AbortSignal.timeout(1_000),
  });
  const body = (await res.json()) as { header?: { member_id?: string }; leader?: string };
  return { id: body.header?.member_id ?? "", leader: body.leader ?? "" };
}

/** Starts one member on each host of `on` (at least one); waits until the cluster is healthy. */
export async function startHostedEtcd(hosts: Hosts, on: readonly string[]): Promise<HostedEtcd> {
  const token = `baton-${randomBytes(4).toString("hex")}`;
  const cfgs: (MemberConfig & { hostObj: Host })[] = on.map((hostName) => {
    const host = hosts.host(hostName);
    return {
      name: hostName,
      host: host.address,
      hostObj: host,
      clientPort: CLIENT_PORT,
      peerPort: PEER_PORT,
      advertisedClientPort: CLIENT_PORT,
      advertisedPeerPort: PEER_PORT,
      dataDir: path.join(hosts.dir, `etcd-${hostName}`),
      logFile: path.join(hosts.dir, `etcd-${hostName}.log`),
    };
  });
  const initialCluster = cfgs.map((c) => `${c.name}=http://${c.host}:${PEER_PORT}`).join(",");
  const members: HostedEtcdMember[] = [];
  for (const cfg of cfgs) {
    let proc: ServerProcess | undefined;
    let started = false;
    const gateway = await cfg.hostObj.gateway(CLIENT_PORT);
    const spawnIt = () => {
      proc = cfg.hostObj.spawn(
        "etcd",
        etcdBinary(),
        memberArgs(cfg, initialCluster, token, started ? "existing" : "new"),
        {
          env: etcdEnv(),
          logFile: cfg.logFile,
        },
      );
      started = true;
      return proc;
    };
    const member: HostedEtcdMember = {
      name: cfg.name,
      host: cfg.hostObj,
      endpoint: `${cfg.host}:${CLIENT_PORT}`,
      gateway,
      get running() {
        return proc?.running ?? false;
      },
      async kill() {
        await proc?.kill();
      },
      async start() {
        const p = spawnIt();
        await waitUntil(`etcd ${cfg.name}`, () => healthy(gateway), { timeoutMs: STARTUP_TIMEOUT_MS, procs: [p] });
      },
    };
    members.push(member);
  }
  // Every start() spawns at once and then waits: no member is healthy before a quorum runs.
  await Promise.all(members.map((m) => m.start()));
  const cluster: HostedEtcd = {
    members,
    url: `etcd://${members.map((m) => m.endpoint).join(",")}`,
    gatewayUrl: `etcd://${members.map((m) => m.gateway.address).join(",")}`,
    async leader(timeoutMs = 10_000) {
      let found: HostedEtcdMember | undefined;
      await waitUntil(
        "etcd leader",
        async () => {
          const statuses = await Promise.all(members.map((m) => memberStatus(m.gateway).catch(() => undefined)));
          const votes = new Map<string, number>();
          for (const s of statuses) if (s?.leader) votes.set(s.leader, (votes.get(s.leader) ?? 0) + 1);
          const quorum = Math.floor(members.length / 2) + 1;
          const winner = [...votes].find(([, n]) => n >= quorum)?.[0];
          const index = statuses.findIndex((s) => s !== undefined && s.id === winner);
          found = members[index];
          return found !== undefined;
        },
        { timeoutMs },
      );
      return found as HostedEtcdMember;
    },
    async stop() {
      await Promise.all(members.map((m) => m.kill()));
      await Promise.all(members.map((m) => m.gateway.close()));
    },
  };
  return cluster;
}

async function healthy(gw: Gateway): Promise<boolean> {
  const res = await fetch(`http://${gw.address}/health`, { signal: AbortSignal.timeout(1_000) });
  const body = (await res.json()) as { health?: string };
  return res.ok && body.health === "true";
}
