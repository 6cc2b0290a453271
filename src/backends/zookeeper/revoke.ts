/**
 * Revoke on ZooKeeper. No client may end another's session, so it goes in two steps.
 * `fenceNodes` (`Driver.fenceSession`) creates the session's revoke marker, which the
 * session watches (session.ts): its client learns the loss at once and closes its session,
 * which frees its nodes; a client that cannot hear the server reaches its own deadline.
 * After the core's wait, `revokeNodes` (`Driver.revokeSession`) deletes every node that
 * session still owns in the namespace (queue nodes, held or waiting, and records), then
 * the marker.
 *
 * @module
 * @internal
 */
import { FLAGS, type ZkHandle } from "./client.js";
import { hasCode, RC } from "./errors.js";
import type { Layout } from "./paths.js";
import { ensurePath, retrying } from "./scope.js";

/**
 * Creates the revoke marker of `sessionId` and replies `boundMs`: the session timeout
 * holders of this namespace are configured with (a client sees the marker's watch event
 * before the answer to any request the server handles after it, so one that has not seen it
 * has had no answer to a later request, and its deadline passes within its timeout).
 */
export async function fenceNodes(
  handle: ZkHandle,
  layout: Layout,
  chroot: string,
  sessionId: string,
  boundMs: number,
  stop: AbortSignal,
): Promise<number> {
  const path = layout.revoked(sessionId);
  await ensurePath(handle, chroot, layout.revokes, stop);
  await retrying(
    handle,
    `revoking session ${sessionId}`,
    async () => {
      try {
        await handle.create(path, "", FLAGS.persistent);
      } catch (error) {
        if (!hasCode(error, RC.NODEEXISTS)) throw error;
      }
    },
    stop,
  );
  return boundMs;
}

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
    for (const child of await list(parent)) await deleteOwned(handle, `${parent}/${child}`, sessionId, stop);
  }
  await retrying(handle, "removing the revoke marker", () => handle.delete(layout.revoked(sessionId)), stop);
}

/**
 * Deletes `path` if `sessionId` owns it. The delete names the version read, so it never
 * takes a node of another session that got the same name after a queue's parent was
 * removed and made again; a write in between (a waiter writes its own node while it waits,
 * handoff.ts) makes it read again instead of failing the revoke.
 */
async function deleteOwned(handle: ZkHandle, path: string, sessionId: string, stop: AbortSignal): Promise<void> {
  for (;;) {
    const read = await retrying(handle, "revoking", () => handle.get(path), stop);
    if (read?.stat.ephemeralOwner !== sessionId) return;
    try {
      await retrying(handle, `revoking ${path}`, () => handle.delete(path, read.stat.version), stop);
      return;
    } catch (error) {
      if (!hasCode((error as { cause?: unknown }).cause, RC.BADVERSION)) throw error;
    }
  }
}
