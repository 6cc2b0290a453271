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
import { memoryBackend } from "./memory/definition.js";
import { mysqlBackend } from "./mysql/definition.js";
import { postgresBackend } from "./postgres/definition.js";
import { redisBackend } from "./redis/definition.js";
import { refusedSchemes } from "./refused.js";
import { zookeeperBackend } from "./zookeeper/definition.js";

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

export { memoryBackend };

for (const backend of builtinBackends) registerBackend(backend);
for (const refusal of refusedSchemes) refuseScheme(refusal);
