import type { DriverContext } from "../../core/driver.js";
import { InvalidArgumentError } from "../../core/errors.js";

/** The backend's name: its definition's `name` and the `backend` of every error it raises. */
export const BACKEND = "mysql";

/** Option names the mysql backend accepts (query string or `connect()` options). */
export const MYSQL_OPTION_NAMES = ["prefix", "maxConnections", "connectTimeoutMs", "socketPath"] as const;

/** What mysql2 is given for every connection (before per-connection tuning). */
export interface MysqlClientConfig {
  readonly host: string;
  readonly port: number;
  readonly user?: string;
  readonly password?: string;
  readonly database: string;
  readonly socketPath?: string;
  readonly connectTimeout: number;
}

/** The mysql backend's settings, parsed and checked. */
export interface MysqlSettings {
  /** Prefix of Baton's tables and procedures (default `baton_`). */
  readonly prefix: string;
  /** Connections per coordinator, including the control connection (2 to 100). */
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  readonly client: MysqlClientConfig;
  /** `host:port/database`, for messages. */
  readonly target: string;
}

// Plain lower-case identifiers only: the prefix is the one thing put into SQL text.
const PREFIX_RE = /^[a-z][a-z0-9_]{0,23}$/;

/** Parses the URL and options of a mysql coordinator. */
export function parseSettings(context: DriverContext): MysqlSettings {
  const { url, options } = context;
  const prefix = options.prefix === undefined ? "baton_" : options.prefix;
  if (typeof prefix !== "string" || !PREFIX_RE.test(prefix)) {
    throw new InvalidArgumentError(
      `prefix must be a lower-case identifier (a letter, then letters, digits or _; at most 24 characters), got ${JSON.stringify(prefix)}`,
      { backend: BACKEND },
    );
  }
  const maxConnections = intOption(options.maxConnections, "maxConnections", 8, 2, 100);
  const connectTimeoutMs = intOption(options.connectTimeoutMs, "connectTimeoutMs", 10_000, 100, 600_000);
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!database || database.includes("/")) {
    throw new InvalidArgumentError(
      `the URL must name a database: mysql://user:password@host:3306/database, got ${JSON.stringify(url.pathname)}`,
      { backend: BACKEND },
    );
  }
  const socketPath = options.socketPath;
  if (socketPath !== undefined && (typeof socketPath !== "string" || !socketPath.startsWith("/"))) {
    throw new InvalidArgumentError(`socketPath must be an absolute path, got ${JSON.stringify(socketPath)}`, {
      backend: BACKEND,
    });
  }
  if (!url.hostname && !socketPath) {
    throw new InvalidArgumentError(
      `the URL must name a host: mysql://user:password@host:3306/database (or give socketPath), got ${JSON.stringify(url.href)}`,
      { backend: BACKEND },
    );
  }
  const host = url.hostname.replace(/^\[|\]$/g, "") || "localhost";
  const port = url.port ? Number(url.port) : 3306;
  const client: MysqlClientConfig = {
    host,
    port,
    database,
    connectTimeout: connectTimeoutMs,
    ...(url.username ? { user: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(socketPath ? { socketPath } : {}),
  };
  return { prefix, maxConnections, connectTimeoutMs, client, target: `${url.host || host}/${database}` };
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
