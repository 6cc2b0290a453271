/**
 * The stable JSON form of an inspection, shared by `baton status --json`, the status page
 * and `JSON.stringify(await coord.inspect())`.
 *
 * @module
 */
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
