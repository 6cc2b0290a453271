/**
 * The kernel byte locks of one file-backend session, and how the granting rule
 * (`src/core/grant-rule.ts`) is applied with them: a lock slot taken shared or exclusive
 * with one non-blocking call, a semaphore's permit slots, the writer-intent byte (readers
 * do not overtake a waiting writer), the upgrade-intent byte (a second upgrader is
 * refused) and the semaphore limit marks (every user of a semaphore gives one limit).
 * driver.ts decides when to try; this file knows which bytes a try takes.
 *
 * @module
 */
import { closeSync } from "node:fs";
import { sleep } from "../../core/abortable.js";
import type { LockMode } from "../../core/driver.js";
import { InvalidArgumentError } from "../../core/errors.js";
import { FILES, lockFileName, openFile } from "./directory.js";
import { kernel, LockFiles, UPGRADE_INTENT, WRITER_INTENT } from "./kernel.js";
import type { FileNode } from "./node.js";
import { BACKEND } from "./definition.js";

/** Semaphore limits are marked at offsets below this (one range per name). */
export const LIMIT_SPAN = 2 ** 20;

/** What the session holds of a slot: the mode, and how many of its grants share it. */
interface Held {
  mode: LockMode;
  count: number;
}

/** One session's byte locks; see the module comment. */
export class SlotLocks {
  /**
   * The session's own open file descriptions: the kernel tells sessions apart by them and
   * drops all of a session's locks when they are closed.
   */
  readonly locks: LockFiles;
  readonly #semFd: number;
  readonly #node: FileNode;
  readonly #closed: () => boolean;
  readonly held = new Map<number, Held>();
  /** Slots with an upgrade under way in this session. */
  readonly upgrading = new Set<number>();
  /** Slots whose writer-intent byte this session holds, with how many waiters/grants claim it. */
  readonly #writerIntents = new Map<number, number>();
  readonly #limitMarks = new Map<number, number>();

  /** `closed` tells whether the session is closed (its descriptors then are too). */
  constructor(node: FileNode, closed: () => boolean) {
    this.#node = node;
    this.#closed = closed;
    this.locks = new LockFiles((shard) => openFile(node.directory, lockFileName(shard)));
    this.#semFd = openFile(node.directory, FILES.semaphores);
  }

  /** One grant of `slot` ends; the last one unlocks it. */
  letGo(slot: number): void {
    const held = this.held.get(slot);
    if (held && --held.count === 0) {
      this.held.delete(slot);
      this.locks.unlock(slot);
    }
  }

  /**
   * Closing the descriptors drops every kernel lock of the session at once.
   * @returns the slots that were held, for waking their waiters.
   */
  close(): number[] {
    this.locks.close();
    closeSync(this.#semFd);
    const slots = [...this.held.keys()];
    this.held.clear();
    this.#writerIntents.clear();
    return slots;
  }

  /** Takes a lock slot in `mode` with one non-blocking kernel call. */
  tryLock(slot: number, mode: LockMode): boolean {
    const held = this.held.get(slot);
    if (held) {
      // Our own descriptor would "succeed" again: the session arbitrates its own handles.
      if (mode === "shared" && held.mode === "shared" && !this.upgrading.has(slot)) {
        held.count++;
        return true;
      }
      return false;
    }
    if (mode === "shared" && this.#intentPresent(slot)) return false;
    if (!this.locks.tryLock(slot, mode === "shared")) return false;
    this.held.set(slot, { mode, count: 1 });
    return true;
  }

  /** Takes any free permit slot of a semaphore. */
  tryPermit(slots: readonly number[]): number {
    for (const slot of slots) {
      if (this.held.has(slot)) continue;
      if (this.locks.tryLock(slot, false)) {
        this.held.set(slot, { mode: "exclusive", count: 1 });
        return slot;
      }
    }
    return -1;
  }

  /**
   * Whether some session is upgrading or a writer waits (holds the upgrade- or the
   * writer-intent byte exclusively): one shared probe of both bytes tells.
   */
  #intentPresent(slot: number): boolean {
    if (!this.#node.probes.tryLock(slot + UPGRADE_INTENT, true, 2)) return true;
    this.#node.probes.unlock(slot + UPGRADE_INTENT, 2);
    return false;
  }

  /**
   * Claims the slot's writer intent for one waiting writer of this session; false if a
   * writer of another session has it (that one is ahead; this one claims it later). A
   * reader's shared probe may hold the byte for a few microseconds: retry a little.
   */
  claimWriterIntent(slot: number): boolean {
    const count = this.#writerIntents.get(slot);
    if (count !== undefined) {
      this.#writerIntents.set(slot, count + 1);
      return true;
    }
    for (let i = 0; i < 100; i++) {
      if (this.locks.tryLock(slot + WRITER_INTENT, false)) {
        this.#writerIntents.set(slot, 1);
        return true;
      }
      if (!this.locks.tryLock(slot + WRITER_INTENT, true)) return false;
      this.locks.unlock(slot + WRITER_INTENT);
    }
    return false;
  }

  /**
   * Drops one claim; the last one frees the byte. A writer that gave up waiting (`wake`)
   * wakes the readers it held back, who would otherwise wait for the next release.
   */
  dropWriterIntent(slot: number, wake: boolean): void {
    const count = (this.#writerIntents.get(slot) ?? 1) - 1;
    if (count > 0) {
      this.#writerIntents.set(slot, count);
      return;
    }
    this.#writerIntents.delete(slot);
    if (this.#closed()) return;
    this.locks.unlock(slot + WRITER_INTENT);
    if (wake) this.#node.freed(slot);
  }

  /**
   * Takes the upgrade intent byte. A shared probe (a reader checking for an upgrade) may
   * hold it for a few microseconds; only an exclusive holder means a concurrent upgrade.
   */
  takeIntent(intent: number): boolean {
    for (let i = 0; i < 1000; i++) {
      if (this.locks.tryLock(intent, false)) return true;
      if (!this.locks.tryLock(intent, true)) return false;
      this.locks.unlock(intent);
    }
    return false;
  }

  /**
   * Refuses a limit other than the one current holders use: holders keep a shared lock on
   * `base + limit`, so an exclusive probe of every other offset fails if one differs.
   */
  async checkLimit(base: number, limit: number, name: string): Promise<void> {
    const fd = this.#node.probeSemFd;
    const span = LIMIT_SPAN - limit - 1;
    // Another process's probe holds these ranges for a few microseconds too: only a
    // conflict that persists over several tries is a holder's mark at another limit.
    for (let attempt = 0; attempt < 20; attempt++) {
      const below = kernel.tryLock(fd, base, false, limit);
      if (below) kernel.unlock(fd, base, limit);
      const above = kernel.tryLock(fd, base + limit + 1, false, span);
      if (above) kernel.unlock(fd, base + limit + 1, span);
      if (below && above) return;
      await sleep(attempt < 5 ? 0 : 1);
    }
    throw new InvalidArgumentError(
      `semaphore "${name}" is in use with another limit than ${limit}; every user of one semaphore must give the same limit`,
      { backend: BACKEND },
    );
  }

  /** One more grant of the semaphore at `base` uses `limit`: a shared mark at `base + limit` says so. */
  markLimit(base: number, limit: number): void {
    const count = this.#limitMarks.get(base + limit) ?? 0;
    if (count === 0) kernel.tryLock(this.#semFd, base + limit, true);
    this.#limitMarks.set(base + limit, count + 1);
  }

  /** One grant fewer uses `limit`; the last one removes the mark. */
  unmarkLimit(base: number, limit: number): void {
    const count = (this.#limitMarks.get(base + limit) ?? 1) - 1;
    if (count > 0) this.#limitMarks.set(base + limit, count);
    else {
      this.#limitMarks.delete(base + limit);
      kernel.unlock(this.#semFd, base + limit);
    }
  }
}
