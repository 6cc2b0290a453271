/**
 * `baton status --serve`: the status page, its JSON and Prometheus `/metrics` on a local
 * port until SIGINT or SIGTERM.
 *
 * @module
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Coordinator } from "../core/coordinator.js";
import { type PrometheusMetrics, prometheusMetrics } from "../metrics/prometheus.js";
import { statusPage } from "../status-page.js";
import { closeWithin } from "./release.js";

/**
 * Serves until a signal, then closes `coord` and every coordinator opened for the
 * namespace picker (`open(namespace)`). `/metrics` serves what every scrape's
 * `inspect()` sees when OpenTelemetry's SDK and Prometheus exporter are installed, and
 * says what to install otherwise.
 */
export async function serveStatus(
  coord: Coordinator,
  open: (namespace: string) => Promise<Coordinator>,
  host: string,
  port: number,
  longWaitMs: number | undefined,
): Promise<void> {
  const others = new Map<string, Promise<Coordinator>>();
  const forNamespace = (namespace: string) => {
    let found = others.get(namespace);
    if (!found) {
      found = open(namespace);
      found.catch(() => others.delete(namespace));
      others.set(namespace, found);
    }
    return found;
  };
  let metrics: PrometheusMetrics | null = null;
  let missing = "";
  try {
    metrics = await prometheusMetrics();
    metrics.observe(coord);
  } catch (error) {
    missing = `${(error as Error).message}\n`;
  }
  const server = createServer(
    statusPage(coord, {
      forNamespace,
      longWaitMs,
      metrics:
        metrics?.handler ??
        ((_request, response) => {
          response.writeHead(501, { "content-type": "text/plain" });
          response.end(missing);
        }),
    }),
  );
  const closeAll = async () => {
    await metrics?.shutdown();
    const opened = await Promise.allSettled(others.values());
    await Promise.all(
      [coord, ...opened.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []))].map((c) =>
        closeWithin(() => c.close()),
      ),
    );
  };
  await new Promise<void>((resolve, reject) => {
    server.once("error", async (error: NodeJS.ErrnoException) => {
      await closeAll();
      const why = error.code === "EADDRINUSE" ? "the port is in use" : (error.code ?? error.message);
      reject(new Error(`cannot serve the status page on ${host}:${port} (${why}); check --host and --serve`));
    });
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  process.stdout.write(`baton: status page on http://${host}:${address.port}/, metrics on /metrics (Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => resolve());
  });
  server.close();
  server.closeAllConnections();
  await closeAll();
}
