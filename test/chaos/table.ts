/**
 * node --import tsx test/chaos/table.ts <report.json...>: the figures of chaos reports as
 * the Markdown tables of docs/reliability.md. With --recheck, each history is checked again.
 */
import fs from "node:fs";
import { check, type Report, type Spread } from "./checker.js";
import { declaredPartitionSafe, type History } from "./history.js";

// --recheck: the figures of each report's history checked again by this checker (a report
// keeps the verdict of the checker that wrote it).
const recheck = process.argv.includes("--recheck");
const reports = process.argv
  .slice(2)
  .filter((arg) => arg !== "--recheck")
  .map((f) => JSON.parse(fs.readFileSync(f, "utf8")) as Report & { history?: History })
  .map((r) => {
    if (!recheck || r.history === undefined) return r;
    // Histories written before the runner recorded the declared guarantee.
    const history = { partitionSafe: declaredPartitionSafe(r.history.backend), ...r.history };
    return { ...check(history), history };
  });
const spread = (s: Spread | undefined) => (s === undefined ? "–" : `${s.median} / ${s.max}`);
const lines = [
  "| backend (seed) | run | verdict | sections (excl / shared / sem) | faults | overlaps explained (pairs / older holders, by fault) | stale writes rejected | client errors |",
  "| --- | --- | --- | --- | --- | --- | --- | --- |",
];
for (const r of reports) {
  const faults = Object.entries(r.faults)
    .map(([k, v]) => `${k} ${v?.count}`)
    .join(", ");
  const overlaps =
    Object.entries(r.overlapsByFault)
      .map(([k, v]) => `${k}: ${v.pairs} / ${v.olderSections}`)
      .join("; ") || "0";
  const errors =
    Object.entries(r.clientErrors)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "0";
  const s = r.sections;
  lines.push(
    `| ${r.backend} (${r.seed}) | ${Math.round(r.runMs / 1000)} s | ${r.ok ? "PASS" : "FAIL"} | ${s.total} (${s.exclusive ?? 0} / ${s.shared ?? 0} / ${s.semaphore ?? 0}) | ${faults} | ${overlaps} | ${r.writes.staleRejected} / ${r.writes.stale} | ${errors} |`,
  );
}
lines.push(
  "",
  "| backend | fault | count | takeover ms (median / max) | recovery ms (median / max) | cut holder's signal lead ms (min / median) | grants during |",
  "| --- | --- | --- | --- | --- | --- | --- |",
);
for (const r of reports) {
  for (const [kind, f] of Object.entries(r.faults)) {
    if (f === undefined) continue;
    const lead = f.signalLeadMs === undefined ? "–" : `${f.signalLeadMs.min} / ${f.signalLeadMs.median}`;
    lines.push(
      `| ${r.backend} | ${kind} | ${f.count} | ${spread(f.takeoverMs)} | ${spread(f.recoveryMs)} | ${lead} | ${f.grantsDuring} |`,
    );
  }
}
const partitioned = reports.filter((r) => r.faults.partition !== undefined);
if (partitioned.length > 0) {
  lines.push(
    "",
    "| backend | splits | client faults (cut off) | split to loss signal ms (median / max) | split to re-grant ms (median / max) | signal lead ms (min / median) | grants on the minority side | stale writes rejected | recovery ms (median / max) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const r of partitioned) {
    const f = r.faults.partition as NonNullable<Report["faults"]["partition"]>;
    const faults = (r.history?.faults ?? []).filter((x) => x.kind === "partition");
    const splits = new Set(faults.map((x) => x.at)).size;
    const cutOff = faults.filter((x) => x.minority === true).length;
    const lead = f.signalLeadMs === undefined ? "–" : `${f.signalLeadMs.min} / ${f.signalLeadMs.median}`;
    lines.push(
      `| ${r.backend} | ${splits} | ${f.count} (${cutOff}) | ${spread(f.lossSignalMs)} | ${spread(f.takeoverMs)} | ${lead} | ${f.minorityGrants ?? 0} | ${r.writes.staleRejected} / ${r.writes.stale} | ${spread(f.recoveryMs)} |`,
    );
  }
}
/** The kind of split a partition fault's detail describes (see partitions.ts). */
function splitKind(detail: string): string {
  if (detail.startsWith("leader")) return "leader + a client host";
  if (detail.startsWith("flapping")) return "flapping (4 short splits)";
  if (detail.includes("healed before its TTL")) return "a client cut off during an upgrade, healed within the TTL";
  if (detail.includes("| the rest")) return "symmetric (a server + half the clients)";
  return "a client host alone";
}
const byKind = partitioned.filter((r) => r.history !== undefined);
if (byKind.length > 0) {
  lines.push(
    "",
    "| backend | kind of split | splits | split to loss signal ms (median / max) | split to re-grant ms (median / max) | signal lead ms (min / median) | grants on the minority side | overlaps explained (pairs) | recovery ms (median / max) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const r of byKind) {
    const history = r.history as History;
    const kinds = [...new Set(history.faults.filter((f) => f.kind === "partition").map((f) => splitKind(f.detail)))];
    for (const kind of kinds) {
      // The checker's figures over this kind's splits alone.
      const faults = history.faults.filter((f) => f.kind !== "partition" || splitKind(f.detail) === kind);
      const part = check({ ...history, faults });
      const f = part.faults.partition as NonNullable<Report["faults"]["partition"]>;
      const splits = new Set(faults.filter((x) => x.kind === "partition").map((x) => x.at)).size;
      const lead = f.signalLeadMs === undefined ? "–" : `${f.signalLeadMs.min} / ${f.signalLeadMs.median}`;
      lines.push(
        `| ${r.backend} | ${kind} | ${splits} | ${spread(f.lossSignalMs)} | ${spread(f.takeoverMs)} | ${lead} | ${f.minorityGrants ?? 0} | ${part.overlapsByFault.partition?.pairs ?? 0} | ${spread(f.recoveryMs)} |`,
      );
    }
  }
}
process.stdout.write(`${lines.join("\n")}\n`);
