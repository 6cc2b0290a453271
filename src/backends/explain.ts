/**
 * The one shape of an error an operator reads: which endpoint, what failed, what to check,
 * in one sentence. Each backend's translation (etcd/errors.ts, postgres/errors.ts,
 * file/directory.ts) words its failures through here and keeps the client's error as
 * `cause`.
 *
 * @module
 */

/** `<what>: <subject> <failed>; check <check>`. */
export function explain(what: string, subject: string, failed: string, check: string): string {
  return `${what ? `${what}: ` : ""}${subject} ${failed}; check ${check}`;
}

/** A network failure found in a client's error: the errno-style code and the address, if named. */
export interface NetworkFailure {
  readonly code: string;
  readonly address: string | undefined;
}

const FAILURES: Record<string, { failed: string; check: (server: string) => string }> = {
  ECONNREFUSED: {
    failed: "refused the connection (nothing listens there)",
    check: (server) => `that ${server} runs and listens on that address, and the host and port in the URL`,
  },
  ENOTFOUND: { failed: "does not resolve (unknown host name)", check: () => "the host name in the URL and DNS" },
  EAI_AGAIN: { failed: "could not be resolved (DNS did not answer)", check: () => "DNS and the host name in the URL" },
  ETIMEDOUT: {
    failed: "did not answer in time",
    check: (server) => `that ${server} is up, and the network path and firewalls to it`,
  },
  EHOSTUNREACH: { failed: "is unreachable from this host", check: () => "the network route and firewalls to it" },
  ENETUNREACH: { failed: "is on a network this host cannot reach", check: () => "the network route to it" },
  ECONNRESET: {
    failed: "closed the connection abruptly",
    check: (server) => `the ${server} server's log, and whether it expects TLS (or plain TCP)`,
  },
};

/**
 * Finds a network failure in `error`, its message or its `cause` chain: an errno code
 * (`ECONNREFUSED`, `ETIMEDOUT`, ...) and the `host:port` it names, if any. Undefined for
 * anything else.
 */
export function networkFailure(error: unknown): NetworkFailure | undefined {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    const message = e instanceof Error ? e.message : String(e);
    const named = [...message.matchAll(/\b(E[A-Z_]{4,})\b(?:\s+([\w.[\]:-]+:\d+))?/g)].find((m) => m[1]! in FAILURES);
    const found = typeof code === "string" && code in FAILURES ? code : named?.[1];
    if (found) {
      const { address, port, hostname } = e as { address?: string; port?: number; hostname?: string };
      const host = address ?? hostname;
      return { code: found, address: named?.[2] ?? (host && port && !host.includes(":") ? `${host}:${port}` : host) };
    }
    // gRPC's resolver says it in words, with the target.
    const resolving = /Name resolution failed for target (?:dns:)?(\S+?),?\s/.exec(`${message} `);
    if (resolving) return { code: "ENOTFOUND", address: resolving[1] };
    if (/timed? ?out|deadline exceeded/i.test(message)) return { code: "ETIMEDOUT", address: undefined };
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** One sentence for a network failure talking to `server` (e.g. "etcd"), at the address the failure names. */
export function explainNetwork(what: string, server: string, failure: NetworkFailure): string {
  const known = FAILURES[failure.code] as (typeof FAILURES)[string];
  return explain(what, failure.address ? `${server} at ${failure.address}` : server, known.failed, known.check(server));
}
