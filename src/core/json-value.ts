/**
 * Strict JSON for stored values: what goes in comes back equal. `JSON.stringify` would
 * silently turn `NaN` into `null`, drop `undefined` members and call `toJSON`; here those
 * are refused with the path of the offending part. Object keys are written sorted, so two
 * equal values have the same text and a backend can compare values as bytes.
 *
 * @module
 * @internal
 */
import { InvalidArgumentError } from "./errors.js";
import { describe } from "./validate.js";

/** Deepest nesting accepted: a guard against cycles and stack exhaustion. */
const MAX_DEPTH = 64;
const encoder = new TextEncoder();

/** Canonical JSON text of `value`, refusing non-JSON values and values over `maxBytes`. */
export function canonicalJson(what: string, value: unknown, maxBytes: number): string {
  const text = write(what, value, what, 0);
  const bytes = encoder.encode(text).length;
  if (bytes > maxBytes) {
    throw new InvalidArgumentError(`${what} is ${bytes} bytes as JSON; the limit is ${maxBytes} bytes`);
  }
  return text;
}

function write(what: string, value: unknown, path: string, depth: number): string {
  if (depth > MAX_DEPTH) {
    throw new InvalidArgumentError(`${what} nests deeper than ${MAX_DEPTH} levels at ${path} (a cycle?)`);
  }
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new InvalidArgumentError(`${what} is not JSON: ${path} is ${value}; only finite numbers are allowed`);
    }
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item, i) => write(what, item, `${path}[${i}]`, depth + 1)).join(",")}]`;
  }
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) {
      throw new InvalidArgumentError(
        `${what} is not JSON: ${path} is a ${(value as object).constructor?.name ?? "non-plain object"}; only plain objects, arrays, strings, finite numbers, booleans and null are allowed`,
      );
    }
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    const parts = keys.map((key) => `${JSON.stringify(key)}:${write(what, record[key], `${path}.${key}`, depth + 1)}`);
    return `{${parts.join(",")}}`;
  }
  throw new InvalidArgumentError(
    `${what} is not JSON: ${path} is ${describe(value)}; only plain objects, arrays, strings, finite numbers, booleans and null are allowed`,
  );
}
