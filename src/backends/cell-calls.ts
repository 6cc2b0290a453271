/**
 * What `DriverCells` implementations share: each call wrapped so that a failure is
 * translated once, naming what was being done ("writing a cell"); and the takeover space
 * kept in a store of its own.
 *
 * @module
 */
import type { DriverCells } from "../core/driver.js";
import { TAKEOVER_SPACE } from "../core/takeover.js";

/** Makes `guarded(what, fn)`: `fn`, with any rejection passed through `translate`. */
export function cellGuard(translate: (error: unknown, what: string) => Error) {
  return <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args);
      } catch (error) {
        throw translate(error, `${what} a cell`);
      }
    };
}

/** Cells whose takeover space is `records` and every other space `user`. */
export function takeoverApart(user: DriverCells, records: DriverCells): DriverCells {
  const of = (space: string) => (space === TAKEOVER_SPACE ? records : user);
  return {
    get: (space, key) => of(space).get(space, key),
    put: (space, key, value, condition) => of(space).put(space, key, value, condition),
    delete: (space, key, condition) => of(space).delete(space, key, condition),
    list: (space) => of(space).list(space),
    watch: (space, key, listener, signal) => of(space).watch(space, key, listener, signal),
  };
}
