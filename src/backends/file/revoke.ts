/**
 * Why the file backend answers a revoke with a refusal, and whom it names.
 *
 * @module
 * @internal
 */
import { hostname } from "node:os";
import type { QueueSnapshot } from "../../core/driver.js";
import { CannotRevokeError } from "../../core/errors.js";
import { holdsPeerSocket, processStartTime } from "./identity.js";
import { BACKEND } from "./definition.js";

/**
 * The file backend cannot take a lock from a live holder: the kernel frees an OFD lock only
 * when its holder closes it or dies. The refusal names the holding process (the session id
 * is `<pid>-<random>.<n>`: its mesh peer id, then a counter; see mesh.ts, node.ts), on
 * this host since the directory is local. Its start time is given only when that pid is
 * verified to be the holder (it holds the peer's mesh socket), so `--kill` can check,
 * right before signalling, that the pid was not reused.
 */
export function cannotRevoke(sessionId: string, snapshot: { queues: readonly QueueSnapshot[] }): CannotRevokeError {
  const pid = Number.parseInt(sessionId, 10);
  const memberId =
    snapshot.queues.flatMap((q) => q.holders).find((h) => h.sessionId === sessionId)?.memberId ?? "(unknown)";
  const host = hostname();
  const known = Number.isSafeInteger(pid) && pid > 0;
  const peerId = sessionId.slice(0, sessionId.lastIndexOf("."));
  const startTime = known && holdsPeerSocket(pid, peerId) ? processStartTime(pid) : null;
  return new CannotRevokeError(
    `the file backend cannot revoke a live holder: only the death of process ${pid} on ${host} (member ${memberId}) frees its kernel lock; end that process (baton unlock --kill SIGKILLs it)`,
    [{ memberId, sessionId, pid: known ? pid : undefined, host, ...(startTime === null ? {} : { startTime }) }],
    { backend: BACKEND },
  );
}
