/**
 * The human-readable form of an inspection: `baton status` and the status page's
 * `status.txt`.
 *
 * @module
 */
import type { Inspection, LockInfo } from "../core/coordinator.js";

function ms(value: number): string {
  if (value < 1000) return `${value}ms`;
  if (value < 60_000) return `${(value / 1000).toFixed(1)}s`;
  if (value < 3_600_000) return `${Math.floor(value / 60_000)}m${Math.floor((value % 60_000) / 1000)}s`;
  return `${Math.floor(value / 3_600_000)}h${Math.floor((value % 3_600_000) / 60_000)}m`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** The human-readable form of `baton status`. */
export function formatStatus(info: Inspection): string {
  const parts: string[] = [`backend: ${info.backend}${info.namespace ? `  namespace: ${info.namespace}` : ""}`];
  const lockRows = (list: readonly LockInfo[], withLimit: boolean) =>
    list.flatMap((l) => [
      ...l.holders.map((h) => [
        l.name,
        ...(withLimit ? [String(l.limit)] : []),
        "holds",
        h.mode,
        h.memberId,
        ms(h.heldMs),
        String(h.token),
      ]),
      ...l.waiters.map((w) => [
        l.name,
        ...(withLimit ? [String(l.limit)] : []),
        "waits",
        w.mode,
        w.memberId,
        ms(w.waitingMs),
        "",
      ]),
    ]);
  parts.push(
    info.locks.length === 0
      ? "locks: none"
      : `locks:\n${table(["NAME", "STATE", "MODE", "MEMBER", "FOR", "TOKEN"], lockRows(info.locks, false))}`,
  );
  if (info.semaphores.length > 0) {
    parts.push(
      `semaphores:\n${table(["NAME", "LIMIT", "STATE", "MODE", "MEMBER", "FOR", "TOKEN"], lockRows(info.semaphores, true))}`,
    );
  }
  if (info.groups.length > 0) {
    const rows = info.groups.flatMap((g) =>
      g.members.map((m) => [g.id, m.memberId, ms(Math.max(0, info.at - m.joinedAt)), JSON.stringify(m.capabilities)]),
    );
    parts.push(`groups:\n${table(["GROUP", "MEMBER", "FOR", "CAPABILITIES"], rows)}`);
  }
  if (info.elections.length > 0) {
    const rows = info.elections.map((e) => [
      e.id,
      e.leader?.memberId ?? "(none)",
      e.leader ? ms(Math.max(0, info.at - e.leader.since)) : "",
      e.leader ? JSON.stringify(e.leader.value) : "",
      String(e.candidates.length),
    ]);
    parts.push(`elections:\n${table(["ELECTION", "LEADER", "FOR", "VALUE", "CANDIDATES"], rows)}`);
  }
  if (info.cells && info.cells.length > 0) {
    const rows = info.cells.map((c) => [c.name, String(c.version), JSON.stringify(c.value)]);
    parts.push(`cells:\n${table(["CELL", "VERSION", "VALUE"], rows)}`);
  }
  if (info.takeovers && info.takeovers.length > 0) {
    const rows = info.takeovers.map((t) => [
      t.name,
      t.state,
      t.memberId,
      String(t.token),
      t.delayedUntil !== null && t.delayedUntil > info.at ? `delayed ${ms(t.delayedUntil - info.at)} more` : "",
      JSON.stringify(t.fenceInfo),
    ]);
    parts.push(`takeover records:\n${table(["LOCK", "STATE", "MEMBER", "TOKEN", "DELAY", "FENCE INFO"], rows)}`);
  }
  return `${parts.join("\n\n")}\n`;
}
