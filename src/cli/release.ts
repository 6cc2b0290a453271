/**
 * Ending a hold without waiting on a backend that cannot answer: once the command has
 * ended there is nothing left to protect, and a lease-based backend frees what this process
 * held when the lease runs out anyway. So `baton` waits a bounded time for the release
 * and the session's close, reports what it could not confirm, and exits.
 *
 * @module
 */

/** How long, in all, `baton` waits for the release and the close once the command ended. */
export const RELEASE_WAIT_MS = 1000;

/**
 * Resolves `null` if `work` settled successfully before `deadline`, else why not. A
 * release result of `{ status: "unconfirmed" }` counts as not confirmed.
 */
async function settleBy(deadline: number, work: () => Promise<unknown>): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const left = Math.max(0, deadline - Date.now());
  try {
    return await Promise.race([
      work().then(
        (result) => {
          const { status, error } = (result ?? {}) as { status?: unknown; error?: unknown };
          if (status !== "unconfirmed") return null;
          return error instanceof Error ? error.message : "the backend could not be reached";
        },
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      ),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve(`no answer within ${RELEASE_WAIT_MS / 1000}s`), left);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Releases with `release`, then closes with `close`, both within {@link RELEASE_WAIT_MS}.
 * Returns true if both were confirmed; otherwise writes one line to stderr saying what
 * was not confirmed and why, and returns false: the caller should exit without waiting
 * for the pending calls.
 */
export async function releaseWithin(
  label: string,
  release: () => Promise<unknown>,
  close: () => Promise<unknown>,
): Promise<boolean> {
  const deadline = Date.now() + RELEASE_WAIT_MS;
  const released = await settleBy(deadline, release);
  if (released !== null) {
    process.stderr.write(
      `baton: the release of ${label} was not confirmed (${released}); the backend frees it when this session's lease ends\n`,
    );
    return false;
  }
  return closeWithin(close, deadline);
}

/**
 * Closes with `close` by `deadline` (default: {@link RELEASE_WAIT_MS} from now). Returns
 * true if confirmed; otherwise says so on stderr and returns false, like
 * {@link releaseWithin}.
 */
export async function closeWithin(
  close: () => Promise<unknown>,
  deadline = Date.now() + RELEASE_WAIT_MS,
): Promise<boolean> {
  const closed = await settleBy(deadline, close);
  if (closed === null) return true;
  process.stderr.write(
    `baton: the session was not closed cleanly (${closed}); the backend ends it when its lease runs out\n`,
  );
  return false;
}
