import type { BackendDefinition } from "../../core/driver.js";
import { REDIS_OPTION_NAMES } from "./config.js";

/**
 * Redis: coordination on the store most Node.js services already run. Every decision is
 * one Lua script; waiters are woken by pub/sub, not polling; fencing tokens never go below
 * the server clock. One primary (optionally behind Sentinel): not partition-safe. See
 * docs/backends/redis.md.
 */
export const redisBackend: BackendDefinition = {
  name: "redis",
  schemes: ["redis", "rediss", "redis+sentinel"],
  urlForm:
    "redis://[user:password@]host:6379[/db]  (rediss:// for TLS; redis+sentinel://host:26379[,host:26379...]/mastername)",
  summary: "A Redis primary (optionally behind Sentinel): Lua scripts, pub/sub wake-ups. Not partition-safe.",
  guarantees: {
    acrossProcesses: true,
    acrossHosts: true,
    partitionSafe: false,
    fencing: true,
    sharedLocks: true,
    fifo: true,
    pushEvents: true,
    crashRelease: "ttl",
  },
  clientLibraries: ["redis"],
  optionNames: REDIS_OPTION_NAMES,
  hostLists: true,
  load: () => import("./driver.js"),
};
