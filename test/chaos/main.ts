/**
 * npm run chaos -- --backend <file|etcd|etcd-cluster|postgres> [--seconds N] [--clients N]
 *   [--nemesis kill,pause,cut,restart,member | none] [--seed N] [--ttl MS] [--noop] [--out FILE]
 *
 * Prints fault lines as they happen, then one verdict line; writes the JSON report (default
 * chaos-<backend>-<seed>.json in the working directory). Exit status 0 on PASS, 1 on FAIL,
 * 64 on bad usage.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { BACKENDS, backendNamed } from "./backends.js";
import { check } from "./checker.js";
import type { FaultKind } from "./history.js";
import { runChaos } from "./runner.js";

const KINDS: readonly FaultKind[] = ["kill", "pause", "cut", "restart", "member", "partition"];

function usage(message: string): never {
  process.stderr.write(
    `chaos: ${message}\nusage: npm run chaos -- --backend <${BACKENDS.map((b) => b.name).join("|")}> [--seconds N] [--clients N] [--nemesis ${KINDS.join(",")}|none] [--seed N] [--ttl MS] [--noop] [--out FILE]\n`,
  );
  process.exit(64);
}

function positiveInt(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) usage(`--${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      backend: { type: "string" },
      seconds: { type: "string" },
      clients: { type: "string" },
      nemesis: { type: "string" },
      seed: { type: "string" },
      ttl: { type: "string" },
      noop: { type: "boolean" },
      out: { type: "string" },
    },
    strict: true,
  }).values;
}
try {
  parsed = parse();
} catch (error) {
  usage((error as Error).message);
}
if (parsed.backend === undefined) usage("--backend is required");
let backend: ReturnType<typeof backendNamed>;
try {
  backend = backendNamed(parsed.backend);
} catch (error) {
  usage((error as Error).message);
}
const nemeses =
  parsed.nemesis === undefined
    ? backend.nemeses
    : parsed.nemesis === "none"
      ? []
      : parsed.nemesis.split(",").map((k) => {
          if (!backend.nemeses.includes(k as FaultKind)) {
            usage(
              `nemesis ${JSON.stringify(k)} does not apply to ${backend.name}; it takes ${backend.nemeses.join(", ")}`,
            );
          }
          return k as FaultKind;
        });
const seed = parsed.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : positiveInt("seed", parsed.seed, 1);
const history = await runChaos({
  backend,
  seconds: positiveInt("seconds", parsed.seconds, 30),
  clients: positiveInt("clients", parsed.clients, 5),
  nemeses,
  seed,
  noop: parsed.noop ?? false,
  ttlMs: positiveInt("ttl", parsed.ttl, 2000),
  log: (line) => process.stderr.write(`chaos: ${line}\n`),
});
const report = check(history);
const out = parsed.out ?? `chaos-${backend.name}-${seed}.json`;
fs.writeFileSync(out, `${JSON.stringify({ ...report, history }, null, 2)}\n`);
for (const v of report.violations.slice(0, 10)) process.stderr.write(`chaos: violation: ${v}\n`);
process.stdout.write(`${report.verdict} (report: ${out})\n`);
process.exit(report.ok ? 0 : 1);
