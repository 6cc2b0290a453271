import type { BackendDefinition } from "../../core/driver.js";

/** PostgreSQL: coordination on the database a service already runs. See docs/backends/postgres.md. */
export const postgresBackend: BackendDefinition = {
  name: "postgres",
  schemes: ["postgres", "postgresql"],
  urlForm: "postgres://user:password@host:port/database[?schema=baton]",
  summary: "A PostgreSQL server: advisory locks, LISTEN/NOTIFY. Single primary: not partition-safe.",
  guarantees: {
    acrossProcesses: true,
    acrossHosts: true,
    partitionSafe: false,
    fencing: true,
    sharedLocks: true,
    fifo: false,
    pushEvents: true,
    crashRelease: "ttl",
  },
  clientLibraries: ["pg"],
  optionNames: [],
  load: () => import("./driver.js"),
};
