/**
 * Redis with Sentinel on network-namespace hosts (hosts.ts), for real splits: the primary
 * and a replica each on a host of their own, a sentinel on each of three hosts (quorum 2),
 * all on the hosts' addresses and the standard ports. The test process reaches every
 * process through a gateway, which no split cuts.
 */
import fs from "node:fs";
import path from "node:path";
import type { Gateway, Hosts } from "./hosts.js";
import { type ServerProcess, waitUntil } from "./proc.js";
import { binary, rawCommand, serverArgs, synced } from "./redis.js";

const REDIS_PORT = 6379;
const SENTINEL_PORT = 26379;
const MASTER = "baton";
const STARTUP_TIMEOUT_MS = 30_000;

export interface HostedSentinel {
  /** `redis+sentinel://` URL naming the sentinels by host address: for clients in hosts. */
  readonly url: string;
  /** Host name of the server the first sentinel now names as the primary. */
  primaryHost(): Promise<string>;
  /**
   * Resolves once the failover to `primary` (a host name) is complete everywhere: every
   * sentinel names it and every other data node reports itself its replica. A sentinel
   * that was cut off learns of a failover only from its peers' hello messages after the
   * heal, and only then is the returning old primary turned into a replica (its data
   * replaced by the new primary's): until both, a client may still be sent to the old one.
   * Rejects after `timeoutMs` with what was still different.
   */
  failedOver(primary: string, timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** Primary on `primary`, replica on `replica`, sentinels on `sentinels` (three hosts). */
export async function startHostedSentinel(
  hosts: Hosts,
  placement: { primary: string; replica: string; sentinels: readonly string[] },
): Promise<HostedSentinel> {
  const procs: ServerProcess[] = [];
  const gateways: Gateway[] = [];
  const dataGateways = new Map<string, Gateway>();
  const sentinelGateways: Gateway[] = [];
  const stop = async () => {
    await Promise.all(procs.map((p) => p.kill()));
    await Promise.all(gateways.map((g) => g.close()));
  };
  const ping = async (gw: Gateway, what: string, proc: ServerProcess) =>
    waitUntil(what, async () => (await rawCommand(gw.port, "PING", 1000)).startsWith("+PONG"), {
      timeoutMs: STARTUP_TIMEOUT_MS,
      intervalMs: 20,
      procs: [proc],
    });
  try {
    const primary = hosts.host(placement.primary);
    const byAddress = new Map<string, string>();
    for (const [role, name] of [
      ["primary", placement.primary],
      ["replica", placement.replica],
    ] as const) {
      const host = hosts.host(name);
      byAddress.set(host.address, name);
      const dir = path.join(hosts.dir, `redis-${role}`);
      fs.mkdirSync(dir, { recursive: true });
      const opts = role === "replica" ? { replicaOf: REDIS_PORT } : {};
      const args = serverArgs(REDIS_PORT, dir, opts, host.address, primary.address);
      const proc = host.spawn(`redis ${role}`, binary("redis-server"), args, {
        logFile: path.join(dir, "redis.log"),
        cwd: dir,
      });
      procs.push(proc);
      const gw = await host.gateway(REDIS_PORT);
      gateways.push(gw);
      dataGateways.set(name, gw);
      await ping(gw, `redis ${role} on ${name}`, proc);
      if (role === "replica") {
        await waitUntil("replica in sync", () => synced(gw.port), { timeoutMs: STARTUP_TIMEOUT_MS, intervalMs: 50 });
      }
    }
    for (const name of placement.sentinels) {
      const host = hosts.host(name);
      const dir = path.join(hosts.dir, `sentinel-${name}`);
      fs.mkdirSync(dir, { recursive: true });
      const conf = path.join(dir, "sentinel.conf");
      fs.writeFileSync(
        conf,
        [
          `port ${SENTINEL_PORT}`,
          `bind ${host.address}`,
          "protected-mode no",
          `dir ${dir}`,
          `sentinel monitor ${MASTER} ${primary.address} ${REDIS_PORT} 2`,
          `sentinel down-after-milliseconds ${MASTER} 1000`,
          `sentinel failover-timeout ${MASTER} 3000`,
          `sentinel parallel-syncs ${MASTER} 1`,
          "",
        ].join("\n"),
      );
      const proc = host.spawn("sentinel", binary("redis-sentinel"), [conf], {
        logFile: path.join(dir, "sentinel.log"),
        cwd: dir,
      });
      procs.push(proc);
      const gw = await host.gateway(SENTINEL_PORT);
      gateways.push(gw);
      sentinelGateways.push(gw);
      await ping(gw, `sentinel on ${name}`, proc);
    }
    const addresses = placement.sentinels.map((n) => `${hosts.host(n).address}:${SENTINEL_PORT}`);
    const named = async (gw: Gateway) => {
      const reply = await rawCommand(gw.port, `SENTINEL get-master-addr-by-name ${MASTER}`, 1000);
      const address = reply.split("\r\n")[2] ?? "";
      return byAddress.get(address) ?? address;
    };
    const role = async (gw: Gateway) => /^role:(\w+)/m.exec(await rawCommand(gw.port, "INFO replication", 1000))?.[1];
    return {
      url: `redis+sentinel://${addresses.join(",")}/${MASTER}`,
      primaryHost: () => named(sentinelGateways[0] as Gateway),
      async failedOver(want, timeoutMs) {
        hosts.host(want);
        let seen = "";
        const done = async () => {
          const names = await Promise.all(sentinelGateways.map(named));
          const roles = await Promise.all([...dataGateways].map(async ([n, gw]) => `${n}:${await role(gw)}`));
          seen = `sentinels name ${names.join(", ")}; ${roles.join(", ")}`;
          const replicas = [...dataGateways.keys()].filter((n) => n !== want).map((n) => `${n}:slave`);
          return (
            names.every((n) => n === want) &&
            roles.includes(`${want}:master`) &&
            replicas.every((r) => roles.includes(r))
          );
        };
        await waitUntil(`failover to ${want}`, done, { timeoutMs, intervalMs: 50, procs }).catch((error: unknown) => {
          throw new Error(`${(error as Error).message.split("\n")[0]} (${seen})`);
        });
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
