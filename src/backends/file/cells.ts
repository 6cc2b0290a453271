/**
 * Cells on the file backend, durable in the Baton directory with a fixed number of files
 * whatever the number of cells: each cell hashes into one of {@link BUCKETS} bucket files
 * (`cells.00` ...), a JSON document of its cells. A write takes the bucket's byte lock in
 * `cells.lock` (a kernel OFD lock, so it is freed if the writer dies), reads the bucket,
 * applies the shared rule, writes the new document to `cells.XX.tmp`, fsyncs it, renames it
 * over the bucket and fsyncs the directory. A crash at any point leaves either the old or
 * the new bucket, never a torn one. Reads take no lock (a rename is atomic). Versions come
 * from a counter in each bucket, so a cell's version increases across delete and re-create;
 * a deleted cell keeps a tombstone only if it was ever fenced.
 *
 * Watches are pushed: after a write, the writer tells every process of the directory's
 * mesh which bucket changed (a `cell` message, checked in protocol.ts), and watchers of a
 * cell in it read the bucket again. As a safety net against a missed message (a peer that
 * joined the mesh a moment later), a watch also checks the bucket file's identity (a new
 * inode: every write renames) every {@link WATCH_POLL_MS} ms. Writes in quick succession
 * may be seen only as their latest state.
 *
 * @module
 */
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { BackendUnavailableError } from "../../core/errors.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import { hash53 } from "../../core/hash.js";
import { takeoverApart } from "../cell-calls.js";
import { FILES, type Directory, openFile } from "./directory.js";
import { kernel } from "./kernel.js";
import type { FileNode } from "./node.js";
import { type ReleaseNow, takeoverRecords } from "./record-slots.js";
import type { WriteNow } from "./records.js";
import { BACKEND } from "./definition.js";

/** Bucket files the cells are spread over. */
export const BUCKETS = 32;
/** How often a watch checks its bucket file for a change it was not told about. */
export const WATCH_POLL_MS = 5000;

// Names and namespaces cannot hold control characters, so NUL separates them unambiguously.
const SEP = "\u0000";

interface StoredCell {
  /** JSON text, or null: deleted but fenced. */
  readonly v: string | null;
  /** Version, decimal. */
  readonly n: string;
  /** Highest fence, decimal. */
  readonly f: string;
}

interface Bucket {
  /** Last version given out in this bucket, decimal. */
  next: string;
  cells: Record<string, StoredCell>;
}

export function bucketFileName(bucket: number): string {
  return `${FILES.cells}.${bucket.toString(16).padStart(2, "0")}`;
}

/**
 * The cells of one namespace, with the takeover space in a store of its own
 * (record-slots.ts) and `takeoverNow`, `takeoverHeld` and `releaseNow`, its synchronous writes; `close()` frees the descriptors (call it once).
 */
export function fileCells(
  directory: Directory,
  namespace: string,
  node: Pick<FileNode, "cellWritten" | "onCellWritten" | "tokensFd">,
): DriverCells & { close(): void; takeoverNow: WriteNow; takeoverHeld: WriteNow; releaseNow: ReleaseNow } {
  const user = userCells(directory, namespace, node);
  const takeover = takeoverRecords(directory, namespace, TAKEOVER_SPACE, node.tokensFd);
  return {
    ...takeoverApart(user, takeover),
    close: () => {
      user.close();
      takeover.close();
    },
    takeoverNow: takeover.writeNow,
    takeoverHeld: takeover.writeHeld,
    releaseNow: takeover.releaseNow,
  };
}

function userCells(
  directory: Directory,
  namespace: string,
  notify: Pick<FileNode, "cellWritten" | "onCellWritten">,
): DriverCells & { close(): void } {
  const lockFd = openFile(directory, FILES.cellsLock);
  const id = (space: string, key: string) => `${namespace}${SEP}${space}${SEP}${key}`;
  const bucketOf = (cellId: string) => hash53(cellId) % BUCKETS;
  const pathOf = (bucket: number) => join(directory.path, bucketFileName(bucket));

  const load = (bucket: number): Bucket => {
    let text: string;
    try {
      text = readFileSync(pathOf(bucket), "utf8");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") return { next: "0", cells: {} };
      throw unavailable(directory, bucket, "cannot be read", cause);
    }
    try {
      const parsed = JSON.parse(text) as Bucket;
      if (typeof parsed.next !== "string" || typeof parsed.cells !== "object" || parsed.cells === null) throw 0;
      return parsed;
    } catch (cause) {
      throw unavailable(directory, bucket, "is not a Baton cells file (was it edited by hand?)", cause);
    }
  };

  const entryOf = (key: string, stored: StoredCell | undefined): CellEntry | null =>
    stored ? { key, value: stored.v, version: BigInt(stored.n), fence: BigInt(stored.f) } : null;

  const save = (bucket: number, data: Bucket) => {
    const temp = `${pathOf(bucket)}.tmp`;
    const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    try {
      writeSync(fd, JSON.stringify(data));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, pathOf(bucket));
    // The rename is durable only once the directory entry is.
    const dirFd = openSync(directory.path, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  };

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    const cellId = id(space, key);
    const bucket = bucketOf(cellId);
    let spins = 0;
    // Held for one read-check-write, all synchronous below, so never across an await.
    while (!kernel.tryLock(lockFd, bucket, false)) {
      if (++spins % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    try {
      const data = load(bucket);
      const current = entryOf(key, data.cells[cellId]);
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
      if (decision.action === "noop") return { ok: true, version: 0n };
      const version = BigInt(data.next) + 1n;
      data.next = version.toString();
      if (value === null && decision.fence === 0n) delete data.cells[cellId];
      else data.cells[cellId] = { v: value, n: version.toString(), f: decision.fence.toString() };
      try {
        save(bucket, data);
      } catch (cause) {
        throw unavailable(directory, bucket, "cannot be written", cause);
      }
      return { ok: true, version };
    } finally {
      kernel.unlock(lockFd, bucket);
      notify.cellWritten(bucket);
    }
  };

  const read = (space: string, key: string) => {
    const cellId = id(space, key);
    return entryOf(key, load(bucketOf(cellId)).cells[cellId]);
  };

  /** The bucket file's identity: every write renames a new file into place. */
  const identity = (bucket: number) => {
    try {
      const stat = statSync(pathOf(bucket));
      return `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
    } catch {
      return "absent";
    }
  };

  return {
    close: () => closeSync(lockFd),
    async get(space, key) {
      return read(space, key);
    },
    put: (space, key, value, condition) => write(space, key, value, condition),
    delete: (space, key, condition) => write(space, key, null, condition),
    async list(space) {
      const prefix = `${namespace}${SEP}${space}${SEP}`;
      const out: CellEntry[] = [];
      for (let bucket = 0; bucket < BUCKETS; bucket++) {
        for (const [cellId, stored] of Object.entries(load(bucket).cells)) {
          if (cellId.startsWith(prefix) && stored.v !== null) out.push(entryOf(cellId.slice(prefix.length), stored)!);
        }
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : 1));
    },
    async watch(space, key, listener, signal) {
      const bucket = bucketOf(id(space, key));
      let seen = identity(bucket);
      // Told of a write: read. Polling: read only if the file changed (its identity could
      // in principle repeat, an inode number reused with equal time and size; the push
      // path does not depend on it).
      const refresh = (told: boolean) => {
        const now = identity(bucket);
        if (!told && now === seen) return;
        seen = now;
        try {
          const entry = read(space, key);
          if (entry) listener(entry);
        } catch {
          // Read again at the next change; a broken bucket fails the next write loudly.
        }
      };
      // Told before the first read: no write falls between the two unnoticed.
      const stop = notify.onCellWritten((b) => b === bucket && refresh(true));
      const initial = read(space, key);
      const timer = setInterval(() => refresh(false), WATCH_POLL_MS);
      timer.unref();
      signal.addEventListener(
        "abort",
        () => {
          clearInterval(timer);
          stop();
        },
        { once: true },
      );
      return initial;
    },
  };
}

function unavailable(directory: Directory, bucket: number, why: string, cause: unknown): BackendUnavailableError {
  const file = join(directory.path, bucketFileName(bucket));
  return new BackendUnavailableError(`the cells file ${file} ${why}`, { backend: BACKEND, cause });
}
