/**
 * The history a chaos run records and the checker reads: sections (one grant each, from the
 * client's report that it holds to its report that it is about to release, stamped on the
 * runner's clock), register operations, faults and client errors. Times are milliseconds of
 * the runner's `performance.now()`: one monotonic clock for every process.
 */
import { builtinBackends } from "../../src/backends/index.js";

/** What a section held. */
export type SectionMode = "exclusive" | "shared" | "semaphore";

/** One grant, as the runner saw it. */
export interface Section {
  readonly id: number;
  readonly pid: number;
  readonly name: string;
  readonly mode: SectionMode;
  /** Decimal string: tokens are bigints. */
  readonly token: string;
  /** Stamped when the client, already holding, reported it; before its first register op. */
  readonly start: number;
  /** Stamped when the client reported it is about to release (or when the runner killed it). */
  end: number | undefined;
  /** How the section ended: a release, the runner's SIGKILL, or the run's end. */
  endedBy: "release" | "kill" | "run-end" | undefined;
  /** Whether the client saw the handle's signal abort during the section. */
  lost: boolean;
  /** When the client reported its signal aborted, if it did. */
  lostAt?: number;
}

/** A write (exclusive holders) or a fencing read (shared holders) through the register. */
export interface RegisterOp {
  readonly at: number;
  readonly section: number;
  readonly kind: "write" | "read";
  readonly name: string;
  readonly token: string;
  /** The register's decision; reads are never refused, they only raise the fence. */
  readonly accepted: boolean;
}

/** Kinds of fault the nemesis injects. */
export type FaultKind = "kill" | "pause" | "cut" | "restart" | "member" | "partition";

/** One injected fault. */
export interface Fault {
  readonly kind: FaultKind;
  readonly at: number;
  /** When the fault was healed (SIGCONT, heal, server back); `at` for a kill. */
  until: number;
  /** The client hit, or undefined for a fault of the server (every client is hit). */
  readonly pid: number | undefined;
  /** The name the client held when it was hit, if any. */
  readonly name: string | undefined;
  /** Free text: which member, how long. */
  readonly detail: string;
  /** Partitions: the client was on a side without a quorum of the servers. */
  readonly minority?: boolean;
}

/** The whole record of a run. */
export interface History {
  readonly backend: string;
  readonly seed: number;
  readonly noop: boolean;
  readonly startedAt: number;
  endedAt: number;
  readonly semaphoreLimit: number;
  /** The clients' session TTL (partitions explain overlaps up to one TTL after the heal). */
  readonly ttlMs?: number;
  /**
   * What the library declares for the backend (absent in older histories: see
   * declaredPartitionSafe). Only where it is false may a member fault explain a split brain.
   */
  readonly partitionSafe?: boolean;
  readonly sections: Section[];
  readonly ops: RegisterOp[];
  readonly faults: Fault[];
  readonly errors: { at: number; pid: number; message: string }[];
  /**
   * Times the runner's own event loop stood still for over a second (a loaded machine):
   * clients wait on its answers, so no section can begin or end meanwhile.
   */
  readonly stalls?: { at: number; ms: number }[];
  /** Client processes that died without the runner killing them. */
  readonly crashes: { at: number; pid: number; description: string }[];
  /** What `inspect()` still showed held at the end (after waiting out the TTL). */
  leftHeld: string[];
}

/**
 * Whether Baton declares the backend of the chaos entry `name` partition-safe: the entry's
 * name up to its first dash is the library backend's ("redis-sentinel" is "redis"). Unknown
 * names count as partition-safe, which leaves the checker at its strictest.
 */
export function declaredPartitionSafe(name: string): boolean {
  const base = name.split("-")[0];
  return builtinBackends.find((b) => b.name === base)?.guarantees.partitionSafe ?? true;
}
