import { expireSession } from "../../src/testing.js";
import { conformance } from "../conformance/suite.js";
import { startZooKeeper, type ZooKeeperServer } from "../harness/zookeeper.js";

// Real ZooKeeper from Debian's package (scripts/ensure-servers.sh zookeeper), standalone,
// on a free loopback port with a temporary data directory.
let server: ZooKeeperServer | undefined;

conformance({
  name: "zookeeper",
  url: () => server?.url ?? "zookeeper://127.0.0.1:2181",
  shortTtlMs: 3000,
  contention: { clients: 20, rounds: 20 },
  // The core presumes the session lost and closes it; the server then deletes its nodes.
  loseSession: async (coord) => {
    await expireSession(coord);
  },
  setup: async () => {
    server = await startZooKeeper();
  },
  teardown: async () => {
    await server?.stop();
  },
});
