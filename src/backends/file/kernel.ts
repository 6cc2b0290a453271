import { readSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { hash53 } from "../../core/hash.js";

interface NativeLocks {
  tryLock(fd: number, offset: number, length: number, options: { shared?: boolean }): boolean;
  unlock(fd: number, offset: number, length: number): void;
}

// fs-native-extensions is CommonJS with a prebuilt addon; it is only loaded with this backend.
const native = createRequire(import.meta.url)("fs-native-extensions") as NativeLocks;

/**
 * Linux open-file-description locks (`F_OFD_SETLK`) through fs-native-extensions. They
 * belong to an open file description, not a process, so every session opens its own
 * descriptor; the kernel drops them when that descriptor closes, including when the process
 * dies. Only the non-blocking calls are used: a blocking wait would pin a libuv thread.
 */
export const kernel = {
  /** Takes or converts a lock on `[offset, offset + length)`; false if another holder conflicts. */
  tryLock(fd: number, offset: number, shared: boolean, length = 1): boolean {
    return native.tryLock(fd, offset, length, { shared });
  },
  unlock(fd: number, offset: number, length = 1): void {
    native.unlock(fd, offset, length);
  },
};

/** Offsets below this are reserved (offset 0: the token counter's mutex). */
const RESERVED = 16;
/** Offsets stay below 2^53 (exact in a JS number); two bytes per name (lock + upgrade intent). */
const SLOTS = 2 ** 51;

/**
 * The byte a name locks. 51 bits of cyrb53: two names held at the same moment share a byte
 * with probability about n^2 / 2^52 for n names held at once (2e-8 for 10,000), and sharing
 * only makes one wait for the other; it never lets two holders in.
 */
export function slotOf(key: string): number {
  return RESERVED + 2 * (hash53(key) % SLOTS);
}

/** Semaphore limit marks: 2^20 offsets per semaphore, one per possible limit. */
export function limitBase(key: string): number {
  return (hash53(key, 7) % 2 ** 33) * 2 ** 20;
}

/**
 * Takes the next fencing token: one counter for the whole directory (like etcd's revision),
 * so it strictly increases per name across processes, crashes and restarts. The counter is
 * seeded from the clock so that tokens keep increasing even if the directory lives on a
 * tmpfs that a reboot emptied. The read-modify-write runs under a byte lock held for a few
 * microseconds; contention is met by retrying, never by blocking a thread.
 */
export async function nextToken(lockFd: number, tokensFd: number): Promise<bigint> {
  let spins = 0;
  while (!kernel.tryLock(lockFd, 0, false)) {
    if (++spins % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  try {
    const buffer = Buffer.alloc(8);
    const read = readSync(tokensFd, buffer, 0, 8, 0);
    const stored = read === 8 ? buffer.readBigUInt64LE(0) : 0n;
    const floor = BigInt(Date.now()) * 1000n;
    const next = stored === 0n ? floor : stored + 1n;
    buffer.writeBigUInt64LE(next, 0);
    writeSync(tokensFd, buffer, 0, 8, 0);
    return next;
  } finally {
    kernel.unlock(lockFd, 0);
  }
}
