import type { BackendDefinition } from "../../core/driver.js";

/** etcd v3: partition-safe coordination on a consensus cluster. See docs/backends/etcd.md. */
export const etcdBackend: BackendDefinition = {
  name: "etcd",
  schemes: ["etcd", "etcds"],
  urlForm: "etcd://[user:password@]host:port[,host:port...][?namespace=app]  (etcds:// for TLS)",
  summary: "A real etcd v3 cluster: consensus-backed, survives member failures and partitions.",
  guarantees: {
    acrossProcesses: true,
    acrossHosts: true,
    partitionSafe: true,
    fencing: true,
    sharedLocks: true,
    fifo: true,
    pushEvents: true,
    crashRelease: "ttl",
  },
  clientLibraries: ["etcd3"],
  // Parsed by config.ts.
  optionNames: ["endpoints", "ca", "cert", "key", "username", "password", "requestTimeoutMs"],
  hostLists: true,
  load: () => import("./driver.js"),
};
