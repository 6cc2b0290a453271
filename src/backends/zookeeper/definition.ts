import type { BackendDefinition } from "../../core/driver.js";

/** Apache ZooKeeper 3.5+: partition-safe coordination on an ensemble. See docs/backends/zookeeper.md. */
export const zookeeperBackend: BackendDefinition = {
  name: "zookeeper",
  schemes: ["zookeeper", "zk"],
  urlForm: "zookeeper://[user:password@]host:2181[,host:2181...][/chroot][?sessionTimeout=10s]  (alias zk://)",
  summary: "A ZooKeeper 3.5+ ensemble: consensus-backed, survives member failures and partitions.",
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
  clientLibraries: ["node-zookeeper-client"],
  // Parsed by config.ts.
  optionNames: ["endpoints", "sessionTimeout"],
  hostLists: true,
  load: () => import("./driver.js"),
};
