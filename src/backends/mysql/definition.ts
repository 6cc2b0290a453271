import type { BackendDefinition } from "../../core/driver.js";
import { BACKEND, MYSQL_OPTION_NAMES } from "./options.js";

/**
 * MySQL / MariaDB: coordination on the database a service already runs. Every request is
 * a row whose connection holds a `GET_LOCK` (freed when the holder's connection drops);
 * waits sleep server-side in `GET_LOCK` on the request ahead; fencing counters, sessions
 * and records live in InnoDB tables. Record watches poll (no LISTEN/NOTIFY in MySQL).
 * Single server: not partition-safe; Galera is refused. See docs/backends/mysql.md.
 */
export const mysqlBackend: BackendDefinition = {
  name: BACKEND,
  schemes: ["mysql", "mariadb"],
  urlForm: "mysql://user:password@host:3306/database[?prefix=baton_&maxConnections=8]",
  summary:
    "A MySQL or MariaDB server: GET_LOCK, server-side waits; watches poll. Single server: not partition-safe; no Galera.",
  guarantees: {
    acrossProcesses: true,
    acrossHosts: true,
    partitionSafe: false,
    fencing: true,
    sharedLocks: true,
    fifo: true,
    pushEvents: false,
    crashRelease: "ttl",
  },
  clientLibraries: ["mysql2"],
  optionNames: MYSQL_OPTION_NAMES,
  load: () => import("./driver.js"),
};
