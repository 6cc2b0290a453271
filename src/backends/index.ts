/**
 * Baton's own backends, declared as data. Each `load()` imports the driver (and through it
 * the client library) only when a URL with its scheme is connected.
 *
 * @module
 */
import type { BackendDefinition } from "../core/driver.js";
import { refuseScheme, registerBackend } from "../core/registry.js";
import { etcdBackend } from "./etcd/definition.js";
import { fileBackend } from "./file/definition.js";
import { mysqlBackend } from "./mysql/definition.js";
import { postgresBackend } from "./postgres/definition.js";
import { redisBackend } from "./redis/definition.js";
import { refusedSchemes } from "./refused.js";
import { zookeeperBackend } from "./zookeeper/definition.js";

/** In-process backend: coordinators of one process. */
export const memoryBackend: BackendDefinition = {
  name: "memory",
  schemes: ["memory"],
  urlForm: "memory://[store-name]",
  summary: "In one process only: coordinators sharing a named in-memory store. Not shared with other processes.",
  guarantees: {
    acrossProcesses: false,
    acrossHosts: false,
    partitionSafe: false,
    fencing: true,
    sharedLocks: true,
    fifo: true,
    pushEvents: true,
    crashRelease: "ttl",
  },
  clientLibraries: [],
  optionNames: [],
  load: () => import("./memory/driver.js"),
};

/** Every built-in backend, in documentation order. */
export const builtinBackends: readonly BackendDefinition[] = [
  memoryBackend,
  fileBackend,
  etcdBackend,
  postgresBackend,
  redisBackend,
  zookeeperBackend,
  mysqlBackend,
];

for (const backend of builtinBackends) registerBackend(backend);
for (const refusal of refusedSchemes) refuseScheme(refusal);
