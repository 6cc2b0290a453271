/**
 * Revoke on ZooKeeper (`Driver.revokeSession`): no client may end another's session, so
 * the revoke deletes every node that session owns in the namespace (queue nodes, held or
 * waiting, and records). The holder's guard watch on its granted node reports the loss at
 * once (acquire.ts `guard`); a waiter finds its node missing; the session itself lives on.
 *
 * @module
 * @internal
 */
import type { ZkHandle } from "./client.js";
import type { Layout } from "./paths.js";
import { retrying } from "./scope.js";

/** Deletes the nodes of `sessionId` (ZooKeeper's ephemeral owner, as `inspect()` shows it). */
export async function revokeNodes(handle: ZkHandle, layout: Layout, sessionId: string, stop: AbortSignal) {
  const list = async (path: string) =>
    (await retrying(handle, "revoking", () => handle.children(path), stop))?.children ?? [];
  const parents: string[] = [];
  for (const kind of await list(layout.queues)) {
    for (const name of await list(`${layout.queues}/${kind}`)) parents.push(`${layout.queues}/${kind}/${name}`);
  }
  for (const space of await list(layout.records)) parents.push(`${layout.records}/${space}`);
  for (const parent of parents) {
    for (const child of await list(parent)) {
      const path = `${parent}/${child}`;
      const read = await retrying(handle, "revoking", () => handle.get(path), stop);
      if (read?.stat.ephemeralOwner !== sessionId) continue;
      await retrying(handle, `revoking ${path}`, () => handle.delete(path, read.stat.version), stop);
    }
  }
}
