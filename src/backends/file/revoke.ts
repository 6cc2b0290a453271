/**
 * Why the file backend answers a revoke with a refusal, and whom it names.
 *
 * @module
 * @internal
 */
import { hostname } from "node:os";
import type { QueueSnapshot } from "../../core/driver.js";
import { CannotRevokeError } from "../../core/errors.js";

/**
 * The file backend cannot take a lock from a live holder: the kernel frees an OFD lock only
 * when its holder closes it or dies. The refusal names the holding process (the session id
 * begins with its pid, see mesh.ts), which is on this host: the directory is local.
 */
export function cannotRevoke(sessionId: string, snapshot: { queues: readonly QueueSnapshot[] }): CannotRevokeError {
  const pid = Number.parseInt(sessionId, 10);
  const memberId =
    snapshot.queues.flatMap((q) => q.holders).find((h) => h.sessionId === sessionId)?.memberId ?? "(unknown)";
  const host = hostname();
  return new CannotRevokeError(
    `the file backend cannot revoke a live holder: only the death of process ${pid} on ${host} (member ${memberId}) frees its kernel lock; end that process (baton unlock --kill signals it)`,
    [{ memberId, sessionId, pid: Number.isSafeInteger(pid) ? pid : undefined, host }],
    { backend: "file" },
  );
}
