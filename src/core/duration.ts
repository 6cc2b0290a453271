import { InvalidArgumentError } from "./errors.js";
import { checkMaxTimer } from "./validate.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration such as `500ms`, `10s`, `2m`, `1h` or `1.5s`; a bare number means
 * milliseconds. Throws `InvalidArgumentError` naming the accepted forms, and for a duration
 * above `MAX_TIMER_MS` (Node's timer limit) naming the maximum.
 */
export function parseDuration(text: string, what = "duration"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match) {
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(text)} is not a duration; use a number with ms, s, m or h (e.g. 500ms, 10s, 2m)`,
    );
  }
  const value = Math.round(Number(match[1]) * (UNITS[match[2] ?? "ms"] as number));
  return checkMaxTimer(`${what} ${JSON.stringify(text)}`, value);
}
