import type { ClientConfig } from "pg";
import type { DriverContext } from "../../core/driver.js";
import { InvalidArgumentError } from "../../core/errors.js";
import { describe } from "../../core/validate.js";

/** The backend's name: its definition's `name` and the `backend` of every error it raises. */
export const BACKEND = "postgres";

/** Option names the postgres backend accepts (query string or `connect()` options). */
export const POSTGRES_OPTION_NAMES = [
  "schema",
  "maxConnections",
  "connectTimeoutMs",
  "host",
  "sslmode",
  "sslrootcert",
  "sslcert",
  "sslkey",
  "ssl",
] as const;

/** The postgres backend's settings, parsed and checked. */
export interface PostgresSettings {
  /** Schema holding Baton's tables and functions. */
  readonly schema: string;
  /** Connections per coordinator, including the control connection (2 to 100). */
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  /** node-postgres client configuration (without per-connection tuning). */
  readonly client: ClientConfig;
  /** `host:port/database`, for messages. */
  readonly target: string;
}

// Plain lower-case identifiers only: they need no case folding and are safe to quote.
const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** Parses the URL and options of a postgres coordinator. */
export function parseSettings(context: DriverContext): PostgresSettings {
  const { url, options } = context;
  const schema = options.schema === undefined ? "baton" : options.schema;
  if (typeof schema !== "string" || !SCHEMA_RE.test(schema) || schema.startsWith("pg_")) {
    throw new InvalidArgumentError(
      `schema must be a lower-case SQL identifier (letters, digits, _; at most 63 bytes; not pg_*), got ${JSON.stringify(schema)}`,
      { backend: BACKEND },
    );
  }
  const maxConnections = intOption(options.maxConnections, "maxConnections", 8, 2, 100);
  const connectTimeoutMs = intOption(options.connectTimeoutMs, "connectTimeoutMs", 10_000, 100, 600_000);

  // pg parses postgres:// and postgresql:// URLs, TLS parameters included.
  const base = new URL(url.href);
  base.protocol = "postgres:";
  for (const name of ["host", "sslmode", "sslrootcert", "sslcert", "sslkey"] as const) {
    const value = options[name];
    if (value === undefined) continue;
    if (typeof value !== "string") throw new InvalidArgumentError(`${name} must be a string`, { backend: BACKEND });
    base.searchParams.set(name, value);
  }
  const client: ClientConfig = { connectionString: base.href, connectionTimeoutMillis: connectTimeoutMs };
  // From the query string, ssl is the text "true" or "false".
  const ssl = options.ssl === "true" ? true : options.ssl === "false" ? false : options.ssl;
  if (ssl !== undefined) {
    if (typeof ssl !== "boolean" && (typeof ssl !== "object" || ssl === null)) {
      throw new InvalidArgumentError(
        `ssl must be true, false or a tls.ConnectionOptions object (in the URL: ssl=true or ssl=false), got ${describe(ssl)}`,
        { backend: BACKEND },
      );
    }
    client.ssl = ssl as ClientConfig["ssl"] & object;
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || "(default)";
  return { schema, maxConnections, connectTimeoutMs, client, target: `${url.host || "localhost"}/${database}` };
}

function intOption(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`, {
      backend: BACKEND,
    });
  }
  return n;
}
