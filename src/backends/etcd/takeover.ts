/**
 * Takeover records on etcd (`Driver.nativeRecords`): a tracked exclusive grant's record is
 * the takeover cell `c/takeover/<name>` (bound to no lease, so it outlives a crashed
 * holder), put by the very transaction that grants, only if no record is there (else that
 * transaction reads the live one: the grant's `previousRecord`), and deleted by the
 * release's transaction only if still at the version the grant put.
 *
 * A grant's token is the revision of the transaction that grants it, which that
 * transaction cannot write into a value. So a record put with its grant is stored with the
 * token "0" (no etcd revision is 0), and every read of the takeover space (cells.ts, and the
 * grant's own read of a live record) puts the key's mod revision in its place: the revision
 * of that write, which is the token. Any later write of the record (the core's rewrite of a
 * taken-over record) stores the real token, as `cells.put` stores any value.
 *
 * @module
 */
import type { IKeyValue, IRequestOp, IResponseOp, ITxnResponse } from "etcd3";
import { type CellEntry, type DriverGrant, sealRecord } from "../../core/driver.js";
import { parseTakeover, TAKEOVER_SPACE } from "../../core/takeover.js";
import { op, rangeAt, when } from "./client.js";
import type { Keyspace } from "./keys.js";

/** The end of a record put with its grant: token "0", then the grant's epoch ms. */
const PENDING_TOKEN = /,"t":"0","at":(\d+)\}$/;

/** A record as the core reads it: a pending token replaced by the write's revision. */
export function readRecordValue(value: string, modRevision: bigint): string {
  const pending = PENDING_TOKEN.exec(value);
  if (!pending) return value;
  return `${value.slice(0, pending.index)},"t":"${modRevision}","at":${pending[1]}}`;
}

/** A cell value as `DriverCells` answers it: takeover records with their token. */
export function cellValue(space: string, kv: IKeyValue): string {
  const value = kv.value.toString();
  return space === TAKEOVER_SPACE ? readRecordValue(value, BigInt(kv.mod_revision)) : value;
}

/** The record a grant transaction may put: where, and the exact bytes sent. */
export interface RecordWrite {
  readonly name: string;
  readonly key: string;
  readonly fenceKey: string;
  /** The stored text (pending token, this send's grant time): unique to this write. */
  readonly stored: string;
}

/** The record of a grant of lock `name` made by a transaction sent now. */
export function recordWrite(keys: Keyspace, name: string, record: string): RecordWrite {
  return {
    name,
    key: keys.cellKey(TAKEOVER_SPACE, name),
    fenceKey: keys.cellFenceKey(TAKEOVER_SPACE, name),
    stored: sealRecord(record, 0n, Date.now()),
  };
}

/**
 * The operation a grant transaction adds to its success branch: puts the record if the
 * cell holds none; puts it again if it holds exactly this write (an earlier send of the
 * same transaction landed and its answer was lost: the resend's revision is the token now);
 * otherwise reads the live record and its fence.
 */
export function putRecordOp(write: RecordWrite): IRequestOp {
  const put: IRequestOp = { request_put: { key: Buffer.from(write.key), value: Buffer.from(write.stored) } };
  return {
    request_txn: {
      compare: [when.absent(write.key)],
      success: [put],
      failure: [
        {
          request_txn: {
            compare: [when.valueIs(write.key, write.stored)],
            success: [put],
            failure: [op.get(write.key), op.get(write.fenceKey)],
          },
        },
      ],
    },
  };
}

/**
 * What {@link putRecordOp}'s response says, for the grant at `revision` (the transaction's):
 * the record's version if it was put, or the live record found.
 */
export function recordOutcome(
  write: RecordWrite,
  response: IResponseOp | undefined,
  revision: bigint,
): Pick<DriverGrant, "recordVersion" | "previousRecord"> {
  const txn = response?.response_txn as ITxnResponse | undefined;
  if (!txn) throw new Error(`etcd did not answer the takeover record of lock "${write.name}"`);
  if (txn.succeeded) return { recordVersion: revision };
  const again = txn.responses[0]?.response_txn as ITxnResponse | undefined;
  if (!again) throw new Error(`etcd did not answer the takeover record of lock "${write.name}"`);
  if (again.succeeded) return { recordVersion: revision };
  const previous = liveRecord(write.name, again, 0);
  return previous ? { previousRecord: previous } : {};
}

/** The live record read by ops `index` (value) and `index + 1` (fence) of a transaction. */
export function liveRecord(name: string, response: ITxnResponse, index: number): CellEntry | undefined {
  const kv = rangeAt(response, index)[0];
  if (!kv) return undefined;
  const fence = rangeAt(response, index + 1)[0];
  const version = BigInt(kv.mod_revision);
  return {
    key: name,
    value: readRecordValue(kv.value.toString(), version),
    version,
    fence: fence ? BigInt(fence.value.toString()) : 0n,
  };
}

/**
 * What a read of the record cell ({@link readRecordOps}) says for a grant with `token` that
 * was recorded by a transaction whose answer was lost: its own record (that transaction
 * put it), a live one it found instead, or none (the core then writes it).
 */
export function recordFound(
  write: RecordWrite,
  response: ITxnResponse,
  token: bigint,
): Pick<DriverGrant, "recordVersion" | "previousRecord"> {
  const found = liveRecord(write.name, response, 0);
  if (!found) return {};
  return parseTakeover(found)?.token === token ? { recordVersion: found.version } : { previousRecord: found };
}

/** Reads the record cell (value and fence) in one transaction: ops 0 and 1. */
export function readRecordOps(write: RecordWrite): IRequestOp[] {
  return [op.get(write.key), op.get(write.fenceKey)];
}

/**
 * The operation a release adds: deletes the record (and its fence: no tombstone per lock
 * name ever used) only if it is still at `version`, the one its grant put; a successor's
 * record, or the core's rewrite of it, stays.
 */
export function dropRecordOp(keys: Keyspace, name: string, version: bigint): IRequestOp {
  const key = keys.cellKey(TAKEOVER_SPACE, name);
  return {
    request_txn: {
      compare: [when.modIs(key, version)],
      success: [op.del(key), op.del(keys.cellFenceKey(TAKEOVER_SPACE, name))],
      failure: [],
    },
  };
}

/**
 * The operation that deletes the record `write` put, if it is still exactly that: for an
 * attempt given up after sending a grant transaction whose outcome it never learnt (its
 * grant, if etcd applied it, was never handed out, so it was not lost either).
 */
export function dropOwnRecordOp(write: RecordWrite): IRequestOp {
  return {
    request_txn: {
      compare: [when.valueIs(write.key, write.stored)],
      success: [op.del(write.key), op.del(write.fenceKey)],
      failure: [],
    },
  };
}
