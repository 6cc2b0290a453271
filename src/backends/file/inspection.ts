import type { QueueKind, QueueSnapshot, RecordEntry } from "../../core/driver.js";
import type { LocalQueueState, SpaceEntries } from "./protocol.js";

/** What the processes of one directory hold, await and publish, merged into one view. */
export interface DirectoryInspection {
  readonly queues: QueueSnapshot[];
  readonly records: { space: string; entries: RecordEntry[] }[];
}

/**
 * Merges the answers of every process (this one's and each peer's) into queues and
 * record spaces: no process sees the whole picture, since each knows only what its own
 * sessions hold and wait for. Holders are ordered by token, waiters by when they came.
 */
export function mergeInspection(
  states: readonly LocalQueueState[],
  spaces: readonly SpaceEntries[],
): DirectoryInspection {
  const queues = new Map<
    string,
    {
      kind: QueueKind;
      name: string;
      limit: number;
      holders: QueueSnapshot["holders"][number][];
      waiters: QueueSnapshot["waiters"][number][];
    }
  >();
  for (const state of states) {
    const id = `${state.kind}\u0000${state.name}`;
    let queue = queues.get(id);
    if (!queue)
      queues.set(id, (queue = { kind: state.kind, name: state.name, limit: state.limit, holders: [], waiters: [] }));
    const who = { memberId: state.memberId, sessionId: state.sessionId, mode: state.mode, since: state.since };
    if (state.token !== undefined) queue.holders.push({ ...who, token: BigInt(state.token) });
    else queue.waiters.push(who);
  }
  for (const queue of queues.values()) {
    queue.holders.sort((a, b) => (a.token < b.token ? -1 : 1));
    queue.waiters.sort((a, b) => a.since - b.since);
  }
  const merged = new Map<string, RecordEntry[]>();
  for (const { space, entries } of spaces) merged.set(space, [...(merged.get(space) ?? []), ...entries]);
  return { queues: [...queues.values()], records: [...merged].map(([space, entries]) => ({ space, entries })) };
}

/** The part of a session the node needs to answer peers. */
export interface SessionView {
  readonly id: string;
  queueState(): LocalQueueState[];
}

/** What this process's sessions hold and await in `namespace`. */
export function localQueues(sessions: Iterable<SessionView>, namespace: string): LocalQueueState[] {
  return [...sessions].flatMap((s) => s.queueState()).filter((q) => q.namespace === namespace);
}

/** The namespaces this process has something live in: queues of its sessions, or records. */
export function localNamespaces(sessions: Iterable<SessionView>, spaces: Iterable<string>): string[] {
  const found = new Set<string>();
  for (const session of sessions) for (const q of session.queueState()) found.add(q.namespace);
  for (const space of spaces) found.add(space.slice(0, space.indexOf("\u0000")));
  return [...found];
}
