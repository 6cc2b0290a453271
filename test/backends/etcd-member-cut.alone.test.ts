/**
 * One member of a 3-member etcd cluster silently cut off (a TCP proxy in front of each
 * member stops forwarding without closing anything), first a follower, then the leader,
 * while 20 clients contend for one lock. See fixtures/member-cut.ts for what must hold.
 */
import { describe, it } from "node:test";
import { startEtcdCluster } from "../harness/etcd.js";
import { quorumCutScenario } from "./fixtures/member-cut.js";

const TTL_MS = 6000;
/** The harness runs etcd with a 500 ms election timeout. */
const ELECTION_TIMEOUT_MS = 500;

describe("etcd member cut silently", () => {
  it("keeps granting to clients that reach a quorum, while a follower and then the leader are cut", async (t) => {
    const cluster = await startEtcdCluster(3, { proxied: true });
    await quorumCutScenario(
      t,
      {
        url: cluster.url,
        members: cluster.members,
        leader: (among, timeoutMs) =>
          cluster.leader({ ...(among && { among }), ...(timeoutMs !== undefined && { timeoutMs }) }),
        nameOf: (m) => m.name,
        stop: () => cluster.stop(),
      },
      { ttlMs: TTL_MS, resumeWithinMs: ELECTION_TIMEOUT_MS + 2000, electionWithinMs: 10_000 },
    );
  });
});
