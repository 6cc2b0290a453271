/**
 * Test hooks for fault tests. Not for production code.
 *
 * @module
 */
import type { Coordinator } from "./core/coordinator.js";

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
