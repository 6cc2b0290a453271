/**
 * Turns a `zookeeper://` (or `zk://`) URL and its options into client settings.
 *
 * `zookeeper://[user:password@]host[:2181][,host[:2181]...][/chroot][?sessionTimeout=10s]`
 *
 * @module
 */
import type { DriverContext } from "../../core/driver.js";
import { parseDuration } from "../../core/duration.js";
import { InvalidArgumentError } from "../../core/errors.js";
import { hostsOf } from "../host-list.js";
import { describe, MAX_TTL_MS, MIN_TTL_MS } from "../../core/validate.js";
import { BACKEND } from "./errors.js";

const DEFAULT_PORT = 2181;

/** Everything the driver needs to open its ZooKeeper handles. */
export interface ZkConfig {
  /** `host:port,host:port`, as node-zookeeper-client's `createClient` takes it (no chroot: paths carry it). */
  readonly connect: string;
  /** `""` or `/a/b`: every Baton path starts with it. */
  readonly chroot: string;
  /** Requested session timeout; the server clamps it (2 to 20 tickTimes by default). */
  readonly sessionTimeoutMs: number;
  /** `user:password` for the digest scheme, when the URL has credentials. */
  readonly digest?: string;
}

/** Parses the driver context; throws `InvalidArgumentError` for anything malformed. */
export function parseConfig(context: DriverContext): ZkConfig {
  const { url, options } = context;
  const hosts = hostsOf(url, options.endpoints, BACKEND).map((h) =>
    /:\d+$/.test(h) && !/^\[[^\]]*\]$/.test(h) ? h : `${h}:${DEFAULT_PORT}`,
  );
  if (hosts.length === 0) {
    throw new InvalidArgumentError(
      "the ZooKeeper URL needs at least one host, as in zookeeper://127.0.0.1:2181[,host:port...][/chroot]",
      { backend: BACKEND },
    );
  }
  const chroot = url.pathname.replace(/\/+$/, "");
  if (chroot !== "" && (!/^(\/[^/]+)+$/.test(chroot) || chroot.split("/").some((p) => p === "." || p === ".."))) {
    throw new InvalidArgumentError(`the ZooKeeper chroot ${JSON.stringify(url.pathname)} is not a valid path`, {
      backend: BACKEND,
    });
  }
  const username = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  if (password !== undefined && username === undefined) {
    throw new InvalidArgumentError("a ZooKeeper password needs a user name too", { backend: BACKEND });
  }
  if (username !== undefined && password === undefined) {
    throw new InvalidArgumentError("ZooKeeper digest authentication needs user:password@", { backend: BACKEND });
  }
  return {
    connect: hosts.join(","),
    chroot: decodeURIComponent(chroot),
    sessionTimeoutMs: sessionTimeout(options.sessionTimeout) ?? context.ttlMs,
    ...(username !== undefined ? { digest: `${username}:${password}` } : {}),
  };
}

function sessionTimeout(raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  const value =
    typeof raw === "string" ? parseDuration(raw, "sessionTimeout") : typeof raw === "number" ? raw : Number.NaN;
  if (!Number.isInteger(value) || value < MIN_TTL_MS || value > MAX_TTL_MS) {
    throw new InvalidArgumentError(
      `option sessionTimeout must be a duration from ${MIN_TTL_MS} ms to ${MAX_TTL_MS} ms (e.g. 10s), got ${describe(raw)}`,
      { backend: BACKEND },
    );
  }
  return value;
}
