/**
 * Takeover records on the file backend (`Driver.nativeRecords`): a tracked exclusive grant
 * writes its record while it holds the lock's kernel byte lock, before the grant is
 * returned, and the release deletes it before the byte lock is dropped. So no other
 * process can be granted the lock between the two steps, and a holder that dies (its kernel
 * lock freed by the kernel) leaves its record. The records live in buckets of their own,
 * written without fsync (cells.ts): a record survives its holder's death, not a crash of
 * the host, which ends every holder of this directory anyway.
 *
 * @module
 * @internal
 */
import { type DriverGrant, sealRecord } from "../../core/driver.js";
import type { ReleaseNow } from "./record-slots.js";
import type { WriteNow } from "./records.js";

/** The synchronous record writes of a session's grants and releases (record-slots.ts). */
export interface RecordWrites {
  readonly writeNow: WriteNow;
  /** {@link writeNow} for a caller holding the token counter's mutex (kernel.ts). */
  readonly writeHeld: WriteNow;
  readonly releaseNow: ReleaseNow;
}

/**
 * Writes `record` for a fresh exclusive grant of `name` (`"written"`: the grant carries its
 * `recordVersion`), or reads the live record there (`"found"`: the grant carries it as
 * `previousRecord`); `"busy"` when the records' bucket stayed locked (another process in its
 * few microseconds there): the caller retries or gives up. `held`: the caller holds the
 * token counter's mutex (a grant taking its token).
 */
export function writeRecordNow(
  records: RecordWrites,
  grant: DriverGrant,
  name: string,
  record: string,
  held = false,
): "written" | "found" | "busy" {
  const result = (held ? records.writeHeld : records.writeNow)(name, sealRecord(record, grant.token, Date.now()), {
    ifVersion: 0n,
    fence: grant.token,
  });
  if (result === null) return "busy";
  if (result.ok) {
    grant.recordVersion = result.version;
    return "written";
  }
  if (result.current) grant.previousRecord = result.current;
  return "found";
}

/**
 * Deletes a released grant's record if it is still at the version it claimed. `false` when
 * the bucket stayed busy: the caller keeps the kernel lock and retries with
 * {@link deleteRecord}, since a record left behind would make its next holder fence a
 * holder that released cleanly.
 */
export function deleteRecordNow(records: RecordWrites, grant: DriverGrant, name: string): boolean {
  if (grant.recordVersion === undefined) return true;
  return records.releaseNow(name, grant.recordVersion);
}

/** {@link deleteRecordNow}, yielding while the bucket is busy. */
export async function deleteRecord(records: RecordWrites, grant: DriverGrant, name: string): Promise<void> {
  while (!deleteRecordNow(records, grant, name)) await new Promise((resolve) => setImmediate(resolve));
}
