/**
 * Cells on etcd: one transaction per write. The version is the value key's mod revision,
 * which is etcd's global revision, so it strictly increases per key across delete and
 * re-create. Conditions are etcd compares (mod revision, create revision 0 for "absent",
 * value bytes, and the fence key's zero-padded value for the fence), so a write is one round
 * trip; a refusal reads the key in the same transaction and reports why with the shared
 * rule. Only a cell's first fenced write takes a second round trip (its fence key does not
 * exist yet, and etcd's value compare fails on a missing key).
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import { CompareResult, CompareTarget, type Etcd3, type ICompare, type IRequestOp, type ITxnResponse } from "etcd3";
import { decideCellWrite } from "../../core/cell-rule.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { idempotent, op, rangeAt, sleep, when } from "./client.js";
import { cellGuard } from "../cell-calls.js";
import { translate } from "./errors.js";
import type { Keyspace } from "./keys.js";
import { cellValue } from "./takeover.js";
import { KeyWatch, type WatchRegistry } from "./watch.js";

const pad = (fence: bigint) => fence.toString().padStart(20, "0");
const bytes = (text: string) => Buffer.from(text);

/** Bounded: each retry follows a state change that made the previous compare stale. */
const MAX_ATTEMPTS = 8;

/**
 * The cells of a driver. Reads retry transient failures for `readBudgetMs`; a write is sent
 * once (a retried write could apply twice), so its failure means its outcome is unknown,
 * except a takeover record's (see `write`).
 */
export function etcdCells(
  client: Etcd3,
  keys: Keyspace,
  registry: WatchRegistry,
  closing: AbortSignal,
  readBudgetMs: number,
): DriverCells {
  const read = async (space: string, key: string): Promise<{ entry: CellEntry | null; revision: bigint }> => {
    const response = await idempotent(
      () =>
        client.kv.txn({
          compare: [],
          success: [op.get(keys.cellKey(space, key)), op.get(keys.cellFenceKey(space, key))],
          failure: [],
        }),
      readBudgetMs,
    );
    return { entry: entryOf(space, key, response, 0), revision: BigInt(response.header.revision) };
  };

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    const valueKey = keys.cellKey(space, key);
    const fenceKey = keys.cellFenceKey(space, key);
    let fenceExists = true;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const compare: ICompare[] = [];
      if (condition.ifVersion === 0n) compare.push(when.absent(valueKey));
      else if (condition.ifVersion !== undefined) compare.push(when.modIs(valueKey, condition.ifVersion));
      if (condition.ifValue !== undefined) compare.push(when.valueIs(valueKey, condition.ifValue));
      const success: IRequestOp[] = [
        value === null ? op.del(valueKey) : { request_put: { key: bytes(valueKey), value: bytes(value) } },
      ];
      // No tombstone: the fence key goes with the value.
      if (value === null && condition.forget) success.push(op.del(fenceKey));
      if (condition.fence !== undefined) {
        compare.push(fenceExists ? fenceAtMost(fenceKey, condition.fence) : when.absent(fenceKey));
        success.push({ request_put: { key: bytes(fenceKey), value: bytes(pad(condition.fence)) } });
      }
      const send = () => client.kv.txn({ compare, success, failure: [op.get(valueKey), op.get(fenceKey)] });
      // A takeover record's write is sent again after a transient failure: its compares make
      // a landed one fail the second time, and the rule then reads it as its writer's own
      // (the same token), which its claim accepts. A user cell's is not: a transition that
      // landed would read as a conflict, so its outcome stays unknown (a rejection). Nor is a
      // record's delete: it comes from a release, which must answer within one call deadline
      // (a delete that did not land leaves the record, so the next holder is told of a
      // takeover: the cautious side).
      const again = space === TAKEOVER_SPACE && value !== null;
      const response = again ? await idempotent(send, readBudgetMs) : await send();
      if (response.succeeded) {
        if (value !== null) return { ok: true, version: BigInt(response.header.revision) };
        const deleted = response.responses[0]?.response_delete_range?.deleted ?? "0";
        return { ok: true, version: deleted === "0" ? 0n : BigInt(response.header.revision) };
      }
      const current = entryOf(space, key, response, 0);
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
      // The compares failed but the rule allows the write: the fence key's existence was
      // guessed wrong (or changed); try again with what was just read.
      fenceExists = rangeAt(response, 1).length > 0;
    }
    throw new Error(`cell "${key}" changed under ${MAX_ATTEMPTS} write attempts in a row`);
  };

  const guarded = cellGuard(translate);

  return {
    get: guarded("reading", async (space, key) => (await read(space, key)).entry),
    put: guarded("writing", (space: string, key: string, value: string, condition: CellCondition) =>
      write(space, key, value, condition),
    ),
    delete: guarded("deleting", (space: string, key: string, condition: CellCondition) =>
      write(space, key, null, condition),
    ),
    list: guarded("listing", async (space: string) => {
      const response = await idempotent(
        () => client.kv.txn({ compare: [], success: [op.scan(keys.cellPrefix(space))], failure: [] }),
        readBudgetMs,
      );
      return rangeAt(response, 0).map((kv) => ({
        key: decodeURIComponent(kv.key.toString().slice(keys.cellPrefix(space).length)),
        value: cellValue(space, kv),
        version: BigInt(kv.mod_revision),
        fence: 0n,
      }));
    }),
    watch: guarded(
      "watching",
      async (space: string, key: string, listener: (entry: CellEntry) => void, signal: AbortSignal) => {
        const stop = AbortSignal.any([signal, closing]);
        const valueKey = keys.cellKey(space, key);
        let watch: KeyWatch | null = null;
        onAbort(stop, () => watch?.close());
        const follow = (revision: bigint) => {
          if (stop.aborted) return;
          watch = new KeyWatch(
            client,
            [{ key: valueKey }],
            revision + 1n,
            {
              events: (events) => {
                for (const { type, kv } of events) {
                  const version = BigInt(kv.mod_revision);
                  listener({ key, value: type === "delete" ? null : cellValue(space, kv), version, fence: 0n });
                }
              },
              // Events may be missing: read the latest state and watch on from there.
              broken: () => void resync(),
            },
            registry,
          );
        };
        const resync = async () => {
          for (let delay = 50; !stop.aborted; delay = Math.min(1000, delay * 2)) {
            try {
              const { entry, revision } = await read(space, key);
              if (stop.aborted) return;
              if (entry) listener(entry);
              follow(revision);
              return;
            } catch {
              await sleep(delay, stop).catch(() => {});
            }
          }
        };
        const { entry, revision } = await read(space, key);
        follow(revision);
        return entry;
      },
    ),
  };
}

/** The stored fence is at most `fence`: as padded bytes, less than `fence + 1`. */
function fenceAtMost(key: string, fence: bigint): ICompare {
  return { key: bytes(key), target: CompareTarget.Value, result: CompareResult.Less, value: bytes(pad(fence + 1n)) };
}

/** The cell read by ops `index` (value) and `index + 1` (fence) of a transaction. */
function entryOf(space: string, key: string, response: ITxnResponse, index: number): CellEntry | null {
  const value = rangeAt(response, index)[0];
  const fenceKv = rangeAt(response, index + 1)[0];
  const fence = fenceKv ? BigInt(fenceKv.value.toString()) : 0n;
  if (value) return { key, value: cellValue(space, value), version: BigInt(value.mod_revision), fence };
  // Deleted (or never written) but fenced: the fence outlives the value.
  return fenceKv ? { key, value: null, version: 0n, fence } : null;
}
