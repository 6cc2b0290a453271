/**
 * A member of a 3-server ZooKeeper ensemble silently cut off from clients and peers (a
 * proxy on every link into and out of it stops forwarding without closing anything):
 * first a follower, then the leader, under 20 contending clients. See
 * fixtures/member-cut.ts for what must hold.
 */
import { startZooKeeperEnsemble } from "../harness/zookeeper.js";
import { quorumCutTest } from "./fixtures/member-cut.js";

/** The harness's tickTime is 100 ms, syncLimit 20: a follower gives up on a silent leader after 2 s. */
const LEADER_LOSS_MS = 2000;

quorumCutTest(
  "zookeeper",
  async () => {
    const ensemble = await startZooKeeperEnsemble(3, { proxied: true });
    return {
      url: ensemble.url,
      members: ensemble.members,
      leader: (among, timeoutMs) => ensemble.leader(timeoutMs, among),
      nameOf: (m) => `zk${m.id}`,
      stop: () => ensemble.stop(),
    };
  },
  {
    // Longer than etcd's 6 s: a follower needs 2 s (syncLimit) to give up on a silent leader,
    // and on this loaded machine the election that follows took 2-7 s; a session outlives the
    // leaderless time only if four fifths of its timeout are longer than that.
    ttlMs: 15_000,
    // Sessions move to a live server, which re-validates them with the new leader.
    resumeWithinMs: LEADER_LOSS_MS + 2000,
    electionWithinMs: 15_000,
  },
);
