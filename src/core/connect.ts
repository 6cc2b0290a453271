import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { Coordinator } from "./coordinator.js";
import { CoordinatorCore } from "./core.js";
import { parseDuration } from "./duration.js";
import { BackendUnavailableError, BatonError, InvalidArgumentError } from "./errors.js";
import { checkRequirements, GUARANTEE_NAMES, type GuaranteeName, type Requirement } from "./guarantees.js";
import { backendForScheme, backends } from "./registry.js";
import { type MetricsOptions, Telemetry } from "./telemetry.js";
import { checkName, checkTtl, describe, MAX_NAMESPACE_BYTES } from "./validate.js";

/** The URL used when none is given and `BATON_URL` is unset: the file backend's default directory. */
export const DEFAULT_URL = "file:";

/**
 * Options of {@link connect}. Every option may be given in the URL's query string
 * (`?namespace=app&ttl=5s`) or in this object, with the same meaning; this object wins
 * where both give one. An option `undefined` here counts as not given.
 */
export interface ConnectOptions {
  /**
   * This client's id in groups and `inspect()`. Default: `host:pid:random`. Two live
   * coordinators must not share one.
   */
  memberId?: string | undefined;
  /** Prefix isolating one application's names from another's on the same backend. Default `""`. */
  namespace?: string | undefined;
  /**
   * Session TTL in ms (1000 to 86,400,000; default 10,000): how long a dead or cut-off
   * client keeps its locks on TTL-based backends, and the base of the keep-alive period.
   */
  ttlMs?: number | undefined;
  /**
   * Session TTL as a duration string (`"5s"`, `"1500ms"`, `"2m"`), the same as `?ttl=5s` in
   * the URL. Give `ttl` or `ttlMs`, not both.
   */
  ttl?: string | undefined;
  /**
   * Guarantees to insist on; see {@link Requirement}. A comma-separated string
   * (`"fencing,fifo"`) is accepted too, as in the query string.
   */
  require?: Requirement | string | undefined;
  /**
   * OpenTelemetry metrics (docs/observability.md). Default: recorded through the global
   * `@opentelemetry/api` meter provider when that package is installed, without lock names.
   * In the URL: `?metrics=off`, `?metrics=on` or `?metrics=names` (with lock names).
   */
  metrics?: MetricsOptions | undefined;
  /** Backend-specific options (see each backend's docs). */
  [option: string]: unknown;
}

const CORE_QUERY = new Set(["memberId", "namespace", "ttlMs", "ttl", "require", "metrics"]);

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
  // Both sources are read by one rule, so an option means the same in either.
  const merged: Record<string, unknown> = { ...coreOptions(query, "the URL"), ...coreOptions(options, "options") };

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

  const metrics = checkMetrics(merged.metrics);
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
    telemetry: await Telemetry.create(definition.name, namespace, metrics),
  });
  return Coordinator.create(core);
}

/**
 * Normalises one source of options (the query string, whose values are strings, or the
 * options object): drops `undefined` values, turns `ttl` (a duration such as `"5s"`) or a
 * string `ttlMs` into a number `ttlMs`, and a comma-separated `require` into a list.
 */
function coreOptions(source: Record<string, unknown>, where: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(source)) if (value !== undefined) out[key] = value;
  if (out.ttl !== undefined) {
    if (out.ttlMs !== undefined) {
      throw new InvalidArgumentError(`${where} gives both ttl and ttlMs; give one (ttl: "5s", or ttlMs: 5000)`);
    }
    if (typeof out.ttl !== "string") {
      throw new InvalidArgumentError(
        `ttl must be a duration string such as "5s" or "1500ms", got ${describe(out.ttl)}; use ttlMs for a number of milliseconds`,
      );
    }
    out.ttlMs = parseDuration(out.ttl, "ttl");
    delete out.ttl;
  } else if (typeof out.ttlMs === "string") {
    out.ttlMs = /^\d+$/.test(out.ttlMs) ? Number(out.ttlMs) : parseDuration(out.ttlMs, "ttlMs");
  }
  if (typeof out.require === "string") out.require = out.require.split(",").filter(Boolean);
  return out;
}

const METRICS_WORDS: Record<string, MetricsOptions> = {
  on: {},
  off: { enabled: false },
  names: { lockNames: true },
};

/** The `metrics` option: an object, or in the query string one of `on`, `off`, `names`. */
function checkMetrics(value: unknown): MetricsOptions | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string") {
    const known = METRICS_WORDS[value];
    if (known) return known;
    throw new InvalidArgumentError(`metrics must be "on", "off" or "names", got ${describe(value)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(
      `metrics must be an object ({ meterProvider?, lockNames?, enabled? }) or "on"/"off"/"names", got ${describe(value)}`,
    );
  }
  const options = value as Record<string, unknown>;
  for (const key of Object.keys(options)) {
    if (!["meterProvider", "lockNames", "enabled"].includes(key)) {
      throw new InvalidArgumentError(`unknown metrics option "${key}"; allowed: meterProvider, lockNames, enabled`);
    }
  }
  const provider = options.meterProvider as { getMeter?: unknown } | undefined;
  if (provider !== undefined && typeof provider?.getMeter !== "function") {
    throw new InvalidArgumentError(`metrics.meterProvider must be an OpenTelemetry MeterProvider (with getMeter())`);
  }
  for (const flag of ["lockNames", "enabled"] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== "boolean") {
      throw new InvalidArgumentError(`metrics.${flag} must be a boolean, got ${describe(options[flag])}`);
    }
  }
  return options as MetricsOptions;
}

function parseUrl(url: string | URL): URL {
  if (url instanceof URL) return new URL(url.href);
  if (typeof url !== "string" || url.length === 0) {
    throw new InvalidArgumentError(`url must be a non-empty string or URL, got ${describe(url)}`);
  }
  const hosts = HOST_LIST.exec(url);
  if (hosts) {
    const definition = backendForScheme(hosts[1]!.slice(0, -3).toLowerCase());
    if (!definition.hostLists) {
      const takers = backends()
        .filter((b) => b.hostLists)
        .flatMap((b) => b.schemes.map((s) => `${s}://`));
      throw new InvalidArgumentError(
        `${JSON.stringify(url)} names several hosts; the ${definition.name} backend takes one (host lists are for ${takers.join(", ")})`,
        { backend: definition.name },
      );
    }
  }
  try {
    return new URL(hosts ? hostListToEndpoints(hosts) : url);
  } catch (cause) {
    throw new InvalidArgumentError(
      `${JSON.stringify(url)} is not a URL; use e.g. memory://, file:///var/run/app-locks, etcd://host:2379`,
      { cause },
    );
  }
}

/** `scheme://[user@]h1:p1,h2:p2/path?q`: a host list, which is not a WHATWG URL. */
const HOST_LIST = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#@]*@)?([^/?#]*,[^/?#]*)(.*)$/i;

/**
 * A host list's URL for a backend that declares `hostLists`: the first host stays in the URL,
 * the others become the `endpoints` option (read by src/backends/host-list.ts).
 */
function hostListToEndpoints(match: RegExpExecArray): string {
  const [, scheme, userinfo = "", hosts = "", rest = ""] = match;
  const [first, ...others] = hosts.split(",").filter(Boolean);
  const hashAt = rest.indexOf("#");
  const body = hashAt >= 0 ? rest.slice(0, hashAt) : rest;
  const joiner = body.includes("?") ? "&" : "?";
  return `${scheme}${userinfo}${first ?? ""}${body}${joiner}endpoints=${encodeURIComponent(others.join(","))}`;
}

/** The default member id, `host:pid:random` (see src/status/member.ts for what reads it). */
export function defaultMemberId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
}

/** Guarantee names accepted by `require`. @deprecated The same list as {@link GUARANTEE_NAMES}; use that. */
export const requirableGuarantees: readonly GuaranteeName[] = GUARANTEE_NAMES;
