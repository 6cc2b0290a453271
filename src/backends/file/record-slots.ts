/**
 * Takeover records on the file backend (src/core/takeover.ts), the cells of the space
 * `takeover`: written with every exclusive grant and deleted with every clean release, so
 * they must cost as few system calls as can be. They live in fixed binary slots of one
 * sparse file, `takeover.slots`: a record's key hashes to one of {@link BUCKETS} buckets of
 * one page, each a header and {@link SLOTS} slots of {@link SLOT} bytes (state, lengths,
 * the slot's write count, the fence, then the key and the value inline), after the pages
 * of a bit per bucket ever used (for list()). No JSON, no parse:
 *
 * - A write holds the mutex of the fencing-token counter (kernel.ts: an OFD lock, freed if
 *   the writer dies), so a tracked grant takes its token and writes its record in one
 *   critical section; it reads the bucket's page and writes the one slot it changes with
 *   one `pwrite` (a slot never crosses a page, so a writer's death leaves the old or the
 *   new slot). It writes only its own slot, never the page, so that the lock-free release
 *   below is never undone by a writer of another key of the bucket.
 * - A clean release deletes its record with one `pwrite` of the slot's state byte, with no
 *   lock: its holder is the only writer of a live record's slot while it holds the lock
 *   (every other write of that key is by a successor, who cannot exist yet, or is refused
 *   by the record's version or fence), other keys' writers only take free slots, and
 *   readers see the byte before or after.
 * - A record too large for a slot, or whose bucket is full, goes to the overflow store
 *   (records.ts: JSON regions, a few microseconds more); the bucket header counts them, so
 *   a bucket with none never reads the overflow. A key found in both (a death while a
 *   record moved from its slot to the overflow) is the overflow's: moves only go that way.
 *
 * Versions are unique per key across both stores: a slot's is odd and names the slot
 * (`(count * 8 + slot) * 2 + 1`), the overflow's even. Nothing is fsynced: a record
 * survives its holder's death (the page cache is the kernel's), not a crash of the host,
 * which ends every holder of this directory anyway. Reads take the mutex shared.
 *
 * @module
 * @internal
 */
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { hash53 } from "../../core/hash.js";
import { FILES, type Directory } from "./directory.js";
import { counterMutex } from "./kernel.js";
import { overflowRecords, pollWatch, type WriteNow } from "./records.js";

/**
 * Buckets of the slots file: a key's bucket is its hash modulo this (512 MiB, sparse: only
 * buckets ever used take disk). 917,504 slots, so about 800,000 locks held at once before
 * the overflow store (about 200,000 more) takes the rest; 16,384 buckets failed the scale
 * bench at 232,077 held locks.
 */
export const BUCKETS = 131072;
/** Bytes of a bucket: one page, so no slot crosses a page. */
const BUCKET = 4096;
/** Bytes of a slot (the first slot's place is the bucket header). */
const SLOT = 512;
/** Slots of a bucket. */
export const SLOTS = BUCKET / SLOT - 1;
/** Slot bytes before the key and the value. */
const SLOT_HEAD = 32;
/** Key and value bytes a slot holds. */
const CAPACITY = SLOT - SLOT_HEAD;
/**
 * A new record goes to a slot only with this much room to spare, so that the lock delay's
 * deadline added to it later (`"u":...`) stays in its slot.
 */
const CREATE_CAPACITY = CAPACITY - 40;
/** The state byte of a live slot (anything else is free: garbage after a host crash too). */
const LIVE = 0x5a;
/** Header: the count of this bucket's records in the overflow store (u32 at byte 8). */
const OVERFLOW_AT = 8;
const SEP = "\u0000";
const TRIES = 64;
/**
 * Bytes before the first bucket: a bit per bucket that ever held a slot's record, so that
 * list() reads those buckets only, not the whole (mostly sparse) file.
 */
const USED_MAP = BUCKETS / 8;

/** What a clean release calls: deletes the record at `version`; `false` when its bucket stayed busy. */
export type ReleaseNow = (key: string, version: bigint) => boolean;

/** Offset in its bucket of slot `slot`. */
function slotOffset(slot: number): number {
  return (slot + 1) * SLOT;
}

/** A slot's version: odd, unique per key, and naming its slot (for the lock-free release). */
function slotVersion(count: bigint, slot: number): bigint {
  return ((count * BigInt(SLOTS + 1) + BigInt(slot)) << 1n) | 1n;
}

/** Where a key's record is: a slot of its bucket, the overflow store, or both (a torn move). */
interface Found {
  readonly slot: number;
  readonly count: bigint;
  readonly fence: bigint;
  readonly value: string | null;
  readonly overflow: CellEntry | null;
}

/**
 * The takeover records of one namespace: `writeNow` takes the mutex of the fencing-token
 * counter in `mutexFd` (kernel.ts), `writeHeld` is for a caller already holding it (a
 * grant, in its token's critical section), `releaseNow` for clean releases.
 */
export function takeoverRecords(
  directory: Directory,
  namespace: string,
  space: string,
  mutexFd: number,
): DriverCells & { writeNow: WriteNow; writeHeld: WriteNow; releaseNow: ReleaseNow; close(): void } {
  const fd = openSync(join(directory.path, FILES.takeoverSlots), constants.O_RDWR | constants.O_CREAT, 0o600);
  const overflow = overflowRecords(directory, namespace, space);
  const page = Buffer.alloc(BUCKET);
  const slotBytes = Buffer.alloc(SLOT);
  const freeByte = Buffer.alloc(1);
  const id = (key: string) => `${namespace}${SEP}${space}${SEP}${key}`;
  const bucketOf = (cellId: string) => hash53(cellId) % BUCKETS;
  const bucketAt = (bucket: number) => USED_MAP + bucket * BUCKET;
  const slotAt = (bucket: number, slot: number) => bucketAt(bucket) + slotOffset(slot);
  // Buckets known to be marked used (a mark is never cleared), so a mark costs I/O once.
  const known = new Uint8Array(BUCKETS / 8);
  const usedByte = Buffer.alloc(1);

  /** Marks a bucket used in the map list() reads; the caller holds the mutex. */
  const markUsed = (bucket: number) => {
    const at = bucket >> 3;
    const bit = 1 << (bucket & 7);
    if ((known[at] as number) & bit) return;
    if (readSync(fd, usedByte, 0, 1, at) < 1) usedByte[0] = 0;
    if (!((usedByte[0] as number) & bit)) {
      usedByte[0] = (usedByte[0] as number) | bit;
      writeSync(fd, usedByte, 0, 1, at);
    }
    known[at] = usedByte[0] as number;
  };

  const readPage = (bucket: number): void => {
    const read = readSync(fd, page, 0, BUCKET, bucketAt(bucket));
    page.fill(0, read);
  };

  /** The key's record in the page read last (and in the overflow if the bucket has any there). */
  const find = (key: string, name: Buffer): Found | undefined => {
    let slot = -1;
    let count = 0n;
    let fence = 0n;
    let value: string | null = null;
    for (let s = 0; s < SLOTS; s++) {
      const at = slotOffset(s);
      if (page[at] !== LIVE || page.readUInt16LE(at + 2) !== name.length) continue;
      if (name.compare(page, at + SLOT_HEAD, at + SLOT_HEAD + name.length) !== 0) continue;
      slot = s;
      count = page.readBigUInt64LE(at + 8);
      fence = page.readBigUInt64LE(at + 16);
      const start = at + SLOT_HEAD + name.length;
      value = page.toString("utf8", start, start + page.readUInt16LE(at + 4));
      break;
    }
    let stored: CellEntry | null = null;
    if (page.readUInt32LE(OVERFLOW_AT) > 0) {
      const read = overflow.readNow(key);
      if (read === undefined) return undefined;
      stored = read && read.value !== null ? { ...read, version: read.version * 2n } : null;
    }
    return { slot, count, fence, value, overflow: stored };
  };

  const entryOf = (key: string, found: Found): CellEntry | null => {
    if (found.overflow) return found.overflow;
    if (found.slot < 0) return null;
    return { key, value: found.value, version: slotVersion(found.count, found.slot), fence: found.fence };
  };

  const writeSlot = (bucket: number, slot: number, count: bigint, fence: bigint, name: Buffer, value: Buffer) => {
    markUsed(bucket);
    slotBytes[0] = LIVE;
    slotBytes.writeUInt16LE(name.length, 2);
    slotBytes.writeUInt16LE(value.length, 4);
    slotBytes.writeBigUInt64LE(count, 8);
    slotBytes.writeBigUInt64LE(fence, 16);
    name.copy(slotBytes, SLOT_HEAD);
    value.copy(slotBytes, SLOT_HEAD + name.length);
    writeSync(fd, slotBytes, 0, SLOT_HEAD + name.length + value.length, slotAt(bucket, slot));
  };

  const freeSlot = (bucket: number, slot: number) => writeSync(fd, freeByte, 0, 1, slotAt(bucket, slot));

  const addOverflow = (bucket: number, delta: number) => {
    const count = Math.max(0, page.readUInt32LE(OVERFLOW_AT) + delta);
    page.writeUInt32LE(count, OVERFLOW_AT);
    writeSync(fd, page, OVERFLOW_AT, 4, bucketAt(bucket) + OVERFLOW_AT);
  };

  /** A write to the overflow store (the condition was decided here, on both stores). */
  const toOverflow = (key: string, value: string | null, fence: bigint): CellWriteResult | null => {
    const result = overflow.writeNow(key, value, { fence });
    return result?.ok ? { ok: true, version: result.version * 2n } : result;
  };

  /** One read-check-write; the caller holds the bucket's lock. */
  const writeLocked = (bucket: number, key: string, value: string | null, condition: CellCondition) => {
    const name = Buffer.from(id(key), "utf8");
    readPage(bucket);
    const found = find(key, name);
    if (found === undefined) return null;
    const current = entryOf(key, found);
    const decision = decideCellWrite(current, condition, value === null);
    if (decision.action === "refuse") return { ok: false, reason: decision.reason, current } as const;
    if (decision.action === "noop") return { ok: true, version: 0n } as const;
    const { fence } = decision;
    if (found.overflow) {
      // Counted down only once it is gone: a death in between leaves the count high, which
      // costs an overflow read, never a record missed.
      const result = toOverflow(key, value, fence);
      if (result?.ok && value === null) addOverflow(bucket, -1);
      if (result?.ok && found.slot >= 0) freeSlot(bucket, found.slot);
      return result;
    }
    if (value === null) {
      const count = found.count + 1n;
      slotBytes[0] = 0;
      slotBytes.writeBigUInt64LE(count, 8);
      writeSync(fd, slotBytes, 0, 16, slotAt(bucket, found.slot));
      return { ok: true, version: slotVersion(count, found.slot) } as const;
    }
    const bytes = Buffer.from(value, "utf8");
    const room = found.slot >= 0 ? CAPACITY : CREATE_CAPACITY;
    const slot = found.slot >= 0 ? found.slot : freeSlotOf();
    if (slot >= 0 && name.length + bytes.length <= room) {
      const count = (found.slot >= 0 ? found.count : page.readBigUInt64LE(slotOffset(slot) + 8)) + 1n;
      writeSlot(bucket, slot, count, fence, name, bytes);
      return { ok: true, version: slotVersion(count, slot) } as const;
    }
    // Counted up first: a death before the overflow write leaves the count high (harmless).
    addOverflow(bucket, 1);
    const result = toOverflow(key, value, fence);
    // Moved out of its slot: the overflow's copy now wins, so the slot goes after it.
    if (result?.ok && found.slot >= 0) freeSlot(bucket, found.slot);
    return result;
  };

  const freeSlotOf = (): number => {
    for (let s = 0; s < SLOTS; s++) if (page[slotOffset(s)] !== LIVE) return s;
    return -1;
  };

  /** `run` under the bucket's lock; `null` when it stayed taken, or `run` found the overflow so. */
  const locked = <T>(shared: boolean, run: () => T | null): T | null => {
    for (let tries = 0; tries < TRIES; tries++) {
      if (!counterMutex.tryLock(mutexFd, shared)) continue;
      try {
        return run();
      } finally {
        counterMutex.unlock(mutexFd);
      }
    }
    return null;
  };

  const writeNow: WriteNow = (key, value, condition) => {
    const bucket = bucketOf(id(key));
    return locked(false, () => writeLocked(bucket, key, value, condition));
  };

  const writeHeld: WriteNow = (key, value, condition) => writeLocked(bucketOf(id(key)), key, value, condition);

  const releaseNow: ReleaseNow = (key, version) => {
    if (version % 2n === 0n) return writeNow(key, null, { ifVersion: version }) !== null;
    // A slot's live record is written only by its lock's holder (see the module comment).
    freeSlot(bucketOf(id(key)), Number((version >> 1n) % BigInt(SLOTS + 1)));
    return true;
  };

  const write = async (key: string, value: string | null, condition: CellCondition): Promise<CellWriteResult> => {
    for (;;) {
      const result = writeNow(key, value, condition);
      if (result) return result;
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  const get = async (key: string): Promise<CellEntry | null> => {
    const bucket = bucketOf(id(key));
    const name = Buffer.from(id(key), "utf8");
    for (;;) {
      const read = locked(true, () => {
        readPage(bucket);
        const found = find(key, name);
        return found === undefined ? null : { entry: entryOf(key, found) };
      });
      if (read) return read.entry;
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  /**
   * The live slots' records of this namespace: the buckets the used map marks, each read
   * under the mutex shared (a lock-free release may flip a slot's state meanwhile: its
   * record is listed or not).
   */
  const slotEntries = async (): Promise<CellEntry[]> => {
    const prefix = Buffer.from(id(""), "utf8");
    const map = Buffer.alloc(BUCKETS / 8);
    const bucketPage = Buffer.alloc(BUCKET);
    const readLocked = async (into: Buffer, at: number) => {
      let read: number | null = null;
      while ((read = locked(true, () => readSync(fd, into, 0, into.length, at))) === null) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      // The file ends where its last write did, maybe inside a slot.
      into.fill(0, read);
    };
    await readLocked(map, 0);
    const out: CellEntry[] = [];
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      if (!(((map[bucket >> 3] as number) >> (bucket & 7)) & 1)) continue;
      await readLocked(bucketPage, bucketAt(bucket));
      for (let slot = 0; slot < SLOTS; slot++) {
        const at = slotOffset(slot);
        if (bucketPage[at] !== LIVE) continue;
        const start = at + SLOT_HEAD;
        const length = bucketPage.readUInt16LE(at + 2);
        if (length < prefix.length || prefix.compare(bucketPage, start, start + prefix.length) !== 0) continue;
        out.push({
          key: bucketPage.toString("utf8", start + prefix.length, start + length),
          value: bucketPage.toString("utf8", start + length, start + length + bucketPage.readUInt16LE(at + 4)),
          version: slotVersion(bucketPage.readBigUInt64LE(at + 8), slot),
          fence: bucketPage.readBigUInt64LE(at + 16),
        });
      }
    }
    return out;
  };

  return {
    writeNow,
    writeHeld,
    releaseNow,
    close: () => {
      closeSync(fd);
      overflow.close();
    },
    get: (_space, key) => get(key),
    put: (_space, key, value, condition) => write(key, value, condition),
    delete: (_space, key, condition) => write(key, null, condition),
    async list(space) {
      const out = (await overflow.list(space)).map((e) => ({ ...e, version: e.version * 2n }));
      // The overflow's copy of a key wins (see the module comment).
      const keys = new Set(out.map((e) => e.key));
      for (const entry of await slotEntries()) if (!keys.has(entry.key)) out.push(entry);
      return out.sort((a, b) => (a.key < b.key ? -1 : 1));
    },
    watch: (_space, key, listener, signal) => pollWatch(get, key, listener, signal),
  };
}
