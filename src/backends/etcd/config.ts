/**
 * Turns an `etcd://` or `etcds://` URL and its options into `etcd3` client options.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import type { DriverContext } from "../../core/driver.js";
import { InvalidArgumentError } from "../../core/errors.js";
import { hostsOf } from "../host-list.js";
import { describe } from "../../core/validate.js";
import { BACKEND } from "./errors.js";

const DEFAULT_PORT = 2379;
const DEFAULT_REQUEST_TIMEOUT_MS = 5000;

/** Everything the driver needs to build its client. */
export interface EtcdConfig {
  /** `http://host:port` or `https://host:port`, one per cluster member given. */
  readonly hosts: string[];
  readonly tls: boolean;
  readonly credentials?: { rootCertificate?: Buffer; privateKey?: Buffer; certChain?: Buffer };
  readonly auth?: { username: string; password: string };
  /**
   * Deadline of each unary call attempt as configured; the driver caps it at a quarter of
   * the TTL (`callTimeout` in client.ts). Streams are not bounded by it.
   */
  readonly requestTimeoutMs: number;
}

/** Parses the driver context; throws `InvalidArgumentError` for anything malformed. */
export function parseConfig(context: DriverContext): EtcdConfig {
  const { url, options } = context;
  const tls = url.protocol === "etcds:";
  const scheme = tls ? "https" : "http";
  const hostList = hostsOf(url, options.endpoints, BACKEND);
  if (hostList.length === 0) {
    throw new InvalidArgumentError(
      `the etcd URL needs at least one host, as in etcd://127.0.0.1:2379 (or the "endpoints" option)`,
      { backend: BACKEND },
    );
  }
  const hosts = [...new Set(hostList.map((h) => `${scheme}://${withPort(h)}`))];

  const ca = pathOption(options, "ca");
  const cert = pathOption(options, "cert");
  const key = pathOption(options, "key");
  if (!tls && (ca || cert || key)) {
    throw new InvalidArgumentError(`the ca, cert and key options need TLS: use etcds:// instead of etcd://`, {
      backend: BACKEND,
    });
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw new InvalidArgumentError(`a client certificate needs both the "cert" and "key" options`, {
      backend: BACKEND,
    });
  }
  let credentials: EtcdConfig["credentials"];
  if (ca || cert) {
    credentials = {
      ...(ca ? { rootCertificate: readPem("ca", ca) } : {}),
      ...(cert ? { certChain: readPem("cert", cert) } : {}),
      ...(key ? { privateKey: readPem("key", key) } : {}),
    };
  }

  const username = stringOption(options, "username") ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = stringOption(options, "password") ?? (url.password ? decodeURIComponent(url.password) : undefined);
  if (password !== undefined && username === undefined) {
    throw new InvalidArgumentError(`an etcd password needs a user name too`, { backend: BACKEND });
  }

  const requestTimeoutMs = numberOption(options, "requestTimeoutMs") ?? DEFAULT_REQUEST_TIMEOUT_MS;
  return {
    hosts,
    tls,
    ...(credentials ? { credentials } : {}),
    ...(username !== undefined ? { auth: { username, password: password ?? "" } } : {}),
    requestTimeoutMs,
  };
}

function withPort(host: string): string {
  const bare = host.replace(/^[a-z]+:\/\//i, "");
  if (/^\[.*\]$/.test(bare) || !/:\d+$/.test(bare)) return `${bare}:${DEFAULT_PORT}`;
  return bare;
}

function stringOption(options: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = options[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    throw new InvalidArgumentError(`option ${name} must be a string, got ${describe(value)}`, { backend: BACKEND });
  }
  return value;
}

function pathOption(options: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = stringOption(options, name);
  if (value === "") throw new InvalidArgumentError(`option ${name} must be a file path`, { backend: BACKEND });
  return value;
}

function numberOption(options: Readonly<Record<string, unknown>>, name: string): number | undefined {
  const raw = options[name];
  if (raw === undefined) return undefined;
  const value = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : raw;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 100 || value > 600_000) {
    throw new InvalidArgumentError(`option ${name} must be an integer from 100 to 600000 ms, got ${describe(raw)}`, {
      backend: BACKEND,
    });
  }
  return value;
}

function readPem(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new InvalidArgumentError(`cannot read the TLS ${what} file ${JSON.stringify(path)}`, {
      backend: BACKEND,
      cause,
    });
  }
}
