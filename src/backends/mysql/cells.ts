/**
 * Cells on MySQL: rows of the `cells` table, each write one transaction on the control
 * connection that locks the row (`SELECT ... FOR UPDATE`), decides with the shared rule and
 * writes; a key's version is its row's version + 1 (the row outlives a delete, so versions
 * keep increasing). Watches read the row every {@link POLL_MS} (no pushed events here).
 *
 * @module
 */
import { onAbort } from "../../core/abortable.js";
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import type { Control } from "./control.js";
import { translate } from "./errors.js";
import { POLL_MS } from "./records.js";
import { nameHash } from "./schema.js";

interface Row {
  cname: string;
  value: string | null;
  version: string;
  fence: string;
}

const toEntry = (row: Row): CellEntry => ({
  key: row.cname,
  value: row.value,
  version: BigInt(row.version),
  fence: BigInt(row.fence),
});

/** The cells seam on MySQL, for the coordinator's namespace. */
export function mysqlCells(control: Control, prefix: string, namespace: string): DriverCells {
  const columns = "cname, value, version, fence";
  const read = async (space: string, key: string): Promise<CellEntry | null> => {
    const [row] = await control.query<Row>(`SELECT ${columns} FROM ${prefix}cells WHERE ckey = ?`, [
      nameHash(namespace, space, key),
    ]);
    return row ? toEntry(row) : null;
  };

  // Writes share the control connection: one transaction at a time on it.
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => {});
    return run;
  };

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    const ckey = nameHash(namespace, space, key);
    // One connection, statements in order: the transaction is the control connection's alone.
    const connection = await control.connection();
    await connection.query("START TRANSACTION", [], control.timeoutMs);
    try {
      const [row] = await connection.query<Row>(
        `SELECT ${columns} FROM ${prefix}cells WHERE ckey = ? FOR UPDATE`,
        [ckey],
        control.timeoutMs,
      );
      const current = row ? toEntry(row) : null;
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action !== "write") {
        await connection.query("ROLLBACK", [], control.timeoutMs);
        return decision.action === "noop" ? { ok: true, version: 0n } : { ok: false, reason: decision.reason, current };
      }
      const version = (current?.version ?? 0n) + 1n;
      if (value === null && condition.forget) {
        // No tombstone row (its versions start again if it is created again).
        await connection.query(`DELETE FROM ${prefix}cells WHERE ckey = ?`, [ckey], control.timeoutMs);
        await connection.query("COMMIT", [], control.timeoutMs);
        return { ok: true, version };
      }
      // A write makes the value this writer's: the row no longer names the grant that wrote
      // it natively (grant_key, procedures-v4.ts), whose orphan clean-up must then spare it.
      await connection.query(
        `INSERT INTO ${prefix}cells (ckey, sp, namespace, space, cname, value, version, fence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE value = VALUES(value), version = VALUES(version), fence = VALUES(fence), grant_key = NULL`,
        [ckey, nameHash(namespace, space), namespace, space, key, value, version.toString(), decision.fence.toString()],
        control.timeoutMs,
      );
      await connection.query("COMMIT", [], control.timeoutMs);
      return { ok: true, version };
    } catch (error) {
      await connection.query("ROLLBACK", [], control.timeoutMs).catch(() => {});
      throw error;
    }
  };

  return {
    async get(space, key) {
      try {
        return await read(space, key);
      } catch (error) {
        throw translate(error, `reading cell ${space}/${key}`);
      }
    },
    async put(space, key, value, condition) {
      try {
        return await serial(() => write(space, key, value, condition));
      } catch (error) {
        throw translate(error, `writing cell ${space}/${key}`);
      }
    },
    async delete(space, key, condition) {
      try {
        return await serial(() => write(space, key, null, condition));
      } catch (error) {
        throw translate(error, `deleting cell ${space}/${key}`);
      }
    },
    async list(space) {
      try {
        const rows = await control.query<Row>(
          `SELECT ${columns} FROM ${prefix}cells WHERE sp = ? AND value IS NOT NULL ORDER BY cname`,
          [nameHash(namespace, space)],
        );
        return rows.map(toEntry);
      } catch (error) {
        throw translate(error, `listing cells of ${space}`);
      }
    },
    async watch(space, key, listener, signal) {
      let first: CellEntry | null;
      try {
        first = await read(space, key);
      } catch (error) {
        throw translate(error, `watching cell ${space}/${key}`);
      }
      let last = first?.version ?? 0n;
      const poll = async () => {
        if (signal.aborted) return;
        try {
          const entry = await read(space, key);
          if (entry && entry.version > last) {
            last = entry.version;
            listener(entry);
          }
        } catch {
          // Unreachable for now: the next poll reads again.
        }
        if (!signal.aborted) schedule();
      };
      let timer: NodeJS.Timeout | null = null;
      const schedule = () => {
        timer = setTimeout(() => void poll(), POLL_MS);
        timer.unref();
      };
      schedule();
      onAbort(signal, () => timer && clearTimeout(timer));
      return first;
    },
  };
}
