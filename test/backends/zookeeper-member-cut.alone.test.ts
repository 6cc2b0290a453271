/**
 * A member of a 3-server ZooKeeper ensemble silently cut off from clients and peers (a
 * proxy on every link into and out of it stops forwarding without closing anything):
 * first a follower, then the leader, under 20 contending clients. See
 * fixtures/member-cut.ts for what must hold.
 */
import { describe, it } from "node:test";
import { startZooKeeperEnsemble } from "../harness/zookeeper.js";
import { quorumCutScenario } from "./fixtures/member-cut.js";

// Longer than etcd's 6 s: a follower needs 2 s (syncLimit) to give up on a silent leader, and
// on this loaded machine the election that follows took 2-7 s; a session outlives the
// leaderless time only if four fifths of its timeout are longer than that.
const TTL_MS = 15_000;
/** The harness's tickTime is 100 ms, syncLimit 20: a follower gives up on a silent leader after 2 s. */
const LEADER_LOSS_MS = 2000;

describe("zookeeper member cut silently", () => {
  it("keeps granting to clients that reach a quorum, while a follower and then the leader are cut", async (t) => {
    const ensemble = await startZooKeeperEnsemble(3, { proxied: true });
    await quorumCutScenario(
      t,
      {
        url: ensemble.url,
        members: ensemble.members,
        leader: (among, timeoutMs) => ensemble.leader(timeoutMs, among),
        nameOf: (m) => `zk${m.id}`,
        stop: () => ensemble.stop(),
      },
      // Sessions move to a live server, which re-validates them with the new leader.
      { ttlMs: TTL_MS, resumeWithinMs: LEADER_LOSS_MS + 2000, electionWithinMs: 15_000 },
    );
  });
});
