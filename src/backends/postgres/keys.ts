/**
 * The 64-bit advisory keys of the postgres backend, as TypeScript computes them (the SQL
 * function `key()` in migrations.ts computes the same).
 *
 * @module
 */
import { createHash } from "node:crypto";

/**
 * The advisory key of (namespace, kind, name, part), computed like the SQL function
 * `key()`: the first 8 bytes of SHA-256 over the NUL-free parts joined by U+001F, as a
 * signed 64-bit integer in decimal.
 */
export function advisoryKey(schema: string, namespace: string, kind: string, name: string, part: number): string {
  return createHash("sha256")
    .update(`${schema}\u001f${namespace}\u001f${kind}\u001f${name}\u001f${part}`, "utf8")
    .digest()
    .readBigInt64BE(0)
    .toString();
}
