/**
 * Test hooks for fault tests. Not for production code.
 *
 * @module
 */
import type { Coordinator } from "./core/coordinator.js";
import { SessionExpiredError } from "./core/errors.js";

/**
 * Stops renewing the coordinator's current session, as if it were cut off from the
 * backend: its local deadline then fires (aborting every handle's signal) and, a margin
 * later, the backend expires the lease. Resolves with the session id.
 */
export async function suspendKeepAlive(coordinator: Coordinator): Promise<string> {
  const session = await coordinator._core.liveSession();
  session.suspendKeepAlive();
  return session.id;
}

export { MemoryStore, memoryStore } from "./backends/memory/store.js";

/**
 * Ends the coordinator's current session as if it had been lost (for backends whose
 * sessions end only with a process or connection): signals fire first, then the backend
 * frees what the session held.
 */
export async function expireSession(coordinator: Coordinator): Promise<string> {
  const session = await coordinator._core.liveSession();
  session.lose(new SessionExpiredError(`session ${session.id} was expired by a test`));
  return session.id;
}
