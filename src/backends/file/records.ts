/**
 * The overflow of the file backend's takeover records (record-slots.ts keeps the common
 * ones, in fixed binary slots): a record too large for a slot, or one whose slot bucket is
 * full, lives here, at a few more microseconds and a JSON parse per write. They live in
 * one sparse file, `takeover`, of {@link REGIONS} fixed regions; a record's key hashes to a
 * region, which holds a JSON document of its records (the cells' bucket format) in one of
 * two halves, and a header naming the live half and its length. A write takes the region's
 * byte lock (the header's first byte, an OFD lock: freed if the writer dies), writes the
 * new document into the other half and then flips the header: two `pwrite`s, the second 8
 * bytes inside one page, so a writer's death at any point leaves the old or the new
 * document, never a torn one. Nothing is fsynced: a record survives its holder's death
 * (the page cache is the kernel's), not a crash of the host, which ends every holder of
 * this directory anyway; a region that reads as garbage after one is taken as empty.
 * Reads take the region's lock shared. Nobody watches takeover records: a watch polls.
 *
 * @module
 * @internal
 */
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { BackendUnavailableError } from "../../core/errors.js";
import { hash53 } from "../../core/hash.js";
import { FILES, type Directory } from "./directory.js";
import { kernel } from "./kernel.js";
import { BACKEND } from "./definition.js";

/** Regions of the file: a record's region is its key's hash modulo this. */
export const REGIONS = 1024;
/** Bytes of one region: a 16-byte header and two halves. */
const REGION = 64 * 1024;
const HEADER = 16;
const HALF = (REGION - HEADER) / 2;
/** How often a watch reads its record again (nobody watches these; the contract asks for it). */
const WATCH_POLL_MS = 1000;
const SEP = "\u0000";

interface Stored {
  readonly v: string | null;
  readonly n: string;
  readonly f: string;
}
interface Region {
  next: string;
  cells: Record<string, Stored>;
}

/** A synchronous write of a lock holder: `null` when the region stayed locked. */
export type WriteNow = (key: string, value: string | null, condition: CellCondition) => CellWriteResult | null;

/** Overflow records of one namespace (record-slots.ts writes them, under its bucket lock). */
export function overflowRecords(
  directory: Directory,
  namespace: string,
  space: string,
): DriverCells & { writeNow: WriteNow; readNow(key: string): CellEntry | null | undefined; close(): void } {
  const path = join(directory.path, FILES.takeover);
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  const header = Buffer.alloc(HEADER);
  const id = (key: string) => `${namespace}${SEP}${space}${SEP}${key}`;
  const regionOf = (cellId: string) => hash53(cellId) % REGIONS;

  const load = (region: number): { data: Region; live: number } => {
    const base = region * REGION;
    const empty = { data: { next: "0", cells: {} }, live: 0 };
    if (readSync(fd, header, 0, HEADER, base) < 8) return empty;
    const live = header.readUInt32LE(0);
    const length = header.readUInt32LE(4);
    if (length === 0 || length > HALF || live > 1) return empty;
    const text = Buffer.alloc(length);
    readSync(fd, text, 0, length, base + HEADER + live * HALF);
    try {
      const data = JSON.parse(text.toString("utf8")) as Region;
      if (typeof data.next !== "string" || typeof data.cells !== "object" || data.cells === null) return empty;
      return { data, live };
    } catch {
      return empty;
    }
  };

  const save = (region: number, data: Region, live: number) => {
    const text = Buffer.from(JSON.stringify(data), "utf8");
    if (text.length > HALF) {
      throw new BackendUnavailableError(
        `the takeover records that hash to region ${region} of ${path} would exceed ${HALF} bytes: too many locks are held at once in this directory with large fence info or past the slots' capacity (about a million records; see record-slots.ts); release some, or use fewer, smaller fence info`,
        { backend: BACKEND },
      );
    }
    const base = region * REGION;
    const next = 1 - live;
    writeSync(fd, text, 0, text.length, base + HEADER + next * HALF);
    header.writeUInt32LE(next, 0);
    header.writeUInt32LE(text.length, 4);
    writeSync(fd, header, 0, 8, base);
  };

  const entryOf = (key: string, stored: Stored | undefined): CellEntry | null =>
    stored ? { key, value: stored.v, version: BigInt(stored.n), fence: BigInt(stored.f) } : null;

  /** One read-check-write; the caller holds the region's lock. */
  const writeLocked = (region: number, key: string, value: string | null, condition: CellCondition) => {
    try {
      const cellId = id(key);
      const { data, live } = load(region);
      const current = entryOf(key, data.cells[cellId]);
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current } as const;
      if (decision.action === "noop") return { ok: true, version: 0n } as const;
      const version = BigInt(data.next) + 1n;
      data.next = version.toString();
      // No tombstone: a record's writers are fenced by its lock, and a deleted record per
      // lock name ever used would only fill the region.
      if (value === null) delete data.cells[cellId];
      else data.cells[cellId] = { v: value, n: data.next, f: decision.fence.toString() };
      save(region, data, live);
      return { ok: true, version } as const;
    } finally {
      kernel.unlock(fd, region * REGION);
    }
  };

  const writeNow: WriteNow = (key, value, condition) => {
    const region = regionOf(id(key));
    for (let tries = 0; tries < 64; tries++) {
      if (kernel.tryLock(fd, region * REGION, false)) return writeLocked(region, key, value, condition);
    }
    return null;
  };

  const write = async (key: string, value: string | null, condition: CellCondition): Promise<CellWriteResult> => {
    for (;;) {
      const result = writeNow(key, value, condition);
      if (result) return result;
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  /** Reads a region under its shared lock (a writer may be rewriting its other half). */
  const read = async (region: number): Promise<Region> => {
    while (!kernel.tryLock(fd, region * REGION, true)) await new Promise((resolve) => setImmediate(resolve));
    try {
      return load(region).data;
    } finally {
      kernel.unlock(fd, region * REGION);
    }
  };
  const get = async (key: string) => entryOf(key, (await read(regionOf(id(key)))).cells[id(key)]);

  /** A read without yielding: `undefined` when the region stayed locked by a writer. */
  const readNow = (key: string): CellEntry | null | undefined => {
    const region = regionOf(id(key));
    for (let tries = 0; tries < 64; tries++) {
      if (!kernel.tryLock(fd, region * REGION, true)) continue;
      try {
        return entryOf(key, load(region).data.cells[id(key)]);
      } finally {
        kernel.unlock(fd, region * REGION);
      }
    }
    return undefined;
  };

  return {
    writeNow,
    readNow,
    close: () => closeSync(fd),
    get: (_space, key) => get(key),
    put: (_space, key, value, condition) => write(key, value, condition),
    delete: (_space, key, condition) => write(key, null, condition),
    async list() {
      const prefix = id("");
      const out: CellEntry[] = [];
      for (let region = 0; region < REGIONS; region++) {
        for (const [cellId, stored] of Object.entries((await read(region)).cells)) {
          if (cellId.startsWith(prefix) && stored.v !== null) out.push(entryOf(cellId.slice(prefix.length), stored)!);
        }
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : 1));
    },
    watch: (_space, key, listener, signal) => pollWatch(get, key, listener, signal),
  };
}

/**
 * A takeover record's watch (nobody depends on its speed: the core only ever reads
 * records): `get` once a second, reporting each new version.
 */
export async function pollWatch(
  get: (key: string) => Promise<CellEntry | null>,
  key: string,
  listener: (entry: CellEntry) => void,
  signal: AbortSignal,
): Promise<CellEntry | null> {
  let last = await get(key);
  const timer = setInterval(() => {
    void get(key).then(
      (entry) => {
        if (entry && entry.version !== last?.version) listener(entry);
        last = entry;
      },
      () => {},
    );
  }, WATCH_POLL_MS);
  timer.unref();
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  return last;
}
