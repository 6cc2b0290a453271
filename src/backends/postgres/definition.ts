import type { BackendDefinition } from "../../core/driver.js";
import { BACKEND, POSTGRES_OPTION_NAMES } from "./options.js";

/**
 * PostgreSQL: coordination on the database a service already runs. Locks are session
 * advisory locks (server-side waiting, freed when the holder's connection drops); fencing
 * counters, sessions and records live in the backend's own schema; watches use
 * LISTEN/NOTIFY. Single primary: not partition-safe. See docs/backends/postgres.md.
 */
export const postgresBackend: BackendDefinition = {
  name: BACKEND,
  schemes: ["postgres", "postgresql"],
  urlForm: "postgres://user:password@host:port/database[?schema=baton&maxConnections=8]",
  summary: "A PostgreSQL server: advisory locks, LISTEN/NOTIFY. Single primary: not partition-safe.",
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
  clientLibraries: ["pg"],
  optionNames: POSTGRES_OPTION_NAMES,
  load: () => import("./driver.js"),
};
