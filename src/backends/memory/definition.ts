/**
 * `memory://[store-name]`: coordinators of one process sharing a named in-memory store
 * (the granting rule's queue table, with sessions that really expire).
 *
 * @module
 */
import type { BackendDefinition } from "../../core/driver.js";

/** The backend's name, as errors and telemetry report it. */
export const BACKEND = "memory";

/** In-process backend: coordinators of one process. */
export const memoryBackend: BackendDefinition = {
  name: BACKEND,
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
  load: () => import("./driver.js"),
};
