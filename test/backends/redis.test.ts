import { conformance } from "../conformance/suite.js";
import { type RedisServer, startRedis } from "../harness/redis.js";

// Real redis-server from Debian (scripts/ensure-servers.sh redis) on a free loopback port
// with a temporary directory, no persistence.
let server: RedisServer | undefined;

conformance({
  name: "redis",
  url: () => server?.url ?? "redis://127.0.0.1:6379",
  shortTtlMs: 3000,
  contention: { clients: 20, rounds: 20 },
  setup: async () => {
    server = await startRedis();
  },
  teardown: async () => {
    await server?.stop();
  },
});
