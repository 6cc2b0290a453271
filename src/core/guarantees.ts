import { InvalidArgumentError, MissingGuaranteeError } from "./errors.js";
import { checkDuration } from "./validate.js";

/**
 * What a backend promises, as data. A caller can demand any of these at connect time
 * (`connect(url, { require: [...] })`) and is refused when the backend lacks one.
 */
export interface Guarantees {
  /** Coordinates several processes (not just coordinators inside one process). */
  readonly acrossProcesses: boolean;
  /** Coordinates processes on several hosts. */
  readonly acrossHosts: boolean;
  /** Safe under network partitions: state lives in a consensus-replicated store. */
  readonly partitionSafe: boolean;
  /** Fencing tokens strictly increase per lock name across all holders and clients. */
  readonly fencing: boolean;
  /** Shared (reader) locks, upgrade and downgrade. */
  readonly sharedLocks: boolean;
  /** Waiters on one lock are granted in arrival order. */
  readonly fifo: boolean;
  /** Waiting and watching are woken by pushed events, never by polling. */
  readonly pushEvents: boolean;
  /**
   * Upper bound, in ms, on how long a crashed holder's locks stay held, given the session
   * TTL: `"ttl"` means "within the session TTL", a number is an absolute bound.
   */
  readonly crashRelease: number | "ttl";
}

/** The boolean guarantees, which `require` may name. */
export type GuaranteeName = {
  [K in keyof Guarantees]: Guarantees[K] extends boolean ? K : never;
}[keyof Guarantees];

/** Names of every boolean guarantee, in documentation order. */
export const GUARANTEE_NAMES: readonly GuaranteeName[] = [
  "acrossProcesses",
  "acrossHosts",
  "partitionSafe",
  "fencing",
  "sharedLocks",
  "fifo",
  "pushEvents",
];

/**
 * What `connect()` may be asked to insist on: a list of guarantee names, or an object
 * whose `true` entries are required and whose `crashReleaseMs` is an upper bound on the
 * crash-release time (a TTL-bound backend meets it when its session TTL is at most that).
 */
export type Requirement =
  | readonly GuaranteeName[]
  | ({ [K in GuaranteeName]?: boolean | undefined } & { crashReleaseMs?: number | undefined });

/**
 * Throws {@link MissingGuaranteeError} naming every requirement `guarantees` does not meet.
 * @internal
 */
export function checkRequirements(
  backend: string,
  guarantees: Guarantees,
  requirement: Requirement | undefined,
  ttlMs: number,
): void {
  if (requirement === undefined) return;
  const wanted: string[] = [];
  let crashBound: number | undefined;
  if (Array.isArray(requirement)) {
    wanted.push(...(requirement as readonly string[]));
  } else if (typeof requirement === "object" && requirement !== null) {
    for (const [key, value] of Object.entries(requirement)) {
      if (key === "crashReleaseMs") {
        if (value === undefined) continue;
        crashBound = checkDuration("require.crashReleaseMs", value);
      } else if (value === undefined) continue;
      else if (value === true) wanted.push(key);
      else if (value !== false) {
        throw new InvalidArgumentError(`require.${key} must be true or false, got ${String(value)}`);
      }
    }
  } else {
    throw new InvalidArgumentError(
      `require must be an array of guarantee names or an object, got ${String(requirement)}`,
    );
  }
  const unknown = wanted.filter((n) => !(GUARANTEE_NAMES as readonly string[]).includes(n));
  if (unknown.length > 0) {
    throw new InvalidArgumentError(
      `unknown guarantee ${unknown.map((n) => JSON.stringify(n)).join(", ")}; known guarantees: ${GUARANTEE_NAMES.join(", ")}, crashReleaseMs`,
    );
  }
  const missing = wanted.filter((n) => !guarantees[n as GuaranteeName]);
  if (crashBound !== undefined) {
    const bound = guarantees.crashRelease === "ttl" ? ttlMs : guarantees.crashRelease;
    if (bound > crashBound) missing.push(`crashReleaseMs<=${crashBound} (backend gives ${bound} ms)`);
  }
  if (missing.length > 0) {
    throw new MissingGuaranteeError(`backend "${backend}" does not guarantee: ${missing.join(", ")}`, missing, {
      backend,
    });
  }
}
