import { closeSync, constants, lstatSync, mkdirSync, openSync, statSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BackendUnavailableError, InvalidArgumentError } from "../../core/errors.js";
import { hash53 } from "../../core/hash.js";
import { explain } from "../explain.js";
import { BACKEND } from "./definition.js";

/** The few files a Baton directory ever holds, whatever the number of names. */
export const FILES = {
  /** Empty files `locks.00` to `locks.3f`: every lock is a byte-range lock in one of them. */
  locks: "locks",
  /** 8 bytes: the fencing-token counter. */
  tokens: "tokens",
  /** Empty; semaphore holders mark their limit here so mismatches are detected. */
  semaphores: "semaphores",
  /** Empty; byte `i` is the write lock of cells bucket `i` (see cells.ts). */
  cellsLock: "cells.lock",
  /** Prefix of the cells bucket files `cells.00` ..., rewritten atomically (see cells.ts). */
  cells: "cells",
  /** Sparse; takeover records too large for a slot, in JSON regions (see records.ts). */
  takeover: "takeover",
  /** Sparse; the takeover records, in fixed binary slots (see record-slots.ts). */
  takeoverSlots: "takeover.slots",
} as const;

/** An opened Baton directory. */
export interface Directory {
  readonly path: string;
  /** Identifies the directory (device + inode): same dir, same id. */
  readonly id: string;
}

/** The folder (mode 0700) that holds the processes' mesh sockets; see mesh.ts. */
export const PEERS_FOLDER = "peers";

/** The default directory: `$XDG_RUNTIME_DIR/baton`, else `<tmpdir>/baton-<uid>`. */
export function defaultDirectory(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return join(runtime, "baton");
  return join(tmpdir(), `baton-${userInfo().uid}`);
}

/**
 * Resolves a `file:` URL to a directory path: `file:` alone is the default directory,
 * `file:///abs/dir` (or `file:/abs/dir`) an absolute one, and `file:rel/dir` (no slash after
 * the colon) is resolved against the current working directory. `written` is the URL as the
 * user wrote it: the parsed `URL` cannot tell `file:rel` from `file:/rel`, as WHATWG
 * parsing makes both `file:///rel`, and taking it as absolute would create a directory at
 * the file system's root that the user never named.
 */
export function directoryFromUrl(url: URL, written: string = url.href): string {
  const relative = /^file:(?![/\\])([^?#]+)/i.exec(written)?.[1];
  if (relative !== undefined) {
    const path = decodeURIComponent(relative);
    if (path === "~" || path.startsWith("~/")) {
      throw new InvalidArgumentError(
        `file URL ${JSON.stringify(written)}: "~" is not expanded in URLs; give the directory as file:///absolute/path or as a path relative to the working directory`,
      );
    }
    return resolve(process.cwd(), path);
  }
  if (url.host !== "" && url.host !== "localhost") {
    throw new InvalidArgumentError(
      `file URLs name a local directory; got host "${url.host}". Use file:///absolute/path (the file backend does not work across hosts)`,
    );
  }
  if (url.pathname === "" || url.pathname === "/") {
    return url.href === "file:" || url.href === "file:///" ? defaultDirectory() : "/";
  }
  return fileURLToPath(url);
}

/**
 * Creates (mode 0700) or checks the directory and its files. Errors name the directory and
 * say what to do: someone else's directory, a read-only one, a path that is not a directory.
 */
export function openDirectory(path: string, isDefault: boolean): Directory {
  try {
    makeDirectory(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw unavailable(path, `cannot be created (${code ?? "error"})`, "that its parent is writable by you", cause);
  }
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(path);
  } catch (cause) {
    throw unavailable(path, "cannot be read", "its permissions", cause);
  }
  if (!stat.isDirectory()) throw unavailable(path, "is not a directory", "the path in the URL");
  const uid = process.getuid?.();
  if (isDefault && uid !== undefined && stat.uid !== uid) {
    // Another user's private directory at our default path: refuse rather than share it.
    throw unavailable(path, `is owned by uid ${stat.uid}, not by you (uid ${uid})`, "who made it; remove it");
  }
  for (const name of [
    FILES.tokens,
    FILES.semaphores,
    FILES.cellsLock,
    ...Array.from({ length: 64 }, (_, i) => lockFileName(i)),
  ]) {
    const file = join(path, name);
    try {
      closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600));
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      const why =
        code === "EACCES" || code === "EPERM"
          ? "is not writable by you (permission denied)"
          : code === "EROFS"
            ? "is on a read-only file system"
            : `cannot hold Baton's files (${code ?? "error"})`;
      throw unavailable(path, why, "its owner and mode (yours, 0700)", cause);
    }
  }
  checkPeersFolder(path, stat.uid);
  return { path, id: hash53(`${stat.dev}:${stat.ino}`).toString(36) };
}

/**
 * Creates the peers folder owner-only, or checks one that exists: a folder owned by anyone
 * but the directory's owner, or open to others, could hold sockets that impersonate peers.
 */
function checkPeersFolder(path: string, owner: number): void {
  const folder = join(path, PEERS_FOLDER);
  try {
    mkdirSync(folder, { mode: 0o700 });
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== "EEXIST")
      throw unavailable(path, "cannot hold its peers folder", "its owner and mode (yours, 0700)", cause);
  }
  let stat: ReturnType<typeof lstatSync>;
  try {
    stat = lstatSync(folder);
  } catch (cause) {
    throw unavailable(path, "cannot hold its peers folder", "its owner and mode (yours, 0700)", cause);
  }
  const ours = stat.uid === owner || stat.uid === process.getuid?.();
  if (!stat.isDirectory() || !ours || (stat.mode & 0o022) !== 0) {
    throw unavailable(
      path,
      `has a peers folder that is not a directory owned by uid ${owner} and writable by it alone`,
      `who made ${folder}; remove it`,
    );
  }
}

/** The name of lock file number `shard`. */
export function lockFileName(shard: number): string {
  return `${FILES.locks}.${shard.toString(16).padStart(2, "0")}`;
}

/** Opens the directory itself, for paths relative to it that stay short (mesh sockets). */
export function openDirectoryFd(directory: Directory): number {
  return openSync(directory.path, constants.O_RDONLY | constants.O_DIRECTORY);
}

/** Opens one of the directory's files for reading and writing. */
export function openFile(directory: Directory, name: string): number {
  // libuv opens with O_CLOEXEC, so a child process (baton lock -- cmd) never inherits the
  // descriptor: a lock dies with its owner, not with its owner's children.
  return openSync(join(directory.path, name), constants.O_RDWR);
}

/**
 * `mkdir -p` with mode 0700, written out because Node's recursive mkdir loops forever on
 * some paths (e.g. under /proc) instead of failing.
 */
function makeDirectory(path: string): void {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return;
    const parent = dirname(path);
    if (code !== "ENOENT" || parent === path) throw error;
    makeDirectory(parent);
    mkdirSync(path, { mode: 0o700 });
  }
}

function unavailable(path: string, why: string, check: string, cause?: unknown): BackendUnavailableError {
  return new BackendUnavailableError(
    explain("", `Baton directory ${path}`, why, `${check}, or pass another directory (file:///path)`),
    { backend: BACKEND, cause },
  );
}
