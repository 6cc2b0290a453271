/**
 * A holding that will be lost, for the takeover suites: in a process of its own
 * (test/harness/holder.ts, SIGKILLed or revoked) where the backend works across processes,
 * else a coordinator of this process whose session is lost.
 */
import { afterEach } from "node:test";
import type { Coordinator } from "../../src/index.js";
import { Holder } from "../harness/holder.js";
import type { SuiteContext } from "./context.js";
import { cellsCheck } from "./helpers.js";

/**
 * What both takeover suites start from: coordinators with the suite's short TTL, doomed
 * holders, the cells check that skips a backend without them; all stopped and closed after
 * each test.
 */
export function takeoverFixture(
  suite: SuiteContext,
  url: () => string,
): {
  client: (namespace: string) => Promise<Coordinator>;
  doomed: ReturnType<typeof doomedHolders>;
  needCells: ReturnType<typeof cellsCheck>;
} {
  const holders: Holder[] = [];
  const mine: Coordinator[] = [];
  const client = async (namespace: string) => {
    const coord = await suite.client(namespace, { ttlMs: suite.shortTtlMs });
    mine.push(coord);
    return coord;
  };
  afterEach(async () => {
    await Promise.all(holders.splice(0).map((h) => h.stop()));
    await Promise.all(mine.splice(0).map((c) => c.close()));
  });
  return {
    client,
    doomed: doomedHolders(suite, url, holders, client),
    needCells: cellsCheck(url, "backend has no cells (durable records), so no takeover"),
  };
}

/** A holding that will be lost: in a process of its own where the backend allows it. */
export interface Doomed {
  readonly token: bigint;
  readonly memberId: string;
  /** Makes it lost the hard way: SIGKILL, or (memory) a lost session. */
  kill(): Promise<void>;
  /**
   * Makes it lost quickly: revoked where the backend can (no TTL to wait out), else as
   * `kill`. For the tests about what follows a loss rather than about the loss itself.
   */
  end(): Promise<void>;
  /** Resolves, with the epoch ms it happened, when the holder saw its lock lost (its signal fired). */
  lost(): Promise<number>;
  readonly pid: number | undefined;
}

/**
 * Makes doomed holders; the caller stops `holders` and closes the coordinators `client`
 * made after each test.
 */
export function doomedHolders(
  suite: SuiteContext,
  url: () => string,
  holders: Holder[],
  client: (namespace: string) => Promise<Coordinator>,
): (namespace: string, name: string, options: Record<string, unknown>, busyMs?: number) => Promise<Doomed> {
  return async (namespace, name, options, busyMs) => {
    if (suite.guarantees.acrossProcesses) {
      const base = new URL(url());
      base.searchParams.set("namespace", namespace);
      const holder = new Holder(base.href, name, suite.shortTtlMs, undefined, options, busyMs);
      holders.push(holder);
      const acquired = await holder.next((e) => e.event === "acquired", "the holder's grant");
      const kill = async () => holder.stop();
      return {
        token: BigInt(acquired.token ?? ""),
        memberId: `holder-${holder.child.pid}`,
        pid: holder.child.pid,
        kill,
        end: async () => {
          const operator = await client(namespace);
          // Immediate: these tests are about what follows the loss, and the holder dies next.
          if (operator.backend !== "file") await operator.revoke(name, { immediate: true });
          await kill();
        },
        lost: async () => (await holder.next((e) => e.event === "lost", "the revoked holder's signal")).at ?? 0,
      };
    }
    const coord = await client(namespace);
    const handle = await coord.lock(name).acquire(options);
    const fired = new Promise<number>((resolve) => handle.signal.addEventListener("abort", () => resolve(Date.now())));
    return {
      token: handle.token,
      memberId: coord.memberId,
      pid: undefined,
      kill: () => suite.loseSession(coord),
      end: async () => {
        await coord.revoke(name, { immediate: true });
      },
      lost: () => fired,
    };
  };
}
