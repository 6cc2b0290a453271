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
import { randomBytes } from "node:crypto";
import {
  CompareResult,
  CompareTarget,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type IResponseOp,
  type ITxnResponse,
} from "etcd3";
import { type CellEntry, type DriverGrant, sealRecord } from "../../core/driver.js";
import { parseTakeover, TAKEOVER_SPACE } from "../../core/takeover.js";
import { op, rangeAt, when } from "./client.js";
import type { Keyspace } from "./keys.js";

/**
 * The end of a record put with its grant: its attempt's tag (below), token "0", then the
 * grant's epoch ms. Records written before tags existed end without the tag.
 */
const PENDING_TOKEN = /(?:,"n":"[0-9a-f]{12}\.\d{10}")?,"t":"0","at":(\d+)\}$/;

/** A record as the core reads it: a pending token replaced by the write's revision, the tag dropped. */
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

/**
 * Every grant transaction one acquisition attempt sends stores its record with the tag
 * `"n":"<attempt>.<send>"`: a random id of the attempt, then the send's number, fixed width,
 * so that a later send's text sorts after an earlier one's. etcd compares values as bytes,
 * so "any record of this attempt" and "a record of an earlier send of this attempt" are
 * each two value compares (a range), whatever send got lost or landed late.
 */
export class RecordTags {
  readonly #id = randomBytes(6).toString("hex");
  #sends = 0;

  /** The record of a grant of lock `name` by a transaction sent now. */
  next(keys: Keyspace, name: string, record: string): RecordWrite {
    const send = String(++this.#sends).padStart(10, "0");
    const head = `${record.slice(0, -1)},"n":"${this.#id}.`;
    const text = `${head}${send}"}`;
    return {
      name,
      key: keys.cellKey(TAKEOVER_SPACE, name),
      fenceKey: keys.cellFenceKey(TAKEOVER_SPACE, name),
      text,
      stored: sealRecord(text, 0n, Date.now()),
      attempt: head,
    };
  }
}

/** The record a grant transaction may put: where, and the exact bytes sent. */
export interface RecordWrite {
  readonly name: string;
  readonly key: string;
  readonly fenceKey: string;
  /** The record with its tag, not sealed: what a waiter's queue key carries (successor.ts). */
  readonly text: string;
  /** The stored text (pending token, tag, this send's grant time): unique to this send. */
  readonly stored: string;
  /** What every text its attempt sends starts with (up to the send's number). */
  readonly attempt: string;
}

/** A value compare on the record's key. */
function valueCompare(key: string, result: CompareResult, value: string): ICompare {
  return { key: Buffer.from(key), target: CompareTarget.Value, result, value: Buffer.from(value) };
}

/** The record holds a text of `write`'s attempt sent before `write` (`upTo`: before this text). */
function attemptBefore(write: RecordWrite, upTo: string): ICompare[] {
  return [
    valueCompare(write.key, CompareResult.Greater, write.attempt),
    valueCompare(write.key, CompareResult.Less, upTo),
  ];
}

/** Whether a stored record text is one of `write`'s attempt. */
export function isAttempts(write: RecordWrite, stored: string): boolean {
  return stored.startsWith(write.attempt);
}

/**
 * The operation a grant transaction adds to its success branch: puts the record if the
 * cell holds none, or holds one an earlier send of the same attempt put (that send landed
 * and its answer was lost, or it landed late: this send's revision is the token now);
 * otherwise reads the live record and its fence. A send that lands after a later one of its
 * attempt finds that one's text, which sorts after its own, and leaves it.
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
            compare: attemptBefore(write, write.stored),
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
 * What a read of the record cell ({@link readRecordOps}) says for a grant recorded by a
 * transaction whose answer was lost: its own record (a text of its attempt: some send of it
 * put it, so that send's revision, the record's, is the grant's token; the queue key's
 * own mod revision need not be, as a send of the attempt that lands late puts the key
 * again and leaves a later send's record), a live one it found instead, or none (the core
 * then writes it).
 */
export function recordFound(
  write: RecordWrite,
  response: ITxnResponse,
): Pick<DriverGrant, "recordVersion" | "previousRecord"> & { token?: bigint } {
  const kv = rangeAt(response, 0)[0];
  const found = liveRecord(write.name, response, 0);
  if (!kv || !found) return {};
  if (!isAttempts(write, kv.value.toString())) return { previousRecord: found };
  return { recordVersion: found.version, token: parseTakeover(found)!.token };
}

/** Reads the record cell (value and fence) in one transaction: ops 0 and 1. */
export function readRecordOps(write: RecordWrite): IRequestOp[] {
  return [op.get(write.key), op.get(write.fenceKey)];
}

/** A queue key that still is the grant's: `key` with its create revision. */
export interface Holding {
  readonly key: string;
  readonly createRevision: bigint;
}

/**
 * The operation a release adds: deletes the record (and its fence: no tombstone per lock
 * name ever used) only if it is still at `version`, the one its grant put (a successor's
 * record, or the core's rewrite of it, stays), and only if the grant's queue key is still
 * there (compares of a transaction, nested ones too, see the state before any of its
 * writes). A key already gone was taken by the lease's end, a loss: its record stays, for
 * the next holder, even when a release sent earlier lands only now.
 */
export function dropRecordOp(keys: Keyspace, name: string, version: bigint, holding: Holding): IRequestOp {
  const key = keys.cellKey(TAKEOVER_SPACE, name);
  return {
    request_txn: {
      compare: [when.is(holding.key, holding.createRevision), when.modIs(key, version)],
      success: [op.del(key), op.del(keys.cellFenceKey(TAKEOVER_SPACE, name))],
      failure: [],
    },
  };
}

/**
 * The operation that deletes any record `write`'s attempt put (of whichever of its sends
 * landed, early or late): for an attempt given up after sending a grant transaction whose
 * outcome it never learnt (its grant, if etcd applied it, was never handed out, so it was
 * not lost either). A text of another attempt (another holder's) stays.
 */
export function dropOwnRecordOp(write: RecordWrite): IRequestOp {
  return {
    request_txn: {
      compare: attemptBefore(write, `${write.attempt}:`),
      success: [op.del(write.key), op.del(write.fenceKey)],
      failure: [],
    },
  };
}

/**
 * The operation a join's fence-off adds (acquire.ts): deletes the record that join's send
 * would put, and only that one (its exact bytes), with its fence key. A fenced-off join can
 * have put no other: any other send of the attempt follows the fence-off's answer. A
 * fence-off whose answer was lost may land late, once a later send of the same attempt is
 * granted and its record (or the one a head's release put for it, successor.ts) is the live
 * holder's: a range over the attempt ({@link dropOwnRecordOp}) would delete that record,
 * and its holder's crash would then be handed on as no takeover.
 */
export function dropSentRecordOp(write: RecordWrite): IRequestOp {
  return {
    request_txn: {
      compare: [valueCompare(write.key, CompareResult.Equal, write.stored)],
      success: [op.del(write.key), op.del(write.fenceKey)],
      failure: [],
    },
  };
}
