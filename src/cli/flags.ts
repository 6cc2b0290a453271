/**
 * Parsers for the CLI's flag values. Each refuses bad input with an `InvalidArgumentError`
 * (exit 64) that names the flag, says what is allowed and shows what was given.
 *
 * @module
 */
import { InvalidArgumentError } from "../core/errors.js";
import { MAX_NAMESPACE_BYTES, MAX_TIMER_MS, MAX_TTL_MS, MIN_TTL_MS, checkName } from "../core/validate.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Writes a duration in milliseconds the way the flags accept it: `10s`, `1.5s`, `250ms`. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  if (ms === MAX_TIMER_MS) return `${ms}ms (about 24.8 days)`;
  return `${ms}ms`;
}

/**
 * A duration flag: `500ms`, `10s`, `2m`, `1h`, `1.5s`; a bare number is seconds, as in
 * flock(1) `-w` and timeout(1). Refuses anything outside `[minMs, maxMs]`, by default up
 * to Node's timer limit (a longer timer would fire at once).
 */
export function durationFlag(flag: string, minMs = 0, maxMs = MAX_TIMER_MS): (text: string) => number {
  const allowed = `a duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, written like 500ms, 10s, 2m or 1h (a bare number is seconds)`;
  return (text) => {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
    const ms = match ? Math.round(Number(match[1]) * (UNITS[match[2] ?? "s"] as number)) : Number.NaN;
    if (!Number.isFinite(ms) || ms < minMs || ms > maxMs) {
      throw new InvalidArgumentError(`${flag} must be ${allowed}, got ${JSON.stringify(text)}`);
    }
    return ms;
  };
}

/** `--ttl`: the session TTL bounds every backend accepts. */
export const ttlFlag = durationFlag("--ttl", MIN_TTL_MS, MAX_TTL_MS);

/** A whole number from 1 to `max`, written in decimal digits. */
export function positiveIntFlag(flag: string, max = 1_000_000): (text: string) => number {
  return (text) => {
    const value = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
    if (!(value >= 1 && value <= max)) {
      throw new InvalidArgumentError(
        `${flag} must be a positive integer from 1 to ${max}, got ${JSON.stringify(text)}`,
      );
    }
    return value;
  };
}

/** A TCP port, 0 (any free port) to 65535. */
export function portFlag(flag: string): (text: string) => number {
  return (text) => {
    const value = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
    if (!(value >= 0 && value <= 65535)) {
      throw new InvalidArgumentError(`${flag} must be a port 0-65535 (0: any free port), got ${JSON.stringify(text)}`);
    }
    return value;
  };
}

/** `--namespace`: the same rule as the API's `namespace` option, named after the flag. */
export function namespaceFlag(text: string): string {
  return checkName("--namespace", text, MAX_NAMESPACE_BYTES);
}
