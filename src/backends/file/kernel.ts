import { closeSync, readSync, writeSync } from "node:fs";
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

/**
 * Lock files the names are spread over. The kernel keeps an inode's byte-range locks in
 * one list and walks it on every lock call, so a single file would make each call cost
 * O(names held); 64 files keep the lists short (about 1,600 entries at 100,000 names held)
 * while the number of files stays constant.
 */
export const SHARDS = 64;
const SHARD_SPAN = 2 ** 47;

/**
 * The lock of a name: `shard * 2^47 + offset`, one number (exact below 2^53). The byte at
 * `offset` is the lock, `offset + 1` ({@link UPGRADE_INTENT}) marks an upgrade in progress,
 * `offset + 2` ({@link WRITER_INTENT}) a writer waiting or holding; the fourth byte is
 * unused. From 51 bits of cyrb53, so two names held at the same moment share a slot with
 * probability about n^2 / 2^52 for n names held at once (2e-8 for 10,000); sharing only
 * makes one wait for the other, it never lets two holders in.
 */
export function slotOf(key: string): number {
  const h = hash53(key);
  return (h % SHARDS) * SHARD_SPAN + 4 * (Math.floor(h / SHARDS) % 2 ** 45);
}

/** Offset from a slot of its upgrade-intent byte (held exclusively by the one upgrader). */
export const UPGRADE_INTENT = 1;
/** Offset from a slot of its writer-intent byte (held exclusively by one waiting writer). */
export const WRITER_INTENT = 2;

/** The shard (lock file index) of a slot. */
export function shardOf(slot: number): number {
  return Math.floor(slot / SHARD_SPAN);
}

/** The byte offset of a slot in its shard. */
export function offsetOf(slot: number): number {
  return slot % SHARD_SPAN;
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
export async function nextToken(tokensFd: number): Promise<bigint> {
  for (;;) {
    const token = tokenNow(tokensFd);
    if (token !== null) return token;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

// Only used between a lock and an unlock of the counter, with no await in between.
const counter = Buffer.alloc(8);

/**
 * The counter's mutex: a lock on the counter's own bytes, on a file no other lock lives in.
 * The takeover records (record-slots.ts) are written under it too, so that a tracked grant
 * takes its token and writes its record in one critical section. Not re-entrant: a holder
 * that locked it again on the same descriptor would unlock it with its inner unlock.
 */
export const counterMutex = {
  tryLock: (tokensFd: number, shared: boolean): boolean => kernel.tryLock(tokensFd, 0, shared, 8),
  unlock: (tokensFd: number): void => kernel.unlock(tokensFd, 0, 8),
};

/**
 * {@link nextToken} without yielding: `null` when the counter's mutex stayed taken over
 * `tries` attempts (another process is in its few microseconds, or was stopped there).
 * `held` runs with the new token while the mutex is still held (its record's write).
 */
export function tokenNow(tokensFd: number, tries = 64, held?: (token: bigint) => void): bigint | null {
  for (let i = 0; i < tries; i++) {
    if (!counterMutex.tryLock(tokensFd, false)) continue;
    try {
      const read = readSync(tokensFd, counter, 0, 8, 0);
      const stored = read === 8 ? counter.readBigUInt64LE(0) : 0n;
      const floor = BigInt(Date.now()) * 1000n;
      const next = stored === 0n ? floor : stored + 1n;
      counter.writeBigUInt64LE(next, 0);
      writeSync(tokensFd, counter, 0, 8, 0);
      held?.(next);
      return next;
    } finally {
      counterMutex.unlock(tokensFd);
    }
  }
  return null;
}

/**
 * One open file description per lock file, opened on first use: what a session (or the
 * process's probes) locks with. Closing it drops every lock it holds.
 */
export class LockFiles {
  readonly #fds: (number | undefined)[] = [];
  readonly #open: (shard: number) => number;

  constructor(open: (shard: number) => number) {
    this.#open = open;
  }

  tryLock(slot: number, shared: boolean, length = 1): boolean {
    return kernel.tryLock(this.#fd(shardOf(slot)), offsetOf(slot), shared, length);
  }

  unlock(slot: number, length = 1): void {
    kernel.unlock(this.#fd(shardOf(slot)), offsetOf(slot), length);
  }

  close(): void {
    for (const fd of this.#fds) if (fd !== undefined) closeSync(fd);
    this.#fds.length = 0;
  }

  #fd(shard: number): number {
    let fd = this.#fds[shard];
    if (fd === undefined) this.#fds[shard] = fd = this.#open(shard);
    return fd;
  }
}
