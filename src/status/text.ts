/**
 * The human-readable form of an inspection: `baton status`, `baton status --watch` and the
 * status page's `status.txt`.
 *
 * @module
 */
import type { Inspection, LockInfo } from "../core/coordinator.js";
import { memberDetails } from "./member.js";

/** Default of {@link StatusTextOptions.longWaitMs}: waits this long or longer are marked. */
export const LONG_WAIT_MS = 30_000;

/** Options of {@link formatStatus}. */
export interface StatusTextOptions {
  /** Waits at least this long (ms) are marked `!` (and shown in bold yellow with `color`). Default 30 s. */
  longWaitMs?: number | undefined;
  /** ANSI colours, for a terminal. Default `false`. */
  color?: boolean | undefined;
}

function ms(value: number): string {
  if (value < 1000) return `${value}ms`;
  if (value < 60_000) return `${(value / 1000).toFixed(1)}s`;
  if (value < 3_600_000) return `${Math.floor(value / 60_000)}m${Math.floor((value % 60_000) / 1000)}s`;
  return `${Math.floor(value / 3_600_000)}h${Math.floor((value % 3_600_000) / 60_000)}m`;
}

/** A cell and, for colour, the ANSI code it is drawn with (padding ignores the code). */
type Cell = string | { text: string; ansi: string };

const text = (c: Cell) => (typeof c === "string" ? c : c.text);

function table(header: string[], rows: Cell[][], color: boolean): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => text(r[i] ?? "").length)));
  const line = (cells: Cell[]) =>
    cells
      .map((c, i) => {
        const padded = text(c).padEnd(widths[i] ?? 0);
        return color && typeof c !== "string" ? `\u001b[${c.ansi}m${padded}\u001b[0m` : padded;
      })
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** MEMBER, PID, HOST, COMMAND cells: the id as it is (what `baton unlock --member` takes), and what it tells. */
function who(memberId: string): string[] {
  const details = memberDetails(memberId);
  return details ? [memberId, String(details.pid), details.host, details.command ?? ""] : [memberId, "", "", ""];
}

/** The human-readable form of `baton status`. */
export function formatStatus(info: Inspection, options: StatusTextOptions = {}): string {
  const longWaitMs = options.longWaitMs ?? LONG_WAIT_MS;
  const color = options.color === true;
  const waited = (waitingMs: number): Cell =>
    waitingMs >= longWaitMs ? { text: `${ms(waitingMs)} !`, ansi: "1;33" } : ms(waitingMs);
  const parts: string[] = [`backend: ${info.backend}${info.namespace ? `  namespace: ${info.namespace}` : ""}`];
  const lockRows = (list: readonly LockInfo[], permits: boolean) =>
    list.flatMap((l): Cell[][] => [
      ...l.holders.map((h) => [
        l.name,
        ...(permits ? [`${l.holders.length}/${l.limit}`] : []),
        "holds",
        h.mode,
        ms(h.heldMs),
        "",
        String(h.token),
        ...who(h.memberId),
      ]),
      ...l.waiters.map((w) => [
        l.name,
        ...(permits ? [`${l.holders.length}/${l.limit}`] : []),
        "waits",
        w.mode,
        "",
        waited(w.waitingMs),
        "",
        ...who(w.memberId),
      ]),
    ]);
  const lockHeader = ["STATE", "MODE", "HELD", "WAITING", "TOKEN", "MEMBER", "PID", "HOST", "COMMAND"];
  parts.push(
    info.locks.length === 0
      ? "locks: none"
      : `locks:\n${table(["NAME", ...lockHeader], lockRows(info.locks, false), color)}`,
  );
  if (info.semaphores.length > 0) {
    parts.push(`semaphores:\n${table(["NAME", "PERMITS", ...lockHeader], lockRows(info.semaphores, true), color)}`);
  }
  if (info.groups.length > 0) {
    const rows = info.groups.flatMap((g) =>
      g.members.map((m) => [g.id, m.memberId, ms(Math.max(0, info.at - m.joinedAt)), JSON.stringify(m.capabilities)]),
    );
    parts.push(`groups:\n${table(["GROUP", "MEMBER", "FOR", "CAPABILITIES"], rows, color)}`);
  }
  if (info.elections.length > 0) {
    const rows = info.elections.flatMap((e): Cell[][] => [
      e.leader
        ? [
            e.id,
            "leads",
            ms(Math.max(0, info.at - e.leader.since)),
            "",
            JSON.stringify(e.leader.value),
            ...who(e.leader.memberId),
          ]
        : [e.id, "(no leader)", "", "", "", "", "", "", ""],
      ...e.candidates.map((c) => [e.id, "candidate", "", waited(c.waitingMs), "", ...who(c.memberId)]),
    ]);
    parts.push(
      `elections:\n${table(["ELECTION", "STATE", "LEADS", "WAITING", "VALUE", "MEMBER", "PID", "HOST", "COMMAND"], rows, color)}`,
    );
  }
  if (info.cells && info.cells.length > 0) {
    const rows = info.cells.map((c) => [c.name, String(c.version), JSON.stringify(c.value)]);
    parts.push(`cells:\n${table(["CELL", "VERSION", "VALUE"], rows, color)}`);
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
    parts.push(`takeover records:\n${table(["LOCK", "STATE", "MEMBER", "TOKEN", "DELAY", "FENCE INFO"], rows, color)}`);
  }
  return `${parts.join("\n\n")}\n`;
}
