/**
 * The stable JSON form of an inspection, shared by `baton status --json`, the status page
 * and `JSON.stringify(await coord.inspect())`.
 *
 * @module
 */
import type { Inspection, LockInfo } from "../core/coordinator.js";
import type { LockMode } from "../core/driver.js";
import { type MemberDetails, memberDetails } from "./member.js";

/**
 * The process behind a member, where its id tells it (see {@link memberDetails}); absent
 * for ids of another form.
 */
export interface ProcessJson {
  readonly process?: MemberDetails;
}

function processOf(memberId: string): ProcessJson {
  const details = memberDetails(memberId);
  return details ? { process: details } : {};
}

/** A lock or semaphore in {@link InspectionJson}. */
export interface LockJson {
  readonly name: string;
  readonly limit: number;
  readonly holders: readonly (ProcessJson & {
    readonly memberId: string;
    readonly sessionId: string;
    readonly mode: LockMode;
    /** The fencing token as a decimal string (JSON has no 64-bit integers). */
    readonly token: string;
    readonly since: number;
    readonly heldMs: number;
  })[];
  readonly waiters: readonly (ProcessJson & {
    readonly memberId: string;
    readonly sessionId: string;
    readonly mode: LockMode;
    readonly since: number;
    readonly waitingMs: number;
  })[];
}

/**
 * The stable JSON form of an {@link Inspection} (version 1, documented in docs/cli.md):
 * what `baton status --json` prints and `JSON.stringify(inspection)` gives. Tokens are
 * decimal strings (parse with `BigInt()`), times epoch milliseconds, durations milliseconds.
 */
export interface InspectionJson {
  readonly version: 1;
  readonly backend: string;
  readonly namespace: string;
  readonly at: number;
  readonly locks: readonly LockJson[];
  readonly semaphores: readonly LockJson[];
  readonly groups: readonly {
    readonly id: string;
    readonly members: readonly {
      readonly memberId: string;
      readonly capabilities: unknown;
      readonly joinedAt: number;
    }[];
  }[];
  readonly elections: readonly {
    readonly id: string;
    readonly leader:
      | (ProcessJson & {
          readonly memberId: string;
          readonly value: unknown;
          readonly token: string;
          readonly since: number;
        })
      | null;
    readonly candidates: readonly (ProcessJson & {
      readonly memberId: string;
      readonly since: number;
      readonly waitingMs: number;
    })[];
  }[];
  /** Cells, by name (absent on a backend without cells). Versions are decimal strings. */
  readonly cells?: readonly { readonly name: string; readonly value: unknown; readonly version: string }[];
  /** Takeover records of locks (absent on a backend without cells). Tokens are decimal strings. */
  readonly takeovers?: readonly {
    readonly name: string;
    readonly state: "held" | "lost";
    readonly memberId: string;
    readonly sessionId: string;
    readonly token: string;
    readonly since: number;
    readonly fenceInfo: unknown;
    readonly lockDelayMs: number;
    readonly delayedUntil: number | null;
  }[];
}

/**
 * Turns an inspection into its stable JSON form ({@link InspectionJson}): plain data that
 * `JSON.stringify` takes as it is. `Inspection.toJSON()` calls this.
 */
export function inspectionToJson(info: Inspection): InspectionJson {
  const lock = (l: LockInfo): LockJson => ({
    name: l.name,
    limit: l.limit,
    holders: l.holders.map((h) => ({
      memberId: h.memberId,
      sessionId: h.sessionId,
      mode: h.mode,
      token: String(h.token),
      since: h.since,
      heldMs: h.heldMs,
      ...processOf(h.memberId),
    })),
    waiters: l.waiters.map((w) => ({
      memberId: w.memberId,
      sessionId: w.sessionId,
      mode: w.mode,
      since: w.since,
      waitingMs: w.waitingMs,
      ...processOf(w.memberId),
    })),
  });
  return {
    version: 1 as const,
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
        ? {
            memberId: e.leader.memberId,
            value: e.leader.value,
            token: String(e.leader.token),
            since: e.leader.since,
            ...processOf(e.leader.memberId),
          }
        : null,
      candidates: e.candidates.map((c) => ({
        memberId: c.memberId,
        since: c.since,
        waitingMs: c.waitingMs,
        ...processOf(c.memberId),
      })),
    })),
    ...(info.cells
      ? { cells: info.cells.map((c) => ({ name: c.name, value: c.value, version: String(c.version) })) }
      : {}),
    ...(info.takeovers ? { takeovers: info.takeovers.map((t) => ({ ...t, token: String(t.token) })) } : {}),
  };
}
