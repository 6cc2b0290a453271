/** The shape of the raw results (docs/benchmarks/results.json). All times in nanoseconds. */
import type { Machine } from "./machine.js";
import type { Summary } from "./stats.js";

export interface UncontendedRow {
  backend: string;
  impl: string;
  label: string;
  role: string;
  stats: Summary | null;
  /** Operations per second over all rounds' wall time. */
  opsPerSec: number;
  /** p50 of each round, for run-to-run spread. */
  roundP50: number[];
  error?: string;
}

export interface HandoffRow {
  backend: string;
  impl: string;
  label: string;
  role: string;
  waiting: string;
  waiters: number;
  processes: number;
  /** Release -> next grant to a waiter that was already waiting at the release. */
  handoff: Summary | null;
  grants: number;
  grantsPerSec: number;
  /** Share of grants that went back to the client that had just released, while others waited. */
  selfShare: number;
  /** Releases whose waiting clients got nothing before the run ended (counted at the run's end). */
  censored: number;
  errors: string[];
  error?: string;
}

export interface KeyspaceRow {
  backend: string;
  impl: string;
  label: string;
  role: string;
  clients: number;
  processes: number;
  names: number;
  opsPerSec: number;
  latency: Summary | null;
  errors: string[];
  error?: string;
}

export interface FailoverRow {
  backend: string;
  impl: string;
  label: string;
  ttlMs: number | null;
  runs: number[];
  p50: number;
  error?: string;
}

export interface ScaleRow {
  backend: string;
  impl: string;
  n: number;
  held: number;
  acquireNs: number;
  releaseNs: number;
  rssDelta: number;
  serverRssDelta: number | null;
  filesOnDisk: number | null;
  /** Time since the start when 10%, 20%, ... of the locks were held. */
  milestones?: { held: number; ns: number }[];
  error?: string;
}

export interface HerdRow {
  backend: string;
  impl: string;
  waiters: number;
  processes: number;
  releases: number;
  /** Per release, the median of each counter's delta. */
  perRelease: Record<string, number>;
  /** Release -> grant of the next waiter, per step. */
  handoff: Summary | null;
  notes: string[];
  error?: string;
}

export interface SharedRow {
  backend: string;
  impl: string;
  label: string;
  role: string;
  readers: number;
  writers: number;
  durationS: number;
  readsPerSec: number;
  writesPerSec: number;
  readWait: Summary | null;
  writeWait: Summary | null;
  errors: string[];
  error?: string;
}

export interface Target {
  what: string;
  measured: string;
  target: string;
  met: boolean | null;
  note: string;
}

export interface Results {
  meta: {
    date: string;
    quick: boolean;
    backends: string[];
    machine: Machine;
    versions: Record<string, string | null>;
    durationS: number;
    unavailable: Record<string, string>;
    settings: Record<string, unknown>;
  };
  uncontended: UncontendedRow[];
  handoff: HandoffRow[];
  keyspace: KeyspaceRow[];
  failover: FailoverRow[];
  scale: ScaleRow[];
  herd: HerdRow[];
  shared: SharedRow[];
  targets: Target[];
}
