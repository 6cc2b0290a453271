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

const log = debuglog("baton");

/** Writes a `util.format`-style line to stderr when `NODE_DEBUG` names `baton`. */
export const debug: (message: string, ...args: unknown[]) => void = log;

/**
 * Whether the debug log is on, read once (`NODE_DEBUG` is read at startup): callers test it
 * before building a message's arguments on the acquisition path.
 */
export const DEBUG: boolean = log.enabled;
