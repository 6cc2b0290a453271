/**
 * `npm run bench -- --latency [--backends etcd,postgres,mysql,redis,zookeeper] [--rtt 10,50] [--rounds N] [--untracked]`
 *
 * Latency in round trips (issue 19): every coordinator reaches its server through the
 * harness proxy with an added round-trip time split evenly between the two directions
 * (kernel queueing disciplines are not available here). For each server backend and each
 * added RTT (and 0, the baseline of the same run), it measures the median of:
 *
 * - uncontended `acquire()` and `release()` of an exclusive lock, one coordinator;
 * - handoff: B waits for the lock A holds; from A calling `release()` to B's grant.
 *
 * and prints each in milliseconds and in added round trips. With `--untracked`, each row is
 * measured again with `takeover: false` right after it (what takeover tracking by default
 * costs, in the same run). The physical floor is one
 * round trip to grant and one to release; a handoff needs at least the release's trip to
 * the server and the grant's trip to the waiter: one round trip.
 */
import { connect } from "../src/index.js";
import { startEtcd } from "../test/harness/etcd.js";
import { startPostgres } from "../test/harness/postgres.js";
import { delay } from "../test/harness/proc.js";
import { type Proxy as TcpProxy, startProxy } from "../test/harness/proxy.js";
import { startMariadb } from "../test/harness/mariadb.js";
import { startRedis } from "../test/harness/redis.js";
import { startZooKeeper } from "../test/harness/zookeeper.js";

interface Server {
  host: string;
  port: number;
  url(port: number): string;
  stop(): Promise<void>;
}

const SERVERS: Record<string, () => Promise<Server>> = {
  async etcd() {
    const s = await startEtcd();
    return { host: "127.0.0.1", port: s.clientPort, url: (p) => `etcd://127.0.0.1:${p}`, stop: () => s.stop() };
  },
  async postgres() {
    const s = await startPostgres();
    return { host: s.host, port: s.port, url: (p) => s.url.replace(`:${s.port}/`, `:${p}/`), stop: () => s.stop() };
  },
  async mysql() {
    const s = await startMariadb();
    return { host: s.host, port: s.port, url: (p) => s.url.replace(`:${s.port}/`, `:${p}/`), stop: () => s.stop() };
  },
  async redis() {
    const s = await startRedis();
    return { host: "127.0.0.1", port: s.port, url: (p) => `redis://127.0.0.1:${p}`, stop: () => s.stop() };
  },
  async zookeeper() {
    const s = await startZooKeeper();
    const port = Number(s.address.split(":").at(-1));
    return { host: "127.0.0.1", port, url: (p) => `zookeeper://127.0.0.1:${p}`, stop: () => s.stop() };
  },
};

function args(argv: string[]) {
  const get = (flag: string, fallback: string) => {
    const i = argv.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
    if (i < 0) return fallback;
    const a = argv[i] as string;
    return a.includes("=") ? a.slice(flag.length + 1) : (argv[i + 1] ?? fallback);
  };
  const backends = get("--backends", Object.keys(SERVERS).join(",")).split(",");
  for (const b of backends) {
    if (!(b in SERVERS)) throw new Error(`--backends: unknown ${b}; known: ${Object.keys(SERVERS).join(", ")}`);
  }
  const rtts = get("--rtt", "10,50").split(",").map(Number);
  if (rtts.some((r) => !Number.isFinite(r) || r <= 0)) throw new Error("--rtt: positive milliseconds, e.g. 10,50");
  const rounds = Number(get("--rounds", "15"));
  if (!Number.isInteger(rounds) || rounds < 3) throw new Error("--rounds: an integer >= 3");
  const variants: { label: string; options: { takeover?: false } }[] = [{ label: "", options: {} }];
  if (argv.includes("--untracked")) variants.push({ label: " (takeover: false)", options: { takeover: false } });
  return { backends, rtts, rounds, variants };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

/** Medians in ms of acquire, release and handoff with `rtt` ms added. */
async function measure(server: Server, proxy: TcpProxy, rtt: number, rounds: number, options: { takeover?: false }) {
  proxy.setLatency(rtt === 0 ? {} : { up: { ms: rtt / 2 }, down: { ms: rtt / 2 } });
  const namespace = `latency-${rtt}-${process.pid}`;
  const url = server.url(proxy.port);
  const a = await connect(url, { namespace, memberId: "a" });
  const b = await connect(url, { namespace, memberId: "b" });
  try {
    const acquire: number[] = [];
    const release: number[] = [];
    const lock = a.lock("uncontended");
    for (let i = 0; i < rounds + 2; i++) {
      const t0 = performance.now();
      const h = await lock.acquire(options);
      const t1 = performance.now();
      await h.release();
      const t2 = performance.now();
      if (i >= 2) {
        acquire.push(t1 - t0);
        release.push(t2 - t1);
      }
    }
    const handoff: number[] = [];
    for (let i = 0; i < rounds + 1; i++) {
      const held = await a.lock("handoff").acquire(options);
      const waiting = b.lock("handoff").acquire(options);
      // Let the waiter's request reach the server and queue (a few round trips).
      await delay(4 * rtt + 50);
      const t0 = performance.now();
      void held.release();
      const granted = await waiting;
      const ms = performance.now() - t0;
      await granted.release();
      if (i >= 1) handoff.push(ms);
    }
    return { acquire: median(acquire), release: median(release), handoff: median(handoff) };
  } finally {
    await a.close();
    await b.close();
  }
}

const { backends, rtts, rounds, variants } = args(process.argv.slice(2).filter((a) => a !== "--latency"));
const rows: string[] = [];
for (const name of backends) {
  const server = await (SERVERS[name] as () => Promise<Server>)();
  const proxy = await startProxy({ host: server.host, port: server.port });
  try {
    for (const { label, options } of variants) {
      const base = await measure(server, proxy, 0, rounds, options);
      rows.push(
        `| ${name}${label} | 0 (baseline) | ${base.acquire.toFixed(1)} ms | ${base.release.toFixed(1)} ms | ${(base.acquire + base.release).toFixed(1)} ms | ${base.handoff.toFixed(1)} ms |`,
      );
    }
    for (const rtt of rtts) {
      for (const { label, options } of variants) {
        const m = await measure(server, proxy, rtt, rounds, options);
        const rt = (ms: number) => `${ms.toFixed(1)} ms = ${(ms / rtt).toFixed(2)} RT`;
        rows.push(
          `| ${name}${label} | ${rtt} ms | ${rt(m.acquire)} | ${rt(m.release)} | ${rt(m.acquire + m.release)} | ${rt(m.handoff)} |`,
        );
      }
      process.stderr.write(`latency: ${name} +${rtt} ms done\n`);
    }
  } finally {
    await proxy.close();
    await server.stop();
  }
}
process.stdout.write(
  `Medians of ${rounds} rounds; RT = one added round trip.\n\n| backend | added RTT | acquire | release | acquire + release | handoff |\n| --- | --- | --- | --- | --- | --- |\n${rows.join("\n")}\n`,
);
process.exit(0);
