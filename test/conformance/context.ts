import type { ConnectOptions, Coordinator, Guarantees } from "../../src/index.js";

/** What the conformance suite hands the sub-suites it registers (one concern per file). */
export interface SuiteContext {
  readonly guarantees: Guarantees;
  /** Short TTL for tests where a session must expire. */
  readonly shortTtlMs: number;
  /** A fresh client in `namespace`, closed after the suite. */
  client(namespace: string, options?: ConnectOptions): Promise<Coordinator>;
  /** A fresh namespace. */
  ns(): string;
  /** Makes `coord` lose its current session the backend's way. */
  loseSession(coord: Coordinator): Promise<void>;
}
