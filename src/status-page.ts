/**
 * A status page: who holds what, who waits and since when, as HTML (refreshing itself) and
 * as the stable JSON of `baton status --json`, with Prometheus metrics beside it. Mount it
 * in an existing HTTP server, or run `baton status --serve 8080`.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Coordinator } from "./core/coordinator.js";
import { checkName, MAX_NAMESPACE_BYTES } from "./core/validate.js";
import { inspectionToJson } from "./status/json.js";
import { statusPageHtml } from "./status/page-html.js";
import { formatStatus, LONG_WAIT_MS } from "./status/text.js";

/** Options of {@link statusPage}. */
export interface StatusPageOptions {
  /**
   * Serves `/metrics` with this handler, e.g. `(await prometheusMetrics()).handler`.
   * Without it `/metrics` is a 404.
   */
  metrics?: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  /**
   * A coordinator for another namespace, for the page's namespace picker (`?namespace=`).
   * The page owns nothing it gets here: closing them is the caller's. Without it only the
   * coordinator's own namespace is shown and the picker is disabled.
   */
  forNamespace?: ((namespace: string) => Coordinator | Promise<Coordinator>) | undefined;
  /** Waits at least this long (ms) are highlighted. Default 30 s. */
  longWaitMs?: number | undefined;
}

function send(response: ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  response.end(body);
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

/**
 * An HTTP request handler serving Baton's status for `coordinator`'s namespace (or, with
 * `forNamespace`, another one given as `?namespace=`): `/` (or any path ending in `/`) is
 * an HTML page that refreshes itself every second, `status.json` the stable JSON of
 * `baton status --json`, `status.txt` the text table, `namespaces.json` the namespaces in
 * use, `metrics` the Prometheus metrics when `options.metrics` is given. Read-only.
 * Answers 400 for a malformed or unswitchable namespace, 503 with the error when the
 * backend cannot be inspected, 404 otherwise.
 */
export function statusPage(
  coordinator: Coordinator,
  options: StatusPageOptions = {},
): (request: IncomingMessage, response: ServerResponse) => void {
  const longWaitMs = options.longWaitMs ?? LONG_WAIT_MS;
  const page = statusPageHtml(longWaitMs);
  const pick = async (url: URL): Promise<Coordinator> => {
    const wanted = url.searchParams.get("namespace");
    if (wanted === null || wanted === coordinator.namespace) return coordinator;
    if (wanted !== "") checkName("namespace", wanted, MAX_NAMESPACE_BYTES);
    if (!options.forNamespace) throw new RangeError(`this page shows namespace "${coordinator.namespace}" only`);
    return options.forNamespace(wanted);
  };
  return (request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    const path = url.pathname;
    if (path.endsWith("/")) return send(response, 200, "text/html; charset=utf-8", page);
    if (path.endsWith("/metrics") && options.metrics) return options.metrics(request, response);
    if (path.endsWith("/namespaces.json")) {
      coordinator.namespaces().then(
        (namespaces) => {
          const body = { current: coordinator.namespace, namespaces, switchable: options.forNamespace !== undefined };
          send(response, 200, "application/json", JSON.stringify(body));
        },
        () => {
          const body = { current: coordinator.namespace, namespaces: [], switchable: false };
          send(response, 200, "application/json", JSON.stringify(body));
        },
      );
      return;
    }
    const json = path.endsWith("/status.json");
    if (!json && !path.endsWith("/status.txt")) return send(response, 404, "text/plain", "not found\n");
    pick(url).then(
      (coord) =>
        coord.inspect().then(
          (info) =>
            json
              ? send(response, 200, "application/json", JSON.stringify(inspectionToJson(info)))
              : send(response, 200, "text/plain; charset=utf-8", formatStatus(info, { longWaitMs })),
          (error: unknown) => send(response, 503, "text/plain", `${message(error)}\n`),
        ),
      (error: unknown) => send(response, 400, "text/plain", `${message(error)}\n`),
    );
  };
}
