/**
 * Stores Baton refuses to put locks on, with the reason: the seeds' driver compliance
 * policy removes drivers that cannot meet the guarantees rather than ship them weak.
 * `connect()` answers these schemes with an `UnsupportedError` that says why and names the
 * backends to use instead; the README's backend section lists them too.
 *
 * @module
 */
import type { RefusedScheme } from "../core/registry.js";

const instead =
  "use redis:// (single server, fencing tokens), postgres:// or mysql:// (the database you run), or etcd:// / zookeeper:// (partition-safe)";

/** Schemes refused on purpose, in documentation order. */
export const refusedSchemes: readonly RefusedScheme[] = [
  {
    schemes: ["memcached", "memcache"],
    reason: `memcached cannot hold a correct lock: each key lives on one server with no replication, eviction under memory pressure and restarts silently drop a held lock (two holders), there is no atomic compare-and-delete (a release by get-then-delete can delete another holder's lock, as tooz's driver does) and no counter that survives, so no fencing token. Baton has no memcached backend; ${instead}`,
  },
  {
    schemes: ["consul"],
    reason: `Consul is not packaged where Baton is built and tested, so a Consul backend could not be verified against a real server, and Baton ships no backend it cannot test; ${instead}`,
  },
];
