import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { Coordinator } from "./coordinator.js";
import { CoordinatorCore } from "./core.js";
import { parseDuration } from "./duration.js";
import { BackendUnavailableError, BatonError, InvalidArgumentError } from "./errors.js";
import { checkRequirements, GUARANTEE_NAMES, type GuaranteeName, type Requirement } from "./guarantees.js";
import { backendForScheme } from "./registry.js";
import { checkName, checkTtl, describe, MAX_NAMESPACE_BYTES } from "./validate.js";

/** The URL used when none is given and `BATON_URL` is unset: the file backend's default directory. */
export const DEFAULT_URL = "file:";

/** Options of {@link connect}. Explicit options win over the URL's query string. */
export interface ConnectOptions {
  /**
   * This client's id in groups and `inspect()`. Default: `host:pid:random`. Two live
   * coordinators must not share one.
   */
  memberId?: string;
  /** Prefix isolating one application's names from another's on the same backend. Default `""`. */
  namespace?: string;
  /**
   * Session TTL in ms (1000 to 86,400,000; default 10,000): how long a dead or cut-off
   * client keeps its locks on TTL-based backends, and the base of the keep-alive period.
   */
  ttlMs?: number;
  /** Guarantees to insist on; see {@link Requirement}. */
  require?: Requirement;
  /** Backend-specific options (see each backend's docs). */
  [option: string]: unknown;
}

const CORE_QUERY = new Set(["memberId", "namespace", "ttlMs", "ttl", "require"]);

/**
 * Connects to a backend chosen by the URL's scheme and returns a {@link Coordinator}.
 *
 * `url` defaults to `$BATON_URL`, else {@link DEFAULT_URL} (the serverless file backend).
 * Query-string parameters give options (`?namespace=app&ttl=5s&require=fencing,fifo`);
 * explicit `options` win. The backend's client library is loaded only now.
 *
 * Throws `InvalidArgumentError` for a malformed URL or option, `MissingGuaranteeError`
 * when `require` names something the backend lacks, `BackendUnavailableError` when the
 * backend or its client library cannot be reached or loaded.
 */
export async function connect(url?: string | URL, options: ConnectOptions = {}): Promise<Coordinator> {
  const written = url ?? process.env.BATON_URL ?? DEFAULT_URL;
  const parsed = parseUrl(written);
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgumentError(`connect options must be an object, got ${describe(options)}`);
  }
  const definition = backendForScheme(parsed.protocol.slice(0, -1));

  const query: Record<string, unknown> = {};
  for (const [key, value] of parsed.searchParams) query[key] = value;
  const merged: Record<string, unknown> = { ...query };
  if (merged.ttl !== undefined) {
    merged.ttlMs = parseDuration(String(merged.ttl), "ttl");
    delete merged.ttl;
  } else if (typeof merged.ttlMs === "string") merged.ttlMs = parseDuration(merged.ttlMs, "ttlMs");
  if (typeof merged.require === "string") merged.require = merged.require.split(",").filter(Boolean);
  for (const [key, value] of Object.entries(options)) if (value !== undefined) merged[key] = value;

  const backendOptions: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(merged)) {
    if (CORE_QUERY.has(key)) continue;
    if (!definition.optionNames.includes(key)) {
      const allowed = [...CORE_QUERY, ...definition.optionNames].join(", ");
      throw new InvalidArgumentError(`unknown option "${key}" for backend "${definition.name}"; allowed: ${allowed}`);
    }
    backendOptions[key] = value;
  }

  const memberId = checkName("memberId", merged.memberId ?? defaultMemberId());
  const namespace =
    merged.namespace === undefined || merged.namespace === ""
      ? ""
      : checkName("namespace", merged.namespace, MAX_NAMESPACE_BYTES);
  const ttlMs = checkTtl(merged.ttlMs);
  checkRequirements(definition.name, definition.guarantees, merged.require as Requirement | undefined, ttlMs);

  for (const key of [...parsed.searchParams.keys()]) parsed.searchParams.delete(key);
  let driverModule: Awaited<ReturnType<typeof definition.load>>;
  try {
    driverModule = await definition.load();
  } catch (cause) {
    const libraries = definition.clientLibraries.join(" ");
    throw new BackendUnavailableError(
      `could not load the ${definition.name} backend${libraries ? `; install its client library: npm install ${libraries}` : ""}`,
      { backend: definition.name, cause },
    );
  }
  let driver: Awaited<ReturnType<typeof driverModule.createDriver>>;
  try {
    driver = await driverModule.createDriver({
      url: parsed,
      href: written instanceof URL ? written.href : written,
      memberId,
      namespace,
      ttlMs,
      options: backendOptions,
    });
  } catch (error) {
    if (error instanceof BatonError) throw error;
    throw new BackendUnavailableError(
      `could not connect to ${definition.name}: ${(error as Error)?.message ?? error}`,
      {
        backend: definition.name,
        cause: error,
      },
    );
  }
  const core = new CoordinatorCore({
    backend: definition.name,
    guarantees: definition.guarantees,
    driver,
    memberId,
    namespace,
    ttlMs,
  });
  return new Coordinator(core);
}

function parseUrl(url: string | URL): URL {
  if (url instanceof URL) return new URL(url.href);
  if (typeof url !== "string" || url.length === 0) {
    throw new InvalidArgumentError(`url must be a non-empty string or URL, got ${describe(url)}`);
  }
  try {
    return new URL(hostListToEndpoints(url));
  } catch (cause) {
    throw new InvalidArgumentError(
      `${JSON.stringify(url)} is not a URL; use e.g. memory://, file:///var/run/app-locks, etcd://host:2379`,
      { cause },
    );
  }
}

/**
 * `scheme://[user@]h1:p1,h2:p2/path?q` (the etcd and ZooKeeper convention) is not a WHATWG
 * URL: keep the first host and pass the others as the `endpoints` option.
 */
function hostListToEndpoints(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#@]*@)?([^/?#]*,[^/?#]*)(.*)$/i.exec(url);
  if (!match) return url;
  const [, scheme, userinfo = "", hosts = "", rest = ""] = match;
  const [first, ...others] = hosts.split(",").filter(Boolean);
  const hashAt = rest.indexOf("#");
  const body = hashAt >= 0 ? rest.slice(0, hashAt) : rest;
  const joiner = body.includes("?") ? "&" : "?";
  return `${scheme}${userinfo}${first ?? ""}${body}${joiner}endpoints=${encodeURIComponent(others.join(","))}`;
}

function defaultMemberId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
}

/** Guarantee names accepted by `require`, for documentation and CLI help. */
export const requirableGuarantees: readonly GuaranteeName[] = GUARANTEE_NAMES;
