/**
 * One member of a 3-member etcd cluster silently cut off (a TCP proxy in front of each
 * member stops forwarding without closing anything), first a follower, then the leader,
 * while 20 clients contend for one lock. Every client can still reach the other two
 * members, a quorum, so they must keep working: grants at least half the fault-free rate
 * from about one keep-alive interval after the cut, no holder losing its lock, no waiter
 * giving up, grants back within the election timeout + 2 s once a new leader exists, and
 * no stall after the heal.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import { type Coordinator, connect, type LockHandle } from "../../src/index.js";
import { waitFor } from "../conformance/helpers.js";
import { startEtcdCluster } from "../harness/etcd.js";

const CLIENTS = 20;
const TTL_MS = 6000;
/** The core renews a session every third of its TTL. */
const KEEPALIVE_INTERVAL_MS = Math.floor(TTL_MS / 3);
/** The harness runs etcd with a 500 ms election timeout. */
const ELECTION_TIMEOUT_MS = 500;
/** Rates are measured over windows this long. */
const WINDOW_MS = 3000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("etcd member cut silently", () => {
  it("keeps granting to clients that reach a quorum, while a follower and then the leader are cut", async (t) => {
    const cluster = await startEtcdCluster(3, { proxied: true });
    const coords: Coordinator[] = [];
    let running = true;
    let loops: Promise<void>[] = [];
    t.after(async () => {
      running = false;
      await Promise.all(coords.map((c) => c.close())); // rejects the acquisitions still waiting
      await Promise.race([Promise.allSettled(loops), sleep(10_000)]);
      await cluster.stop();
    });
    const namespace = `cut-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < CLIENTS; i++) {
      // Default request timeout: the driver must fail over without tuning.
      coords.push(await connect(cluster.url, { namespace, ttlMs: TTL_MS, memberId: `c${i}` }));
    }

    const grants: number[] = [];
    const problems: string[] = [];
    const watched = new Set<string>();
    let lastToken = -1n;
    loops = coords.map(async (coord) => {
      const lock = coord.lock("hot");
      while (running) {
        let handle: LockHandle;
        try {
          handle = await lock.acquire({ timeoutMs: 30_000 });
        } catch (error) {
          if (running) problems.push(`${coord.memberId}: a waiter gave up: ${(error as Error).message}`);
          await sleep(50);
          continue;
        }
        grants.push(performance.now());
        const session = coord.session;
        if (session && !watched.has(session.id)) {
          watched.add(session.id);
          session.signal.addEventListener("abort", () => {
            if (running) problems.push(`${coord.memberId}: session ${session.id} lost: ${session.signal.reason}`);
          });
        }
        if (handle.token <= lastToken) problems.push(`token ${handle.token} granted after ${lastToken}`);
        lastToken = handle.token;
        await sleep(2);
        if (handle.signal.aborted && running) problems.push(`${coord.memberId}: holder lost its lock`);
        await handle.release();
      }
    });

    const count = (from: number, to: number) => grants.filter((g) => g >= from && g < to).length;
    /** Grants per second over [start, start + WINDOW_MS), once that window is over. */
    const rateFrom = async (start: number) => {
      const end = start + WINDOW_MS;
      await sleep(Math.max(0, end - performance.now()));
      return (count(start, end) * 1000) / WINDOW_MS;
    };
    /** The longest time without a grant in [from, to). */
    const longestGap = (from: number, to: number) => {
      const inside = [from, ...grants.filter((g) => g >= from && g < to), to];
      let gap = 0;
      for (let i = 1; i < inside.length; i++) gap = Math.max(gap, inside[i]! - inside[i - 1]!);
      return gap;
    };
    const report = (what: string, rate: number) => t.diagnostic(`${what}: ${rate.toFixed(1)} grants/s`);

    await waitFor(() => grants.length >= 40, "40 grants with every member reachable", 20_000);
    const base = await rateFrom(performance.now());
    report("no fault", base);
    assert.ok(base > 0);

    // A follower.
    const [follower] = await cluster.followers();
    assert.ok(follower);
    follower.cut();
    const followerCut = performance.now();
    const duringFollowerCut = await rateFrom(followerCut + KEEPALIVE_INTERVAL_MS);
    report(`follower ${follower.name} cut (from ${KEEPALIVE_INTERVAL_MS} ms after the cut)`, duringFollowerCut);
    follower.heal();
    const followerHealed = performance.now();
    const afterFollowerHeal = await rateFrom(followerHealed);
    report("after the follower's heal", afterFollowerHeal);
    const gapAfterFollowerHeal = longestGap(followerHealed, followerHealed + WINDOW_MS);

    // The leader.
    const leader = await cluster.leader();
    const others = cluster.members.filter((m) => m !== leader);
    leader.cut();
    const leaderCut = performance.now();
    const successor = await cluster.leader({ among: others, timeoutMs: 10_000 });
    const elected = performance.now();
    t.diagnostic(`leader ${leader.name} cut; ${successor.name} leads ${Math.round(elected - leaderCut)} ms later`);
    await waitFor(() => count(elected, Number.POSITIVE_INFINITY) > 0, "a grant after the election", 10_000).catch(
      () => {},
    );
    const resumed = grants.find((g) => g >= elected) ?? Number.POSITIVE_INFINITY;
    const resumedAfter = resumed - elected;
    t.diagnostic(`first grant ${Math.round(resumedAfter)} ms after the new leader`);
    // Resuming has its own bound (below); from then on the rate must hold.
    const duringLeaderCut = Number.isFinite(resumed)
      ? await rateFrom(Math.max(resumed, leaderCut + KEEPALIVE_INTERVAL_MS))
      : 0;
    report(`leader ${leader.name} cut (from the first grant after the election)`, duringLeaderCut);
    leader.heal();
    const leaderHealed = performance.now();
    const afterLeaderHeal = await rateFrom(leaderHealed);
    report("after the leader's heal", afterLeaderHeal);
    const gapAfterLeaderHeal = longestGap(leaderHealed, leaderHealed + WINDOW_MS);
    t.diagnostic(
      `longest gap after the heals: ${Math.round(gapAfterFollowerHeal)} ms, ${Math.round(gapAfterLeaderHeal)} ms`,
    );

    running = false;
    for (const problem of problems.slice(0, 10)) t.diagnostic(problem);
    assert.deepEqual(problems, [], "no holder, session or waiter on a healthy client may be lost");
    assert.ok(duringFollowerCut >= base / 2, `follower cut: ${duringFollowerCut}/s, fault-free ${base}/s`);
    assert.ok(resumedAfter <= ELECTION_TIMEOUT_MS + 2000, `grants resumed ${resumedAfter} ms after the election`);
    assert.ok(duringLeaderCut >= base / 2, `leader cut: ${duringLeaderCut}/s, fault-free ${base}/s`);
    assert.ok(afterFollowerHeal >= base / 2, `after the follower's heal: ${afterFollowerHeal}/s, fault-free ${base}/s`);
    assert.ok(afterLeaderHeal >= base / 2, `after the leader's heal: ${afterLeaderHeal}/s, fault-free ${base}/s`);
    // Nothing waits for the member that came back (a request to it would stall a handoff).
    assert.ok(gapAfterFollowerHeal < 1000, `a ${gapAfterFollowerHeal} ms stall after the follower's heal`);
    assert.ok(gapAfterLeaderHeal < 1000, `a ${gapAfterLeaderHeal} ms stall after the leader's heal`);
  });
});
