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

/** What is left of the byte budget while writing. */
interface Budget {
  readonly what: string;
  readonly maxBytes: number;
  used: number;
}

/**
 * Canonical JSON text of `value`, refusing non-JSON values (holes of sparse arrays too) and
 * values over `maxBytes`. The budget is counted while writing, so a value that repeats one
 * shared part many times (`v = [v, v]`, 20 deep) is refused after at most `maxBytes` of
 * output, not after building its whole text.
 */
export function canonicalJson(what: string, value: unknown, maxBytes: number): string {
  const budget: Budget = { what, maxBytes, used: 0 };
  return write(budget, value, what, 0);
}

function spend(budget: Budget, text: string): string {
  budget.used += Buffer.byteLength(text, "utf8");
  if (budget.used > budget.maxBytes) {
    throw new InvalidArgumentError(
      `${budget.what} is at least ${budget.used} bytes as JSON; the limit is ${budget.maxBytes} bytes`,
    );
  }
  return text;
}

function write(budget: Budget, value: unknown, path: string, depth: number): string {
  const { what } = budget;
  if (depth > MAX_DEPTH) {
    throw new InvalidArgumentError(`${what} nests deeper than ${MAX_DEPTH} levels at ${path} (a cycle?)`);
  }
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return spend(budget, JSON.stringify(value));
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new InvalidArgumentError(`${what} is not JSON: ${path} is ${value}; only finite numbers are allowed`);
    }
    return spend(budget, JSON.stringify(value));
  }
  if (Array.isArray(value)) {
    spend(budget, value.length === 0 ? "[]" : `[${",".repeat(value.length - 1)}]`);
    const items: string[] = [];
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) {
        throw new InvalidArgumentError(
          `${what} is not JSON: ${path}[${i}] is a hole of a sparse array; give every element (null for none)`,
        );
      }
      items.push(write(budget, value[i], `${path}[${i}]`, depth + 1));
    }
    return `[${items.join(",")}]`;
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
    spend(budget, keys.length === 0 ? "{}" : `{${",".repeat(keys.length - 1)}}`);
    const parts = keys.map(
      (key) => `${spend(budget, `${JSON.stringify(key)}:`)}${write(budget, record[key], `${path}.${key}`, depth + 1)}`,
    );
    return `{${parts.join(",")}}`;
  }
  throw new InvalidArgumentError(
    `${what} is not JSON: ${path} is ${describe(value)}; only plain objects, arrays, strings, finite numbers, booleans and null are allowed`,
  );
}
