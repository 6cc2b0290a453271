/**
 * `baton elect NAME --listen`: print each change of leader (as `etcdctl elect -l` does)
 * until SIGINT or SIGTERM, without campaigning.
 *
 * @module
 */
import type { Coordinator } from "../core/coordinator.js";
import type { Leader } from "../core/election.js";
import { memberDetails } from "../status/member.js";

/** One line for a leader: `leader MEMBER (pid P on H) token T value V`, or `no leader`. */
export function leaderLine(leader: Leader | null): string {
  if (!leader) return "no leader";
  const details = memberDetails(leader.memberId);
  const where = details ? ` (pid ${details.pid} on ${details.host})` : "";
  return `leader ${leader.memberId}${where} token ${leader.token} value ${JSON.stringify(leader.value)}`;
}

/**
 * Prints the current leader, then every change, one line each on stdout, until a signal.
 * Resolves 0 after a signal; rejects with the backend's error if observing fails.
 */
export async function listen(coord: Coordinator, election: string): Promise<number> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, onSignal);
  try {
    let last: string | null = null;
    for await (const leader of coord.election(election).observe({ signal: stop.signal })) {
      const line = leaderLine(leader);
      // A proclaim with the same value, or a repeat after a reconnect, is no change.
      if (line !== last) process.stdout.write(`${line}\n`);
      last = line;
    }
    return 0;
  } catch (error) {
    if (stop.signal.aborted) return 0;
    throw error;
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}
