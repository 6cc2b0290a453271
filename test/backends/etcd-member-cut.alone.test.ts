/**
 * One member of a 3-member etcd cluster silently cut off (a TCP proxy in front of each
 * member stops forwarding without closing anything), first a follower, then the leader,
 * while 20 clients contend for one lock. See fixtures/member-cut.ts for what must hold.
 */
import { startEtcdCluster } from "../harness/etcd.js";
import { quorumCutTest } from "./fixtures/member-cut.js";

/** The harness runs etcd with a 500 ms election timeout. */
const ELECTION_TIMEOUT_MS = 500;

quorumCutTest(
  "etcd",
  async () => {
    const cluster = await startEtcdCluster(3, { proxied: true });
    return {
      url: cluster.url,
      members: cluster.members,
      leader: (among, timeoutMs) =>
        cluster.leader({ ...(among && { among }), ...(timeoutMs !== undefined && { timeoutMs }) }),
      nameOf: (m) => m.name,
      stop: () => cluster.stop(),
    };
  },
  { ttlMs: 6000, resumeWithinMs: ELECTION_TIMEOUT_MS + 2000, electionWithinMs: 10_000 },
);
