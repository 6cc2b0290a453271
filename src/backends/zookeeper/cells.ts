/**
 * Cells on ZooKeeper: one persistent node per key, `<root>/c/<space>/<key>`, whose data is
 * `{"f": fence, "x": value}` (`x: null` in a deleted key's tombstone: the node stays, so
 * version and fence survive). The version is the node's mzxid, ZooKeeper's global
 * transaction id, so it increases per key with every write and across restarts.
 *
 * A write reads the node, decides with the shared rule (cell-rule.ts) and sets the data
 * under the node's znode version, which ZooKeeper checks atomically with the write; a
 * version mismatch (someone wrote in between) reads again. A key's first write creates its
 * node with its value (its space's container node first, if the server had removed it); a
 * delete that may forget (`CellCondition.forget`) deletes the node under its version. Reads retry transient failures; a write is sent once, so a lost
 * answer means its outcome is unknown. Watches re-read on every event, re-arm, and re-read
 * every few seconds as a safety net (a watch set on a session that then expired is gone).
 *
 * @module
 * @internal
 */
import { onAbort } from "../../core/abortable.js";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import { FLAGS, type Stat, type ZkHandle } from "./client.js";
import { hasCode, isTransient, RC, translate } from "./errors.js";
import { decodeSegment, type Layout } from "./paths.js";
import { ensurePath, retrying } from "./scope.js";

/** Bounded: each retry follows a write by another client between our read and our write. */
const MAX_ATTEMPTS = 16;
/** A watch re-reads this often even without an event. */
const RESYNC_MS = 5000;

interface CellData {
  readonly f: string;
  readonly x: string | null;
  /**
   * 1: a takeover record written in one multi with its grant's queue node, before the token
   * was known (grant-records.ts): the token is that multi's zxid, the node's czxid, and the
   * value's sealed token (`"t":"0"`) stands for it.
   */
  readonly z?: number;
}

/** A takeover record's data, written with its queue node before its token is known (see `CellData.z`). */
export function cellDataWithNode(sealedWithZero: string): string {
  return JSON.stringify({ f: "0", x: sealedWithZero, z: 1 } satisfies CellData);
}

/** The sealed token of a record written with its node (`sealRecord` with token 0). */
const ZERO_TOKEN = /,"t":"0","at":(\d+)}$/;

/** A cell node's data: its fence and value (`null`: a tombstone). */
export function cellData(fence: bigint, value: string | null): string {
  return JSON.stringify({ f: String(fence), x: value } satisfies CellData);
}

/** The cell a node holds: its version is the node's mzxid. */
export function cellEntry(key: string, node: { readonly data: string; readonly stat: Stat }): CellEntry {
  const data = JSON.parse(node.data || '{"f":"0","x":null}') as CellData;
  if (data.z === 1 && data.x !== null) {
    const token = node.stat.czxid;
    const value = data.x.replace(ZERO_TOKEN, `,"t":"${token}","at":$1}`);
    return { key, value, version: node.stat.mzxid, fence: token };
  }
  return { key, value: data.x, version: node.stat.mzxid, fence: BigInt(data.f) };
}

/** The cells of one driver; `live` gives its current read handle, `chroot` its chroot. */
export function zkCells(
  live: () => Promise<ZkHandle>,
  layout: Layout,
  chroot: string,
  closing: AbortSignal,
): DriverCells {
  const spacePath = (space: string) => layout.cellSpace(space);
  const path = (space: string, key: string) => layout.cell(space, key);

  const read = async (space: string, key: string, watch?: (type: number) => void) => {
    const handle = await live();
    const node = await retrying(handle, "reading a cell", () => handle.get(path(space, key), watch), closing);
    if (!node) return null;
    return { entry: cellEntry(key, node), znodeVersion: node.stat.version };
  };

  /**
   * A write's read. The caller knows `ifVersion` was written, maybe by another session (a
   * grant's record, written on the session's connection): a read showing less (an older
   * version, or no node) may come from a server behind that write, so it is read again
   * behind a barrier before being taken for a conflict, which would refuse the write (a
   * release's delete: the record would stay, a false takeover for the next holder).
   */
  const readAtLeast = async (space: string, key: string, ifVersion: bigint | undefined) => {
    const current = await read(space, key);
    if (ifVersion === undefined || ifVersion <= 0n || (current && current.entry.version >= ifVersion)) return current;
    const handle = await live();
    await retrying(handle, "syncing a cell", () => handle.sync(path(space, key)), closing);
    return read(space, key);
  };

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    // A takeover record's write is sent again after a lost connection, decided again against
    // the node as it then is: a record that did land reads as its writer's own (the same
    // token), which its claim accepts. A user cell's is not: a transition that landed would
    // read as a conflict, so its outcome stays unknown (a rejection). Nor is a record's
    // delete: it comes from a release, which must not wait for a reconnection (one that
    // did not land leaves the record: the next holder is told of a takeover, the cautious side).
    const again = async (error: unknown) => {
      if (space !== TAKEOVER_SPACE || value === null || !isTransient(error)) throw error;
      await (await live()).waitConnected(closing);
    };
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const current = await (attempt === 0 ? readAtLeast(space, key, condition.ifVersion) : read(space, key));
      const decision = decideCellWrite(current?.entry ?? null, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current: current?.entry ?? null };
      if (decision.action === "noop") return { ok: true, version: 0n };
      const handle = await live();
      if (!current) {
        // Created with its value, one round trip while its space's node is there: a
        // node's creation zxid is its first mzxid. If another writer was first, decided
        // again against the node as it now is.
        try {
          const created = await handle.createNode(path(space, key), cellData(decision.fence, value), FLAGS.persistent);
          return { ok: true, version: created.czxid };
        } catch (error) {
          if (hasCode(error, RC.NONODE)) await ensurePath(handle, chroot, spacePath(space), closing);
          else if (!hasCode(error, RC.NODEEXISTS)) await again(error);
        }
        continue;
      }
      if (value === null && condition.forget) {
        // No tombstone: the node goes (and its empty container parents, with the server).
        try {
          await handle.delete(path(space, key), current.znodeVersion);
          // A delete has no zxid of its own to report, and the key is gone: no version.
          return { ok: true, version: 0n };
        } catch (error) {
          if (!hasCode(error, RC.BADVERSION) && !hasCode(error, RC.NONODE)) await again(error);
          continue;
        }
      }
      try {
        const stat = await handle.set(path(space, key), cellData(decision.fence, value), current.znodeVersion);
        return { ok: true, version: stat.mzxid };
      } catch (error) {
        // Changed, or deleted by a forgetting delete, since the read: decided again.
        if (!hasCode(error, RC.BADVERSION) && !hasCode(error, RC.NONODE)) await again(error);
      }
    }
    throw new Error(`cell "${key}" changed ${MAX_ATTEMPTS} times while it was being written`);
  };

  const wrap =
    <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args);
      } catch (error) {
        throw translate(error, what);
      }
    };

  return {
    get: wrap("reading a cell", async (space: string, key: string) => (await read(space, key))?.entry ?? null),
    put: wrap("writing a cell", (space: string, key: string, value: string, condition: CellCondition) =>
      write(space, key, value, condition),
    ),
    delete: wrap("deleting a cell", (space: string, key: string, condition: CellCondition) =>
      write(space, key, null, condition),
    ),
    list: wrap("listing cells", async (space: string) => {
      const handle = await live();
      const listed = await retrying(handle, "listing cells", () => handle.children(spacePath(space)), closing);
      const entries = await Promise.all(
        (listed?.children ?? []).map(async (child) => (await read(space, decodeSegment(child)))?.entry ?? null),
      );
      return entries.filter((e): e is CellEntry => e !== null && e.value !== null);
    }),
    watch: wrap(
      "watching a cell",
      async (space: string, key: string, listener: (entry: CellEntry) => void, signal: AbortSignal) => {
        const stop = AbortSignal.any([signal, closing]);
        // One watch at a time: the client keeps every watcher it is given until its event,
        // so the resync reads without one while a watch is pending.
        let armed = false;
        const onEvent = () => {
          armed = false;
          deliver();
        };
        const arm = async (): Promise<CellEntry | null> => {
          armed = true;
          try {
            const found = await read(space, key, onEvent);
            if (found) return found.entry;
            // Not there yet: be told when it is created.
            const handle = await live();
            await retrying(handle, "watching a cell", () => handle.exists(path(space, key), onEvent), stop);
            return (await read(space, key))?.entry ?? null;
          } catch (error) {
            armed = false;
            throw error;
          }
        };
        const deliver = () => {
          if (stop.aborted) return;
          const reading = armed ? read(space, key).then((found) => found?.entry ?? null) : arm();
          reading.then(
            (entry) => {
              if (entry && !stop.aborted) listener(entry);
            },
            () => {},
          );
        };
        const timer = setInterval(deliver, RESYNC_MS);
        timer.unref();
        onAbort(stop, () => clearInterval(timer));
        return arm();
      },
    ),
  };
}
