/**
 * One member of a 3-member etcd cluster silently cut off (a TCP proxy in front of each
 * member stops forwarding without closing anything), first a follower, then the leader,
 * while 20 clients contend for one lock. See fixtures/member-cut.ts for what must hold.
 */
import { describe, it } from "node:test";
import { type EtcdMember, startEtcdCluster } from "../harness/etcd.js";
import { type Cuttable, memberCutScenario } from "./fixtures/member-cut.js";

const TTL_MS = 6000;
/** The harness runs etcd with a 500 ms election timeout. */
const ELECTION_TIMEOUT_MS = 500;

const named = (m: EtcdMember): Cuttable & { member: EtcdMember } => ({
  member: m,
  name: m.name,
  cut: () => m.cut(),
  heal: () => m.heal(),
});

describe("etcd member cut silently", () => {
  it("keeps granting to clients that reach a quorum, while a follower and then the leader are cut", async (t) => {
    const cluster = await startEtcdCluster(3, { proxied: true });
    t.after(() => cluster.stop());
    await memberCutScenario(t, {
      url: cluster.url,
      ttlMs: TTL_MS,
      words: { bystander: "follower", leader: "leader" },
      resumeWithinMs: ELECTION_TIMEOUT_MS + 2000,
      async bystander() {
        const [follower] = await cluster.followers();
        if (!follower) throw new Error("no follower");
        return named(follower);
      },
      leader: async () => named(await cluster.leader()),
      async successor(old) {
        const others = cluster.members.filter((m) => m !== (old as ReturnType<typeof named>).member);
        return (await cluster.leader({ among: others, timeoutMs: 10_000 })).name;
      },
    });
  });
});
