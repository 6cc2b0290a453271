/**
 * Who holds a lock, a semaphore or leadership, in one line for an operator: what
 * `baton ... --no-wait` prints when it is busy.
 *
 * @module
 */
import type { Coordinator } from "../core/coordinator.js";
import { memberDetails } from "../status/member.js";

/** `member m (pid 12 on host) since 09:40:01 UTC (3.2s ago)`. */
export function describeHolder(memberId: string, since: number, now: number): string {
  const details = memberDetails(memberId);
  const where = details ? ` (pid ${details.pid} on ${details.host})` : "";
  const at = new Date(since).toISOString().slice(11, 19);
  return `member ${memberId}${where} since ${at} UTC (${((now - since) / 1000).toFixed(1)}s ago)`;
}

/**
 * `held by member ...; member ...` for a lock or semaphore, `led by member ...` for an
 * election; empty when the snapshot shows nobody (it freed meanwhile) or cannot be taken.
 */
export async function whoHolds(
  coord: Coordinator,
  kind: "locks" | "semaphores" | "elections",
  name: string,
): Promise<string> {
  try {
    const info = await coord.inspect();
    if (kind === "elections") {
      const leader = info.elections.find((e) => e.id === name)?.leader;
      return leader ? `led by ${describeHolder(leader.memberId, leader.since, info.at)}` : "";
    }
    const holders = info[kind].find((l) => l.name === name)?.holders ?? [];
    if (holders.length === 0) return "";
    return `held by ${holders.map((h) => describeHolder(h.memberId, h.since, info.at)).join("; ")}`;
  } catch {
    return "";
  }
}
