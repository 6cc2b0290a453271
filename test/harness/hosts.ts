/**
 * Hosts on one machine, for real network splits: each host is a network namespace with
 * one veth link to a bridge in a switch namespace of this run's own (the root namespace is
 * never touched). Addresses are in 127.1.0.0/24 only, made routable between namespaces by
 * `route_localnet=1` and a loopback shrunk to 127.0.0.1/32, so no traffic can leave the
 * machine or use another range (no default route exists in a host).
 *
 * A split moves the links of each side onto a bridge of that side: frames to the other
 * side are flooded on a bridge that does not reach it and vanish. Nothing is refused or
 * reset, no carrier goes down: both sides see silence, as behind a failed switch.
 * `heal()` moves every link back. netfilter (iptables/nft) is not needed.
 *
 * Names carry the pid and a counter, so parallel test files never collide; everything a
 * run created (namespaces, links, processes started in a host) is removed by `close()`,
 * by the process-exit hook of proc.ts (a failed test, SIGINT, SIGTERM), and a later run
 * sweeps what a SIGKILLed run left behind.
 */
import { type ChildProcess, execFile, execFileSync, type StdioOptions, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import path from "node:path";
import { freePort } from "./ports.js";
import { makeTempDir, onProcessExit, removeTempDir, ServerProcess, type SpawnOptions } from "./proc.js";

const IP = "/usr/sbin/ip";
const PREFIX = "baton-";
let runs = 0;

/** One host: a namespace with one address. */
export interface Host {
  readonly name: string;
  /** Its network namespace (for `ip netns exec`). */
  readonly netns: string;
  /** Its address, in 127.1.0.0/24. */
  readonly address: string;
  /** Starts a server inside the host (see ServerProcess); stopped by `Hosts.close()` at the latest. */
  spawn(label: string, command: string, args: readonly string[], opts: SpawnOptions): ServerProcess;
  /** Starts a Node script inside the host with an IPC channel (`process.send` works in it). */
  fork(script: string, args: readonly string[], opts?: { execArgv?: readonly string[] }): ChildProcess;
  /** Starts any command inside the host with the given stdio; killed by `Hosts.close()`. */
  child(command: string, args: readonly string[], stdio: StdioOptions): ChildProcess;
  /**
   * A TCP port on 127.0.0.1 of this process's own namespace that leads to `port` on the
   * host's address, through a Unix socket (those cross namespaces): the test process can
   * reach a server in a host this way. Splits do not cut it (it enters the host locally).
   */
  gateway(port: number): Promise<Gateway>;
  /** Runs a command inside the host to completion; rejects on a non-zero exit or after `timeoutMs`. */
  run(command: string, args: readonly string[], timeoutMs?: number): Promise<string>;
}

/** A way into a host from the test process: see `Host.gateway`. */
export interface Gateway {
  /** "127.0.0.1:PORT" */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** The in-host half of a gateway: Unix socket in, TCP to the host's own address out. */
const GATEWAY_SCRIPT = `const net = require("net");
const [path, host, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(Number(port), host);
  c.pipe(u); u.pipe(c);
  c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
  c.on("close", () => u.destroy()); u.on("close", () => c.destroy());
}).listen(path, () => process.send("up"));`;

function pipeTo(client: net.Socket, connectUpstream: () => net.Socket): void {
  const upstream = connectUpstream();
  client.pipe(upstream);
  upstream.pipe(client);
  for (const [a, b] of [
    [client, upstream],
    [upstream, client],
  ] as const) {
    a.on("error", () => b.destroy());
    a.on("close", () => b.destroy());
  }
}

/** A run's hosts and switch. */
export interface Hosts {
  /** A temp dir for the run's logs and data; removed by `close()`. */
  readonly dir: string;
  readonly hosts: ReadonlyMap<string, Host>;
  /** The host called `name`; throws on an unknown name. */
  host(name: string): Host;
  /**
   * Splits the network: each listed side can reach only itself; hosts in no side stay
   * together on the main bridge (one more side). Replaces any earlier split.
   */
  split(...sides: readonly (readonly string[])[]): Promise<void>;
  /** Cuts `names` off from every other host (they still reach each other). */
  isolate(...names: readonly string[]): Promise<void>;
  /** Every host reaches every other again; established connections carry on. */
  heal(): Promise<void>;
  /** The sides now in force (empty when healed), for logs. */
  readonly sides: readonly (readonly string[])[];
  /** Kills every process started in a host, deletes namespaces and links. Idempotent. */
  close(): Promise<void>;
}

let probed: string | undefined | null = null;

/**
 * Why hosts cannot be built here (no root, no iproute2, namespaces refused), or undefined
 * if they can. Tests pass it as `skip`, so a machine without privileges reports a skip.
 */
export function hostsUnavailable(): string | undefined {
  if (probed !== null) return probed;
  probed = probe();
  return probed;
}

function probe(): string | undefined {
  if (process.platform !== "linux") return "network-namespace hosts need Linux";
  if (process.getuid?.() !== 0) return "network-namespace hosts need root (ip netns add); run as root, as CI does";
  const name = `${PREFIX}${process.pid}-probe`;
  try {
    execFileSync(IP, ["netns", "add", name], { stdio: "pipe" });
    execFileSync(IP, ["netns", "del", name], { stdio: "pipe" });
    return undefined;
  } catch (err) {
    return `cannot create network namespaces with ${IP}: ${(err as Error).message.split("\n")[0]}`;
  }
}

/** Deletes namespaces left by runs whose process is gone (a SIGKILLed test file). */
function sweepStale(): void {
  let list = "";
  try {
    list = execFileSync(IP, ["netns", "list"], { encoding: "utf8" });
  } catch {
    return;
  }
  for (const line of list.split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    const m = /^baton-(\d+)-/.exec(ns);
    if (m === null || isAlive(Number(m[1]))) continue;
    try {
      execFileSync(IP, ["netns", "del", ns], { stdio: "pipe" });
    } catch {
      // another run swept it first
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function ip(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(IP, args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(" ")}: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

const HOST_NAME = /^[a-z][a-z0-9]{0,11}$/;

/**
 * Creates the hosts `names` (lowercase letters and digits, at most 12, unique), each at
 * 127.1.0.(10 + index). Throws with `hostsUnavailable()`'s reason if it cannot.
 */
export async function startHosts(names: readonly string[]): Promise<Hosts> {
  const why = hostsUnavailable();
  if (why !== undefined) throw new Error(why);
  if (names.length === 0 || names.length > 200 || new Set(names).size !== names.length) {
    throw new Error(`startHosts: give 1 to 200 distinct host names, got ${JSON.stringify(names)}`);
  }
  for (const n of names) {
    if (!HOST_NAME.test(n)) throw new Error(`startHosts: host name ${JSON.stringify(n)} must match ${HOST_NAME}`);
  }
  sweepStale();
  const run = `${PREFIX}${process.pid}-${runs++}`;
  const sw = `${run}-sw`;
  const created: string[] = [];
  const processes = new Set<ServerProcess>();
  const children = new Set<ChildProcess>();
  const logDir = makeTempDir("baton-hosts-");
  let closed = false;
  let gateways = 0;
  const servers = new Set<() => Promise<void>>();

  const killAllSync = (): void => {
    for (const p of processes) p.killSync();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  };
  const deleteSync = (): void => {
    killAllSync();
    for (const ns of created.splice(0).reverse()) {
      try {
        execFileSync(IP, ["netns", "del", ns], { stdio: "pipe" });
      } catch {
        // already gone
      }
    }
  };
  const unhook = onProcessExit(deleteSync);

  const map = new Map<string, Host>();
  const linkOf = new Map<string, string>();
  let sides: string[][] = [];
  let sideBridges = 0;
  try {
    await ip(["netns", "add", sw]);
    created.push(sw);
    await ip(["-n", sw, "link", "add", "br0", "type", "bridge"]);
    await ip(["-n", sw, "link", "set", "br0", "up"]);
    for (const [i, name] of names.entries()) {
      const netns = `${run}-${name}`;
      const address = `127.1.0.${10 + i}`;
      await ip(["netns", "add", netns]);
      created.push(netns);
      const link = `v${i}`;
      linkOf.set(name, link);
      await ip(["-n", sw, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns]);
      await ip(["-n", sw, "link", "set", link, "master", "br0", "up"]);
      // lo comes up as 127.0.0.1/8, which would make every 127.x address local.
      const setup = [
        "set -e",
        "ip link set lo up",
        "ip addr del 127.0.0.1/8 dev lo",
        "ip addr add 127.0.0.1/32 dev lo",
        "for f in all default eth0 lo; do echo 1 > /proc/sys/net/ipv4/conf/$f/route_localnet; done",
        `ip addr add ${address}/24 dev eth0`,
        "ip link set eth0 up",
      ].join("; ");
      await ip(["netns", "exec", netns, "sh", "-c", setup]);
      map.set(name, makeHost(name, netns, address));
    }
  } catch (err) {
    deleteSync();
    unhook();
    removeTempDir(logDir);
    throw err;
  }

  function makeHost(name: string, netns: string, address: string): Host {
    const exec = (command: string, args: readonly string[]) => ["netns", "exec", netns, command, ...args];
    const host: Host = {
      name,
      netns,
      address,
      spawn(label, command, args, opts) {
        if (closed) throw new Error(`host ${name}: the hosts are closed`);
        const p = new ServerProcess(`${label}@${name}`, IP, exec(command, args), opts);
        processes.add(p);
        void p.exited.then(() => processes.delete(p));
        return p;
      },
      fork(script, args, opts = {}) {
        const argv = [...(opts.execArgv ?? ["--import", "tsx"]), script, ...args];
        return host.child(process.execPath, argv, ["ignore", "inherit", "inherit", "ipc"]);
      },
      child(command, args, stdio) {
        if (closed) throw new Error(`host ${name}: the hosts are closed`);
        const child = spawn(IP, exec(command, args), { stdio });
        children.add(child);
        child.once("exit", () => children.delete(child));
        return child;
      },
      async gateway(port) {
        const sock = path.join(logDir, `gw-${name}-${port}-${gateways++}.sock`);
        const child = host.fork("-e", [GATEWAY_SCRIPT, sock, address, String(port)], { execArgv: [] });
        const [first] = (await Promise.race([once(child, "message"), once(child, "exit")])) as unknown[];
        if (first !== "up") throw new Error(`gateway into host ${name}: the forwarder exited (${String(first)})`);
        const sockets = new Set<net.Socket>();
        const server = net.createServer((client) => {
          sockets.add(client);
          client.once("close", () => sockets.delete(client));
          pipeTo(client, () => net.connect(sock));
        });
        const local = await freePort();
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen({ host: "127.0.0.1", port: local }, () => resolve());
        });
        server.unref();
        const close = async () => {
          for (const c of sockets) c.destroy();
          await new Promise<void>((resolve) => server.close(() => resolve()));
          child.kill("SIGKILL");
        };
        servers.add(close);
        return { address: `127.0.0.1:${local}`, port: local, close };
      },
      run(command, args, timeoutMs = 10_000) {
        return new Promise((resolve, reject) => {
          execFile(IP, exec(command, args), { timeout: timeoutMs }, (err, stdout, stderr) => {
            if (err) reject(new Error(`${command} in host ${name}: ${stderr.trim() || err.message}`));
            else resolve(stdout);
          });
        });
      },
    };
    return host;
  }

  const moveAll = async (): Promise<void> => {
    for (const link of linkOf.values()) await ip(["-n", sw, "link", "set", link, "master", "br0"]);
    for (let b = 1; b <= sideBridges; b++) await ip(["-n", sw, "link", "del", `br${b}`]);
    sideBridges = 0;
  };

  const hosts: Hosts = {
    dir: logDir,
    hosts: map,
    host(name) {
      const h = map.get(name);
      if (h === undefined) throw new Error(`no host ${JSON.stringify(name)}; hosts: ${[...map.keys()].join(", ")}`);
      return h;
    },
    get sides() {
      return sides;
    },
    async split(...wanted) {
      const seen = new Set<string>();
      for (const side of wanted) {
        for (const n of side) {
          hosts.host(n);
          if (seen.has(n)) throw new Error(`split: host ${n} is on two sides`);
          seen.add(n);
        }
      }
      await moveAll();
      for (const [i, side] of wanted.entries()) {
        const br = `br${i + 1}`;
        await ip(["-n", sw, "link", "add", br, "type", "bridge"]);
        sideBridges = i + 1;
        await ip(["-n", sw, "link", "set", br, "up"]);
        for (const n of side) await ip(["-n", sw, "link", "set", linkOf.get(n) as string, "master", br]);
      }
      const rest = names.filter((n) => !seen.has(n));
      sides = [...wanted.map((s) => [...s]), ...(rest.length > 0 ? [rest] : [])];
    },
    isolate(...isolated) {
      return hosts.split(isolated);
    },
    async heal() {
      await moveAll();
      sides = [];
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...servers].map((close) => close()));
      await Promise.all([...processes].map((p) => p.kill()));
      await Promise.all(
        [...children].map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null || c.signalCode !== null) return resolve();
              c.once("exit", () => resolve());
              c.kill("SIGKILL");
            }),
        ),
      );
      deleteSync();
      unhook();
      removeTempDir(logDir);
    },
  };
  return hosts;
}
