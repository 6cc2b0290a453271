import type { ConnectOptions, Coordinator, Guarantees } from "../../src/index.js";

/** What a backend's test file gives the suite. */
export interface ConformanceTarget {
  /** Backend name, for test titles. */
  readonly name: string;
  /** The backend's URL (each test adds its own namespace). */
  readonly url: () => string;
  /** Short TTL used where a test needs a session to expire (>= 1000). */
  readonly shortTtlMs: number;
  /** Mutual-exclusion load: clients x acquisitions each. */
  readonly contention: { readonly clients: number; readonly rounds: number };
  /**
   * Cuts a client off so that its session is lost: by default its keep-alives stop, so its
   * local deadline fires and then the backend expires the lease.
   */
  readonly loseSession?: (coord: Coordinator) => Promise<void>;
  /** Starts servers; called once before the suite. */
  readonly setup?: () => Promise<void>;
  /** Stops servers; called once after the suite. */
  readonly teardown?: () => Promise<void>;
}

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

/** What the suite hands the per-recipe files: the context, plus several clients and the target. */
export interface RecipeContext extends SuiteContext {
  /** `n` fresh clients in `namespace`, each with its own member id. */
  clients(namespace: string, n: number, options?: ConnectOptions): Promise<Coordinator[]>;
  readonly target: ConformanceTarget;
}
