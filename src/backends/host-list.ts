/**
 * The host list of `etcd://h1,h2,h3`, `zookeeper://h1,h2,h3` and `redis+sentinel://h1,h2/m`
 * URLs: `connect()` keeps the first host in the URL and passes the others as the
 * `endpoints` option (the WHATWG URL parser accepts one host only), which the user may also
 * give directly. Read the same way by every backend that takes several hosts.
 *
 * @module
 */
import { InvalidArgumentError } from "../core/errors.js";
import { describe } from "../core/validate.js";

/** Every host: the URL's, then the `endpoints` option's. */
export function hostsOf(url: URL, endpoints: unknown, backend: string): string[] {
  return [...splitHosts(url.host), ...endpointOption(endpoints, backend)];
}

/** The hosts of an `endpoints` option: `"h1:p1,h2:p2"` or an array of such strings. */
export function endpointOption(value: unknown, backend: string): string[] {
  if (value === undefined) return [];
  if (typeof value === "string") return splitHosts(value);
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.flatMap(splitHosts);
  throw new InvalidArgumentError(
    `endpoints must be "host:port,host:port" or an array of "host:port" strings, got ${describe(value)}`,
    { backend },
  );
}

function splitHosts(text: string): string[] {
  return text
    .split(",")
    .map((h) => h.trim())
    .filter(Boolean);
}
