/**
 * The takeover records a MySQL session writes with its tracked grants (schema version 4,
 * procedures-v4.ts): which requests are tracked, the extra parameters of the tracked
 * statements, what their answers say of the record, and the record of a grant never
 * handed out whose connection died (an orphan), deleted over the control connection.
 *
 * @module
 */
import { sleep } from "../../core/abortable.js";
import type { AcquireRequest, DriverGrant } from "../../core/driver.js";
import { TAKEOVER_SPACE } from "../../core/takeover.js";
import type { Control } from "./control.js";
import { nameHash } from "./schema.js";

/** The columns a tracked grant's answer adds: the record written, or the live one found. */
export interface RecordAnswer {
  version: string | number | null;
  found_value: string | null;
  found_version: string | number | null;
  found_fence: string | number | null;
}

/** Where a tracked request's record goes, and what it says before it is sealed. */
export interface TrackedRecord {
  readonly record: string;
  /** The record's cell key (namespace, takeover space, lock name), as cells.ts keys it. */
  readonly ckey: Buffer;
}

/** How long an orphan's connection may take to end after it is killed. */
const ORPHAN_WAIT_MS = 2000;

/** The takeover records of one coordinator's namespace. */
export class TakeoverRecords {
  readonly #control: Control;
  readonly #p: string;
  readonly #namespace: string;
  /** The takeover space's key, as cells.ts lists it. */
  readonly #sp: Buffer;

  constructor(control: Control, prefix: string, namespace: string) {
    this.#control = control;
    this.#p = prefix;
    this.#namespace = namespace;
    this.#sp = nameHash(namespace, TAKEOVER_SPACE);
  }

  /**
   * The record `request` writes with its grant: only an exclusive lock tracked for
   * takeover (the core asks for no other). Anything else is granted untracked, by the
   * version 3 procedures.
   */
  of(request: AcquireRequest): TrackedRecord | undefined {
    if (request.record === undefined || request.kind !== "lock" || request.mode !== "exclusive") return undefined;
    return { record: request.record, ckey: this.key(request.name) };
  }

  /** The cell key of lock `name`'s record. */
  key(name: string): Buffer {
    return nameHash(this.#namespace, TAKEOVER_SPACE, name);
  }

  /** The parameters the tracked acquire and wait take after the untracked ones'. */
  params(tracked: TrackedRecord): unknown[] {
    return [tracked.record, tracked.ckey, this.#sp];
  }

  /** Puts what a tracked grant's answer says of its record on the grant. */
  apply(grant: DriverGrant & { readonly name: string }, row: Partial<RecordAnswer>): void {
    if (row.version !== null && row.version !== undefined) {
      grant.recordVersion = BigInt(row.version);
    } else if (typeof row.found_value === "string" && row.found_version !== null && row.found_version !== undefined) {
      grant.previousRecord = {
        key: grant.name,
        value: row.found_value,
        version: BigInt(row.found_version),
        fence: BigInt(row.found_fence ?? 0),
      };
    }
  }

  /**
   * Deletes the record a tracked request whose connection (`conn`, its id) died may have
   * written with a grant it never handed out (its answer lost): a grant that was not handed
   * out was not lost either. The caller keeps that connection's socket open until `end`
   * (see SqlConnection.hold): first the record is deleted while that connection still holds
   * the request's entry key, so nobody else can have been granted the lock and read the
   * record (the server frees the lock the moment the connection ends, and a waiter behind it
   * would report a takeover of a grant nobody was handed). Then the connection is ended:
   * `end`, and from the server side (it may not notice a cut, and a wait could still be
   * granted and write its record), and a second delete is for a wait granted in between,
   * once `conn` no longer holds the key. Only `conn` is killed: a waiter behind the entry
   * holds its key for a moment as it is woken (its wait sleeps in `GET_LOCK` on it). Each
   * delete asks that the row still names the request's key (keys are never reused; any cell
   * write since, a successor's claim of it, cleared that). Bounded (each statement by the
   * control timeout, the connection's end by {@link ORPHAN_WAIT_MS}) and best-effort: a
   * failure keeps the record, and the next holder then reports a takeover of a grant never
   * handed out. Always calls `end`.
   */
  async dropOrphan(key: string, ckey: Buffer, conn: number, end: () => void): Promise<void> {
    const drop = (held: string) =>
      this.#control.query(`DELETE FROM ${this.#p}cells WHERE ckey = ? AND grant_key = ? AND ${held}`, [
        ckey,
        key,
        key,
        conn,
      ]);
    try {
      try {
        await drop("IS_USED_LOCK(?) = ?");
      } finally {
        end();
      }
      const deadline = Date.now() + ORPHAN_WAIT_MS;
      let killed = false;
      for (;;) {
        const [row] = await this.#control.query<{ held: string | number | null }>(
          "SELECT IS_USED_LOCK(?) <=> ? AS held",
          [key, conn],
        );
        if (Number(row?.held ?? 0) !== 1 || Date.now() > deadline) break;
        if (!killed) await this.#control.kill(conn);
        killed = true;
        await sleep(20);
      }
      await drop("NOT (IS_USED_LOCK(?) <=> ?)");
    } catch {
      // Kept, as said above.
    }
  }
}
