/**
 * Applies the postgres backend's migrations (`migrations.ts`) to its own schema. The schema
 * name is the only thing ever put into SQL text: it is validated as a plain lower-case
 * identifier (see options.ts) and quoted. Every name and value is a parameter.
 *
 * @module
 */
import type { PgConnection } from "./connection.js";
import { MIGRATIONS } from "./migrations.js";

/** The schema version this code expects. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Quotes a validated schema name as an identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function render(sql: string, schema: string): string {
  return sql.replaceAll("@s", quoteIdent(schema)).replaceAll("@lit", `'${schema.replaceAll("'", "''")}'`);
}

/**
 * Brings the schema up to {@link SCHEMA_VERSION}. Idempotent; concurrent callers serialise
 * on an advisory transaction lock, so exactly one applies each missing version.
 * @returns the version found before migrating.
 */
export async function migrate(connection: PgConnection, schema: string, migrateKey: string): Promise<number> {
  const q = quoteIdent(schema);
  const exists = await connection.query<{ found: boolean }>("SELECT to_regclass($1) IS NOT NULL AS found", [
    `${q}.migrations`,
  ]);
  let current = 0;
  if (exists.rows[0]?.found) {
    const check = await connection.query<{ version: number | null }>(
      `SELECT max(version) AS version FROM ${q}.migrations`,
    );
    current = check.rows[0]?.version ?? 0;
  }
  if (current === SCHEMA_VERSION) return current;
  if (current > SCHEMA_VERSION) {
    throw new Error(
      `schema ${schema} is at version ${current}, newer than this Baton (${SCHEMA_VERSION}); upgrade Baton`,
    );
  }
  await connection.query("BEGIN");
  try {
    await connection.query("SELECT pg_advisory_xact_lock($1)", [migrateKey]);
    await connection.query(`CREATE SCHEMA IF NOT EXISTS ${q}`);
    await connection.query(
      `CREATE TABLE IF NOT EXISTS ${q}.migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const found = await connection.query<{ version: number | null }>(
      `SELECT max(version) AS version FROM ${q}.migrations`,
    );
    const from = found.rows[0]?.version ?? 0;
    for (let version = from + 1; version <= SCHEMA_VERSION; version++) {
      await connection.query(render(MIGRATIONS[version - 1] as string, schema));
      await connection.query(`INSERT INTO ${q}.migrations (version) VALUES ($1)`, [version]);
    }
    await connection.query("COMMIT");
    return from;
  } catch (error) {
    await connection.query("ROLLBACK").catch(() => {});
    throw error;
  }
}
