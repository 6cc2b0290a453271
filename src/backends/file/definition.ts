import type { BackendDefinition } from "../../core/driver.js";

/** The backend's name, as errors and telemetry report it. */
export const BACKEND = "file";

/** Local files: many processes on one host, no server. See docs/backends/file.md. */
export const fileBackend: BackendDefinition = {
  name: BACKEND,
  schemes: ["file"],
  urlForm: "file:///path/to/dir  (file: alone: a private per-user directory)",
  summary:
    "Processes on one host, no server: kernel byte-range locks in a constant set of 64 lock files. Not across hosts; not on NFS.",
  guarantees: {
    acrossProcesses: true,
    acrossHosts: false,
    partitionSafe: false,
    fencing: true,
    sharedLocks: true,
    fifo: false,
    pushEvents: true,
    crashRelease: 50,
  },
  clientLibraries: [],
  optionNames: [],
  load: () => import("./driver.js"),
};
