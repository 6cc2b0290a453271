/**
 * What every `DriverCells` that translates its client's errors shares: each call wrapped so
 * that a failure is translated once, naming what was being done ("writing a cell").
 *
 * @module
 */

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
