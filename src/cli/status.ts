import type { Inspection, LockInfo } from "../core/coordinator.js";

/**
 * The stable JSON form of `baton status --json` (documented in docs/cli.md): tokens are
 * decimal strings, times are epoch milliseconds, durations are milliseconds.
 */
export function statusJson(info: Inspection): unknown {
  const lock = (l: LockInfo) => ({
    name: l.name,
    limit: l.limit,
    holders: l.holders.map((h) => ({
      memberId: h.memberId,
      sessionId: h.sessionId,
      mode: h.mode,
      token: String(h.token),
      since: h.since,
      heldMs: h.heldMs,
    })),
    waiters: l.waiters.map((w) => ({
      memberId: w.memberId,
      sessionId: w.sessionId,
      mode: w.mode,
      since: w.since,
      waitingMs: w.waitingMs,
    })),
  });
  return {
    version: 1,
    backend: info.backend,
    namespace: info.namespace,
    at: info.at,
    locks: info.locks.map(lock),
    semaphores: info.semaphores.map(lock),
    groups: info.groups.map((g) => ({
      id: g.id,
      members: g.members.map((m) => ({ memberId: m.memberId, capabilities: m.capabilities, joinedAt: m.joinedAt })),
    })),
    elections: info.elections.map((e) => ({
      id: e.id,
      leader: e.leader
        ? { memberId: e.leader.memberId, value: e.leader.value, token: String(e.leader.token), since: e.leader.since }
        : null,
      candidates: e.candidates.map((c) => ({ memberId: c.memberId, since: c.since, waitingMs: c.waitingMs })),
    })),
  };
}

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
  return `${parts.join("\n\n")}\n`;
}
