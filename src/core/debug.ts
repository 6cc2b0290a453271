/**
 * Baton's one debug log: `NODE_DEBUG=baton node app.js` prints, on stderr, each grant,
 * wait, wake-up, retry, session renewal and loss (see docs/observability.md). Off, a call
 * costs one boolean test. Node's `util.debuglog`, so it needs no dependency and follows
 * Node's own convention (`NODE_DEBUG=baton,net` combines with other sections).
 *
 * @module
 * @internal
 */
import { debuglog } from "node:util";

/** Writes a `util.format`-style line to stderr when `NODE_DEBUG` names `baton`. */
export const debug: (message: string, ...args: unknown[]) => void = debuglog("baton");

/** Whether the debug log is on (to skip building costly messages). */
export const debugEnabled = (): boolean => debuglog("baton").enabled;
