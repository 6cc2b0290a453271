/**
 * Real etcd servers for tests: a single node (`startEtcd`) or a static
 * 3-member cluster on loopback (`startEtcdCluster`). Requires the `etcd`
 * binary (see scripts/ensure-servers.sh). Every server gets fresh free ports
 * and a fresh temp data dir; logs go to a file whose tail is included in
 * startup errors.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { freePort } from "./ports.js";
import { type Proxy as TcpProxy, startProxy } from "./proxy.js";
import { makeTempDir, removeTempDir, retryOnAddressInUse, ServerProcess, waitUntil } from "./proc.js";

const HOST = "127.0.0.1";
const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

/** Fast raft timing for tests. */
const TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"];

export function etcdBinary(): string {
  const fromEnv = process.env.ETCD_BIN;
  if (fromEnv) return fromEnv;
  for (const candidate of ["/usr/bin/etcd", "/usr/local/bin/etcd"]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  return "etcd"; // PATH lookup; spawn reports ENOENT if missing
}

export function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Don't let ETCD_* from the environment reconfigure our servers.
  for (const key of Object.keys(env)) if (key.startsWith("ETCD_")) delete env[key];
  // etcd 3.4 refuses to start on architectures other than amd64/ppc64le
  // unless ETCD_UNSUPPORTED_ARCH names the (Go) architecture.
  const goArch: Record<string, string> = { arm64: "arm64", arm: "arm", ia32: "386", s390x: "s390x", ppc64: "ppc64le" };
  if (process.arch !== "x64" && process.arch !== "ppc64") {
    env.ETCD_UNSUPPORTED_ARCH = goArch[process.arch] ?? process.arch;
  }
  return env;
}

/** One member's command-line settings (`host` defaults to 127.0.0.1; hosts.ts gives others). */
export interface MemberConfig {
  name: string;
  host?: string;
  clientPort: number;
  peerPort: number;
  /** Where clients and peers are told to connect (a proxy port, or the real one). */
  advertisedClientPort: number;
  advertisedPeerPort: number;
  dataDir: string;
  logFile: string;
}

/** etcd's arguments for member `m`, with this harness's fast raft timing. */
export function memberArgs(
  m: MemberConfig,
  initialCluster: string,
  token: string,
  state: "new" | "existing",
): string[] {
  const host = m.host ?? HOST;
  return [
    "--name",
    m.name,
    "--data-dir",
    m.dataDir,
    "--listen-client-urls",
    `http://${host}:${m.clientPort}`,
    "--advertise-client-urls",
    `http://${host}:${m.advertisedClientPort}`,
    "--listen-peer-urls",
    `http://${host}:${m.peerPort}`,
    "--initial-advertise-peer-urls",
    `http://${host}:${m.advertisedPeerPort}`,
    "--initial-cluster",
    initialCluster,
    "--initial-cluster-token",
    token,
    "--initial-cluster-state",
    state,
    ...TIMING,
    "--logger",
    "zap",
    "--log-outputs",
    "stderr",
    "--log-level",
    "info",
  ];
}

async function isHealthy(clientPort: number): Promise<boolean> {
  const res = await fetch(`http://${HOST}:${clientPort}/health`, { signal: AbortSignal.timeout(1_000) });
  const body = (await res.json()) as { health?: string };
  return res.ok && body.health === "true";
}

async function servesPeerHttp(peerPort: number): Promise<boolean> {
  const res = await fetch(`http://${HOST}:${peerPort}/version`, { signal: AbortSignal.timeout(1_000) });
  await res.arrayBuffer();
  return res.ok;
}

interface StatusResponse {
  header?: { member_id?: string; cluster_id?: string };
  leader?: string;
}

/** POST /v3/maintenance/status via etcd's grpc-gateway. */
async function maintenanceStatus(clientPort: number): Promise<StatusResponse> {
  const res = await fetch(`http://${HOST}:${clientPort}/v3/maintenance/status`, {
    method: "POST",
    body: "{}",
    headers: { "content-type": "application/json" },
    signal: AbortSignal.timeout(1_000),
  });
  if (!res.ok) throw new Error(`status on :${clientPort}: HTTP ${res.status}`);
  return (await res.json()) as StatusResponse;
}

// ---------------------------------------------------------------------------
// Member: one etcd process (used for both single nodes and cluster members)

export interface EtcdMember {
  readonly name: string;
  /** "127.0.0.1:PORT" where clients connect (the member's proxy in a proxied cluster). */
  readonly clientEndpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** PID of the current etcd process (changes after `start()`). */
  readonly pid: number;
  /** Whether the current process is alive. */
  readonly running: boolean;
  /** Graceful stop: SIGTERM, then SIGKILL after a timeout. Keeps the data dir. */
  stop(): Promise<void>;
  /** SIGKILL. Keeps the data dir. */
  kill(): Promise<void>;
  /** Restart a stopped/killed member with the same data dir and ports; waits until healthy. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT. */
  pause(): void;
  resume(): void;
  /**
   * Proxied clusters only: silences the member, as a failed switch does: every connection
   * opened to it (by clients, and by peers, which receive its raft messages on them) stops
   * forwarding, and none is closed. It still hears its peers on the connections it opened
   * to them, so between members the cut is one-way: a cut follower keeps hearing the
   * leader and starts no elections; a cut leader's followers elect another one, whom it
   * then hears and follows.
   */
  cut(): void;
  /** Ends a `cut()`: connections that were silenced carry on, with what was held back. */
  heal(): void;
}

class Member implements EtcdMember {
  private proc: ServerProcess | undefined;
  private everStarted = false;

  constructor(
    private readonly cfg: MemberConfig,
    private readonly initialCluster: string,
    private readonly token: string,
    /** Health probes for restarts need quorum, i.e. the other members. */
    private readonly healthTimeoutMs: number,
    private readonly proxies: readonly TcpProxy[] = [],
    private readonly extraArgs: readonly string[] = [],
  ) {}

  get name(): string {
    return this.cfg.name;
  }
  get clientEndpoint(): string {
    return `${HOST}:${this.cfg.advertisedClientPort}`;
  }
  get clientPort(): number {
    return this.cfg.clientPort;
  }
  get peerPort(): number {
    return this.cfg.peerPort;
  }
  get dataDir(): string {
    return this.cfg.dataDir;
  }
  get logFile(): string {
    return this.cfg.logFile;
  }
  get pid(): number {
    if (this.proc === undefined) throw new Error(`etcd ${this.name}: never started`);
    return this.proc.pid;
  }
  get running(): boolean {
    return this.proc?.running ?? false;
  }
  get process(): ServerProcess | undefined {
    return this.proc;
  }

  /** Spawn without waiting for health. */
  spawn(): ServerProcess {
    if (this.proc?.running) throw new Error(`etcd ${this.name}: already running (pid ${this.proc.pid})`);
    const state = this.everStarted ? "existing" : "new";
    this.everStarted = true;
    fs.appendFileSync(this.cfg.logFile, `\n[harness] starting etcd ${this.name} (state ${state})\n`);
    this.proc = new ServerProcess(
      `etcd ${this.name}`,
      etcdBinary(),
      [...memberArgs(this.cfg, this.initialCluster, this.token, state), ...this.extraArgs],
      { env: etcdEnv(), logFile: this.cfg.logFile, cwd: path.dirname(this.cfg.dataDir) },
    );
    return this.proc;
  }

  async waitHealthy(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined) throw new Error(`etcd ${this.name}: not started`);
    await waitUntil(`etcd ${this.name} on ${this.clientEndpoint}`, () => isHealthy(this.cfg.clientPort), {
      timeoutMs: this.healthTimeoutMs,
      procs: [proc],
    });
  }

  async start(): Promise<void> {
    this.spawn();
    await this.waitHealthy();
  }

  async stop(): Promise<void> {
    await this.proc?.stop("SIGTERM", STOP_TIMEOUT_MS);
  }

  async kill(): Promise<void> {
    await this.proc?.kill();
  }

  pause(): void {
    this.proc?.signal("SIGSTOP");
  }

  resume(): void {
    this.proc?.signal("SIGCONT");
  }

  cut(): void {
    if (this.proxies.length === 0)
      throw new Error(`etcd ${this.name}: cut() needs startEtcdCluster(n, { proxied: true })`);
    for (const proxy of this.proxies) proxy.cut();
  }

  heal(): void {
    if (this.proxies.length === 0) throw new Error(`etcd ${this.name}: heal() needs a proxied cluster`);
    for (const proxy of this.proxies) proxy.heal({ resumeExisting: true });
  }

  async closeProxies(): Promise<void> {
    await Promise.all(this.proxies.map((p) => p.close()));
  }
}

async function allocateMembers(names: readonly string[], root: string): Promise<MemberConfig[]> {
  const cfgs: MemberConfig[] = [];
  for (const name of names) {
    const dir = path.join(root, name);
    fs.mkdirSync(dir, { recursive: true });
    const clientPort = await freePort();
    const peerPort = await freePort();
    cfgs.push({
      name,
      clientPort,
      peerPort,
      advertisedClientPort: clientPort,
      advertisedPeerPort: peerPort,
      dataDir: path.join(dir, "data"),
      logFile: path.join(dir, "etcd.log"),
    });
  }
  return cfgs;
}

// ---------------------------------------------------------------------------
// Single node

export interface EtcdServer {
  readonly name: string;
  /** ["127.0.0.1:PORT"], suitable for `new Etcd3({ hosts })`. */
  readonly endpoints: string[];
  /** "etcd://127.0.0.1:PORT" */
  readonly url: string;
  readonly clientPort: number;
  /** PID of the current etcd process. */
  readonly pid: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** SIGTERM (SIGKILL after 10 s), then remove the data dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL; keeps the data dir so `restart()` is possible. */
  kill(): Promise<void>;
  /** Stop (if running) and start again on the same port and data dir. */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT. */
  pause(): void;
  resume(): void;
}

export interface StartEtcdOptions {
  name?: string;
}

export function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  return retryOnAddressInUse(() => startEtcdOnce(opts));
}

async function startEtcdOnce(opts: StartEtcdOptions): Promise<EtcdServer> {
  const name = opts.name ?? "baton-etcd";
  const root = makeTempDir("baton-etcd-");
  try {
    const [cfg] = await allocateMembers([name], root);
    if (cfg === undefined) throw new Error("unreachable");
    const member = new Member(
      cfg,
      `${name}=http://${HOST}:${cfg.peerPort}`,
      `baton-${randomBytes(6).toString("hex")}`,
      STARTUP_TIMEOUT_MS,
    );
    try {
      await member.start();
    } catch (err) {
      await member.kill();
      throw err;
    }
    let stopped = false;
    const server: EtcdServer = {
      name,
      endpoints: [member.clientEndpoint],
      url: `etcd://${member.clientEndpoint}`,
      clientPort: cfg.clientPort,
      get pid() {
        return member.pid;
      },
      dataDir: cfg.dataDir,
      logFile: cfg.logFile,
      async stop() {
        if (stopped) return;
        stopped = true;
        await member.stop();
        removeTempDir(root);
      },
      kill: () => member.kill(),
      async restart() {
        if (stopped) throw new Error("etcd: restart() after stop()");
        await member.stop();
        await member.start();
      },
      pause: () => member.pause(),
      resume: () => member.resume(),
    };
    return server;
  } catch (err) {
    removeTempDir(root);
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Cluster

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** All client endpoints, "127.0.0.1:PORT" each. */
  readonly endpoints: string[];
  /** "etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" */
  readonly url: string;
  /**
   * The current leader, as agreed by the running members (or only by those in
   * `among`). Waits (bounded) through an election in progress.
   */
  leader(opts?: { timeoutMs?: number; among?: readonly EtcdMember[] }): Promise<EtcdMember>;
  /** Running members other than the current leader. */
  followers(opts?: { timeoutMs?: number }): Promise<EtcdMember[]>;
  /** Stop all members and remove all data dirs. Idempotent. */
  stop(): Promise<void>;
}

export interface StartEtcdClusterOptions {
  /**
   * Put a TCP proxy (test/harness/proxy.ts) in front of each member's client port and
   * peer port, so that `member.cut()` can silence it. The harness itself (health,
   * `leader()`) still talks to the members directly.
   */
  proxied?: boolean;
  /** More etcd flags for every member, e.g. `["--pre-vote"]`. */
  extraArgs?: readonly string[];
}

export function startEtcdCluster(size = 3, opts: StartEtcdClusterOptions = {}): Promise<EtcdCluster> {
  if (!Number.isInteger(size) || size < 1) throw new Error(`startEtcdCluster: bad size ${size}`);
  return retryOnAddressInUse(() => startEtcdClusterOnce(size, opts));
}

async function startEtcdClusterOnce(size: number, opts: StartEtcdClusterOptions): Promise<EtcdCluster> {
  const root = makeTempDir("baton-etcd-cluster-");
  const members: Member[] = [];
  const proxies: TcpProxy[] = [];
  try {
    const names = Array.from({ length: size }, (_, i) => `m${i + 1}`);
    const cfgs = await allocateMembers(names, root);
    const memberProxies: TcpProxy[][] = [];
    for (const [i, cfg] of cfgs.entries()) {
      memberProxies[i] = [];
      if (!opts.proxied) continue;
      const client = await startProxy({ host: HOST, port: cfg.clientPort });
      const peer = await startProxy({ host: HOST, port: cfg.peerPort });
      proxies.push(client, peer);
      memberProxies[i] = [client, peer];
      cfgs[i] = { ...cfg, advertisedClientPort: client.port, advertisedPeerPort: peer.port };
    }
    const initialCluster = cfgs.map((c) => `${c.name}=http://${HOST}:${c.advertisedPeerPort}`).join(",");
    const token = `baton-${randomBytes(6).toString("hex")}`;
    for (const [i, cfg] of cfgs.entries()) {
      members.push(new Member(cfg, initialCluster, token, STARTUP_TIMEOUT_MS, memberProxies[i], opts.extraArgs));
    }
    // Start members one at a time, each once the previous one serves peer
    // HTTP. Started all at once, a new member's bootstrap check
    // (isMemberBootstrapped) asks peers that are listening but not yet
    // serving, and waits out a 1 s timeout per peer: ~2 s instead of ~0.2 s.
    for (const m of members) {
      const proc = m.spawn();
      await waitUntil(`etcd ${m.name} peer port ${m.peerPort}`, () => servesPeerHttp(m.peerPort), {
        timeoutMs: STARTUP_TIMEOUT_MS,
        intervalMs: 10,
        procs: [proc],
      });
    }
    // Healthy (= has a leader) needs a quorum, so wait only after all started.
    await Promise.all(members.map((m) => m.waitHealthy()));
  } catch (err) {
    await Promise.all(members.map((m) => m.kill()));
    await Promise.all(proxies.map((p) => p.close()));
    removeTempDir(root);
    throw err;
  }

  const endpoints = members.map((m) => m.clientEndpoint);

  async function findLeader(timeoutMs: number, among: readonly EtcdMember[] = members): Promise<Member> {
    let found: Member | undefined;
    await waitUntil(
      "etcd cluster leader",
      async () => {
        const running = members.filter((m) => m.running && among.includes(m));
        const statuses = await Promise.allSettled(running.map((m) => maintenanceStatus(m.clientPort)));
        const byId = new Map<string, Member>();
        const leaders = new Set<string>();
        statuses.forEach((s, i) => {
          const m = running[i];
          if (s.status !== "fulfilled" || m === undefined) return;
          const id = s.value.header?.member_id;
          if (id !== undefined) byId.set(id, m);
          if (s.value.leader !== undefined && s.value.leader !== "0") leaders.add(s.value.leader);
        });
        // Require agreement among the members that answered.
        if (leaders.size !== 1) return false;
        const [leaderId] = leaders;
        found = leaderId === undefined ? undefined : byId.get(leaderId);
        return found !== undefined;
      },
      { timeoutMs, procs: [] },
    );
    if (found === undefined) throw new Error("unreachable");
    return found;
  }

  let stopped = false;
  return {
    members,
    endpoints,
    url: `etcd://${endpoints.join(",")}`,
    leader: (opts) => findLeader(opts?.timeoutMs ?? 10_000, opts?.among),
    async followers(opts) {
      const leader = await findLeader(opts?.timeoutMs ?? 10_000);
      return members.filter((m) => m !== leader && m.running);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // Kill rather than SIGTERM: a graceful leader stop tries to transfer
      // leadership to members that are going away too, which only adds delay.
      await Promise.all(members.map((m) => m.kill()));
      await Promise.all(members.map((m) => m.closeProxies()));
      removeTempDir(root);
    },
  };
}
