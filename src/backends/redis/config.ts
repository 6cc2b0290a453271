/**
 * Turns a `redis://`, `rediss://` or `redis+sentinel://` URL and its options into what the
 * link needs.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import type { DriverContext } from "../../core/driver.js";
import { InvalidArgumentError } from "../../core/errors.js";
import { describe } from "../../core/validate.js";
import { hostsOf } from "../host-list.js";
import { BACKEND } from "./errors.js";

const DEFAULT_PORT = 6379;
const DEFAULT_SENTINEL_PORT = 26379;
const DEFAULT_REQUEST_TIMEOUT_MS = 5000;

/** Option names accepted in the query string or the options object. */
export const REDIS_OPTION_NAMES = ["endpoints", "requestTimeoutMs", "replicas", "ca", "username", "password"] as const;

export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

/** Everything the link needs. */
export interface RedisConfig {
  /** One node for redis:// and rediss://, the sentinels for redis+sentinel://. */
  readonly nodes: readonly RedisNode[];
  /** The Sentinel master name; absent for a single server. */
  readonly masterName?: string;
  readonly tls: boolean;
  readonly ca?: Buffer;
  readonly username?: string;
  readonly password?: string;
  readonly database: number;
  /** Deadline of every command. */
  readonly requestTimeoutMs: number;
  /** Replicas a grant must reach (`WAIT`) before it is returned; 0: do not wait. */
  readonly replicas: number;
}

/**
 * Options of the command connection's client. node-redis 6 bounds every command with its own
 * `AbortSignal.timeout` (5 s by default): a timer and two listeners per command, the largest
 * item of the driver's own CPU profile. The link bounds every command itself (link.ts),
 * so that one is turned off there; the pub/sub connection keeps node-redis's default.
 */
export const COMMAND_CLIENT = { commandOptions: { timeout: 0 } } as const;
export const SUB_CLIENT = { commandOptions: {} } as const;

/** Parses the driver context; throws `InvalidArgumentError` for anything malformed. */
export function parseConfig(context: DriverContext): RedisConfig {
  const { url, options } = context;
  const sentinel = url.protocol === "redis+sentinel:";
  const tls = url.protocol === "rediss:";
  // connect() passes the hosts after the first of a list as the "endpoints" option.
  const nodes = hostsOf(url, options.endpoints, BACKEND).map((host) =>
    parseNode(host, sentinel ? DEFAULT_SENTINEL_PORT : DEFAULT_PORT),
  );
  if (nodes.length === 0) {
    throw new InvalidArgumentError(
      sentinel
        ? "the Sentinel URL needs at least one sentinel, as in redis+sentinel://127.0.0.1:26379/mymaster"
        : "the Redis URL needs a host, as in redis://127.0.0.1:6379",
      { backend: BACKEND },
    );
  }
  if (!sentinel && nodes.length > 1) {
    throw new InvalidArgumentError(
      `redis:// takes one host (got ${nodes.length}); for several, use Sentinel: redis+sentinel://host:26379,host:26379/mastername`,
      { backend: BACKEND },
    );
  }
  const path = decodeURIComponent(url.pathname.replace(/^\//, ""));
  let database = 0;
  let masterName: string | undefined;
  if (sentinel) {
    if (path === "" || path.includes("/")) {
      throw new InvalidArgumentError(
        `the Sentinel URL must name the master, as in redis+sentinel://127.0.0.1:26379/mymaster (got path ${JSON.stringify(url.pathname)})`,
        { backend: BACKEND },
      );
    }
    masterName = path;
  } else if (path !== "") {
    if (!/^\d{1,5}$/.test(path)) {
      throw new InvalidArgumentError(
        `the Redis URL's path must be a database number, as in redis://host:6379/2 (got ${JSON.stringify(url.pathname)})`,
        {
          backend: BACKEND,
        },
      );
    }
    database = Number(path);
  }
  const ca = stringOption(options, "ca");
  if (ca !== undefined && !tls) {
    throw new InvalidArgumentError("the ca option needs TLS: use rediss:// instead of redis://", { backend: BACKEND });
  }
  const username = stringOption(options, "username") ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = stringOption(options, "password") ?? (url.password ? decodeURIComponent(url.password) : undefined);
  return {
    nodes,
    ...(masterName !== undefined ? { masterName } : {}),
    tls,
    ...(ca !== undefined ? { ca: readPem(ca) } : {}),
    ...(username !== undefined && username !== "" ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    database,
    requestTimeoutMs: integerOption(options, "requestTimeoutMs", 100, 600_000) ?? DEFAULT_REQUEST_TIMEOUT_MS,
    replicas: integerOption(options, "replicas", 0, 100) ?? 0,
  };
}

/** One `host[:port]` (an IPv6 host in brackets). */
function parseNode(h: string, defaultPort: number): RedisNode {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(h);
  if (!match)
    throw new InvalidArgumentError(`cannot read host ${JSON.stringify(h)} in the Redis URL`, { backend: BACKEND });
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (port < 1 || port > 65535) {
    throw new InvalidArgumentError(`port ${port} in the Redis URL is out of range (1 to 65535)`, {
      backend: BACKEND,
    });
  }
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
}

function stringOption(options: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = options[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    throw new InvalidArgumentError(`option ${name} must be a string, got ${describe(value)}`, { backend: BACKEND });
  }
  return value;
}

function integerOption(
  options: Readonly<Record<string, unknown>>,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const raw = options[name];
  if (raw === undefined) return undefined;
  const value = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : raw;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`option ${name} must be an integer from ${min} to ${max}, got ${describe(raw)}`, {
      backend: BACKEND,
    });
  }
  return value;
}

function readPem(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new InvalidArgumentError(`cannot read the TLS ca file ${JSON.stringify(path)}`, { backend: BACKEND, cause });
  }
}
