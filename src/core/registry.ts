import type { BackendDefinition } from "./driver.js";
import { InvalidArgumentError, UnsupportedError } from "./errors.js";

const registered: BackendDefinition[] = [];

/** A URL scheme Baton deliberately has no backend for, and why. */
export interface RefusedScheme {
  readonly schemes: readonly string[];
  /** Why it is refused and what to use instead, as a sentence for the error message. */
  readonly reason: string;
}

const refused: RefusedScheme[] = [];

/**
 * Declares schemes that `connect()` refuses with an `UnsupportedError` carrying `reason`,
 * rather than "no backend": for stores a lock cannot be made correct on.
 */
export function refuseScheme(refusal: RefusedScheme): void {
  refused.push(refusal);
}

/**
 * Adds a backend. Baton's own backends are registered by `src/backends/index.ts`; a third
 * party may register its own before calling `connect()`. Throws if a scheme is taken.
 */
export function registerBackend(definition: BackendDefinition): void {
  for (const scheme of definition.schemes) {
    const owner = registered.find((b) => b.schemes.includes(scheme));
    if (owner) throw new InvalidArgumentError(`URL scheme "${scheme}:" is already used by backend "${owner.name}"`);
  }
  registered.push(definition);
}

/** Every registered backend, in registration order. */
export function backends(): readonly BackendDefinition[] {
  return registered;
}

/** The backend for a URL scheme (without the colon). */
export function backendForScheme(scheme: string): BackendDefinition {
  const found = registered.find((b) => b.schemes.includes(scheme));
  const refusal = found ? undefined : refused.find((r) => r.schemes.includes(scheme));
  if (refusal) throw new UnsupportedError(`no backend for URL scheme "${scheme}:": ${refusal.reason}`);
  if (!found) {
    const known = registered.flatMap((b) => b.schemes.map((s) => `${s}://`));
    throw new InvalidArgumentError(`no backend for URL scheme "${scheme}:"; known schemes: ${known.join(", ")}`);
  }
  return found;
}
