/**
 * `baton status`: the tables, `--json`, `--watch` and `--serve` (the page and /metrics).
 *
 * @module
 */
import type { Command, Option } from "commander";
import type { Coordinator } from "../core/coordinator.js";
import { durationFlag, portFlag } from "./flags.js";
import { closeWithin } from "./release.js";
import { serveStatus } from "./serve.js";
import { formatStatus, statusJson } from "./status.js";
import { watchStatus } from "./watch.js";

/** The parsed flags of `baton status`. */
export interface StatusOptions {
  url?: string;
  namespace?: string;
  json?: boolean;
  serve?: number;
  host: string;
  watch?: boolean;
  interval: number;
  longWait?: number;
}

/** Adds `baton status` to `root`; `open` connects for these options. */
export function statusCommand(
  root: Command,
  common: { url: () => Option; namespace: () => Option },
  open: (options: { url?: string; namespace?: string }) => Promise<Coordinator>,
): void {
  root
    .command("status")
    .description("show locks (holders, waiters and wait times), semaphores, groups and leaders")
    .addOption(common.url())
    .addOption(common.namespace())
    .option("--json", "print stable JSON (see docs/cli.md) instead of a table")
    .option(
      "--serve <port>",
      "serve a live status page on 127.0.0.1:<port> until interrupted (0: any free port)",
      portFlag("--serve"),
    )
    .option("--host <address>", "address for --serve", "127.0.0.1")
    .option("--watch", "redraw the table in place every --interval until interrupted")
    .option("--interval <duration>", "refresh period of --watch", durationFlag("--interval", 100), 1000)
    .option("--long-wait <duration>", "highlight waits at least this long (default 30s)", durationFlag("--long-wait"))
    .addHelpText(
      "after",
      "\nExamples:\n  baton status\n  baton status --json | jq '.locks[] | select(.waiters | length > 0)'\n  baton status --serve 8080   # then open http://127.0.0.1:8080/, scrape /metrics\n  baton status --watch",
    )
    .action(async (options: StatusOptions) => {
      const coord = await open(options);
      if (options.serve !== undefined) {
        await serveStatus(
          coord,
          (namespace) => open({ ...options, namespace }),
          options.host,
          options.serve,
          options.longWait,
        );
        return;
      }
      if (options.watch) {
        try {
          process.exitCode = await watchStatus(coord, { intervalMs: options.interval, longWaitMs: options.longWait });
        } finally {
          await closeWithin(() => coord.close());
        }
        return;
      }
      try {
        const info = await coord.inspect();
        process.stdout.write(
          options.json
            ? `${JSON.stringify(statusJson(info), null, 2)}\n`
            : formatStatus(info, { longWaitMs: options.longWait, color: process.stdout.isTTY === true }),
        );
        // inspect() sees one namespace: say where else something is live.
        if (!options.json) process.stdout.write(await otherNamespaces(coord, info.namespace));
      } finally {
        await coord.close();
      }
    });
}

/** A line naming the other namespaces in use (none: nothing), or saying they cannot be listed. */
async function otherNamespaces(coord: Coordinator, shown: string): Promise<string> {
  const label = (ns: string) => (ns === "" ? '"" (the default)' : JSON.stringify(ns));
  try {
    const others = (await coord.namespaces()).filter((ns) => ns !== shown);
    if (others.length === 0) return "";
    return `\nAlso in use: namespace${others.length > 1 ? "s" : ""} ${others.map(label).join(", ")}; baton status --namespace NAME shows one\n`;
  } catch {
    return `\n(namespace ${label(shown)} only; this backend cannot list the others)\n`;
  }
}
