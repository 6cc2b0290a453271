/**
 * Writes docs/guarantees.md from the backends' own declarations (src/backends/*\/definition.ts),
 * so the table can never drift from the code. `npm run docs:guarantees`; a test checks the
 * committed file is current.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { builtinBackends } from "../src/backends/index.js";
import { refusedSchemes } from "../src/backends/refused.js";
import { GUARANTEE_NAMES } from "../src/core/guarantees.js";

export function guaranteesTable(): string {
  const yes = (v: boolean) => (v ? "yes" : "no");
  const header = ["backend", "URL form", ...GUARANTEE_NAMES, "crash release"];
  const rows = builtinBackends.map((b) => [
    `[${b.name}](backends/${b.name}.md)`,
    `\`${b.urlForm.split("  ")[0]}\``,
    ...GUARANTEE_NAMES.map((g) => yes(b.guarantees[g])),
    b.guarantees.crashRelease === "ttl" ? "within the session TTL" : `${b.guarantees.crashRelease} ms`,
  ]);
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [
    "# Guarantees by backend",
    "",
    "Generated from each backend's declaration by `npm run docs:guarantees`; do not edit by hand.",
    'A caller can insist on any of these: `connect(url, { require: ["partitionSafe", "fencing"] })`',
    "or `{ require: { crashReleaseMs: 1000 } }`; a backend that lacks one is refused with a",
    "`MissingGuaranteeError` naming what is missing.",
    "",
    line(header),
    line(header.map(() => "---")),
    ...rows.map(line),
    "",
    "- **acrossProcesses / acrossHosts**: which clients it coordinates.",
    "- **partitionSafe**: state lives in a consensus-replicated store; a minority side cannot grant.",
    "- **fencing**: `handle.token` strictly increases per name across all holders and clients.",
    "- **sharedLocks**: reader/writer locks, upgrade and downgrade.",
    "- **fifo**: waiters on one lock are granted in arrival order.",
    "- **pushEvents**: waits and watches are woken by pushed events, never by polling.",
    "- **crash release**: how long a crashed holder's locks stay held.",
    "",
    "Summaries:",
    "",
    ...builtinBackends.map((b) => `- **${b.name}**: ${b.summary}`),
    "",
    "## Refused on purpose",
    "",
    "`connect()` answers these URL schemes with an `UnsupportedError` that gives the reason below",
    "and names the backends to use instead (src/backends/refused.ts, test/backends/refused.test.ts):",
    "",
    ...refusedSchemes.map((r) => `- **${r.schemes.map((s) => `${s}://`).join(", ")}**: ${r.reason}`),
    "",
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(new URL("../docs/guarantees.md", import.meta.url), guaranteesTable());
}
