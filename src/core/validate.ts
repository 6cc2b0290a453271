import { InvalidArgumentError } from "./errors.js";

/** Longest lock, semaphore, group, election or member name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 512;
/** Longest namespace, in UTF-8 bytes. */
export const MAX_NAMESPACE_BYTES = 128;
/** Shortest session TTL any backend accepts, in milliseconds. */
export const MIN_TTL_MS = 1000;
/** Longest session TTL, in milliseconds (one day). */
export const MAX_TTL_MS = 86_400_000;
/** Default session TTL, in milliseconds. */
export const DEFAULT_TTL_MS = 10_000;
/**
 * Longest duration (timeout, TTL, delay) Baton accepts anywhere, in milliseconds: Node's
 * timer limit, 2^31-1 ms (about 24.8 days). Node fires a longer timer after 1 ms instead,
 * so a longer duration is refused rather than turned into an immediate timeout.
 */
export const MAX_TIMER_MS = 2_147_483_647;

// C0 controls, DEL and C1 controls: they break logs, terminals and key encodings.
// biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const encoder = new TextEncoder();

/**
 * Checks a user-supplied name. Names are opaque strings: Baton never turns them into file
 * paths or SQL; they are hashed, prefixed or passed as parameters.
 */
export function checkName(what: string, name: unknown, maxBytes = MAX_NAME_BYTES): string {
  if (typeof name !== "string") {
    throw new InvalidArgumentError(`${what} must be a string, got ${describe(name)}`);
  }
  if (name.length === 0) throw new InvalidArgumentError(`${what} must not be empty`);
  // A UTF-16 unit is at most 3 UTF-8 bytes: most names need no encoding (a copy per call).
  const bytes = name.length * 3 <= maxBytes ? 0 : encoder.encode(name).length;
  if (bytes > maxBytes) {
    throw new InvalidArgumentError(`${what} is ${bytes} bytes long; the limit is ${maxBytes} UTF-8 bytes`);
  }
  const match = CONTROL.exec(name);
  if (match) {
    const code = match[0].charCodeAt(0).toString(16).padStart(4, "0");
    throw new InvalidArgumentError(
      `${what} contains the control character U+${code} at index ${match.index}; control characters are not allowed`,
    );
  }
  if (name.isWellFormed && !name.isWellFormed()) {
    throw new InvalidArgumentError(`${what} contains a lone surrogate; it must be well-formed Unicode`);
  }
  return name;
}

/**
 * Checks an optional duration in milliseconds: a finite number from 0 to
 * {@link MAX_TIMER_MS}. Every duration of the API goes through here (or {@link checkMaxTimer}),
 * so none can overflow a timer.
 */
export function checkDuration(what: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(
      `${what} must be a finite number of milliseconds from 0 to ${MAX_TIMER_MS} (or omitted), got ${describe(value)}`,
    );
  }
  return checkMaxTimer(what, value);
}

/** Refuses a duration above {@link MAX_TIMER_MS}, naming the maximum. */
export function checkMaxTimer(what: string, ms: number): number {
  if (ms > MAX_TIMER_MS) {
    throw new InvalidArgumentError(
      `${what} is ${ms} ms; the longest duration is ${MAX_TIMER_MS} ms (2^31-1 ms, about 24.8 days), Node's timer limit`,
    );
  }
  return ms;
}

/** Checks a session TTL. */
export function checkTtl(value: unknown): number {
  if (value === undefined) return DEFAULT_TTL_MS;
  if (typeof value !== "number" || !Number.isFinite(value) || !Number.isInteger(value)) {
    throw new InvalidArgumentError(`ttlMs must be an integer number of milliseconds, got ${describe(value)}`);
  }
  if (value < MIN_TTL_MS || value > MAX_TTL_MS) {
    throw new InvalidArgumentError(`ttlMs must be between ${MIN_TTL_MS} and ${MAX_TTL_MS} ms, got ${value}`);
  }
  return value;
}

/** Checks a positive integer (semaphore limits, replica counts, weights). */
export function checkPositiveInt(what: string, value: unknown, max = 1_000_000): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > max) {
    throw new InvalidArgumentError(`${what} must be an integer from 1 to ${max}, got ${describe(value)}`);
  }
  return value;
}

/** Checks an optional AbortSignal. */
export function checkSignal(what: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${what} must be an AbortSignal, got ${describe(value)}`);
  }
  return value;
}

/** Checks a lock mode. */
export function checkMode(value: unknown): "exclusive" | "shared" {
  if (value === undefined || value === "exclusive") return "exclusive";
  if (value === "shared") return "shared";
  throw new InvalidArgumentError(`mode must be "exclusive" or "shared", got ${describe(value)}`);
}

/** Checks that `value` is a plain options object (or undefined). */
export function checkOptions<T extends object>(what: string, value: T | undefined): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`${what} must be an options object, got ${describe(value)}`);
  }
  return value;
}

/** Checks JSON-serialisable data (group capabilities, election values). */
export function checkJson(what: string, value: unknown, maxBytes = 65_536): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new InvalidArgumentError(`${what} must be JSON-serialisable`, { cause });
  }
  if (text === undefined) throw new InvalidArgumentError(`${what} must be JSON-serialisable, got ${describe(value)}`);
  const bytes = encoder.encode(text).length;
  if (bytes > maxBytes) {
    throw new InvalidArgumentError(`${what} is ${bytes} bytes as JSON; the limit is ${maxBytes}`);
  }
  return text;
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}
