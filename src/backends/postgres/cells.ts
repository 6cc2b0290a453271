/**
 * Cells on PostgreSQL: rows of the `cells` table, each write one statement on the control
 * connection (`UPDATE ... WHERE version = $n RETURNING version`, or an upsert when the
 * write may create the row), versions from one sequence. A refusal reads the row and tells
 * why with the shared rule. Watches are woken by the table's NOTIFY trigger and read the
 * row; after a reconnect of the control connection every watched cell is read again.
 *
 * @module
 */
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import type { Control } from "./control.js";
import { cellGuard } from "../cell-calls.js";
import { translate } from "./errors.js";
import { quoteIdent } from "./schema.js";

interface Row {
  key: string;
  value: string | null;
  version: string;
  fence: string;
}

/** Bounded: each retry follows a change of the row between the write and the read. */
const MAX_ATTEMPTS = 8;

export function postgresCells(control: Control, schema: string, namespace: string): DriverCells {
  const q = quoteIdent(schema);
  const seq = `${q}.cell_versions`;
  const toEntry = (row: Row): CellEntry => ({
    key: row.key,
    value: row.value,
    version: BigInt(row.version),
    fence: BigInt(row.fence),
  });
  const read = async (space: string, key: string): Promise<CellEntry | null> => {
    const result = await control.query<Row>(
      `SELECT key, value, version, fence FROM ${q}.cells WHERE namespace = $1 AND space = $2 AND key = $3`,
      [namespace, space, key],
    );
    const row = result.rows[0];
    return row ? toEntry(row) : null;
  };

  // Each statement checks every condition in its WHERE; `$n IS NULL` skips an absent one.
  const upsert = `INSERT INTO ${q}.cells AS c (namespace, space, key, value, version, fence)
    VALUES ($1, $2, $3, $4, nextval('${seq}'), COALESCE($6::bigint, 0))
    ON CONFLICT (namespace, space, key) DO UPDATE
      SET value = EXCLUDED.value, version = nextval('${seq}'), fence = GREATEST(c.fence, EXCLUDED.fence)
      WHERE ($5::bool IS NOT TRUE OR c.value IS NULL) AND ($6::bigint IS NULL OR c.fence <= $6::bigint)
    RETURNING version`;
  const update = `UPDATE ${q}.cells
    SET value = $4, version = nextval('${seq}'), fence = GREATEST(fence, COALESCE($7::bigint, 0))
    WHERE namespace = $1 AND space = $2 AND key = $3 AND value IS NOT NULL
      AND ($5::bigint IS NULL OR version = $5::bigint) AND ($6::text IS NULL OR value = $6::text)
      AND ($7::bigint IS NULL OR fence <= $7::bigint)
    RETURNING version`;

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    const fence = condition.fence?.toString() ?? null;
    const mayCreate =
      value !== null &&
      condition.ifValue === undefined &&
      (condition.ifVersion === undefined || condition.ifVersion === 0n);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const result = mayCreate
        ? await control.query<{ version: string }>(upsert, [
            namespace,
            space,
            key,
            value,
            condition.ifVersion === 0n,
            fence,
          ])
        : await control.query<{ version: string }>(update, [
            namespace,
            space,
            key,
            value,
            condition.ifVersion?.toString() ?? null,
            condition.ifValue ?? null,
            fence,
          ]);
      const row = result.rows[0];
      if (row) return { ok: true, version: BigInt(row.version) };
      const current = await read(space, key);
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
      if (decision.action === "noop") return { ok: true, version: 0n };
      // The row changed between the statement and the read: the rule now allows it.
    }
    throw new Error(`cell "${key}" changed under ${MAX_ATTEMPTS} write attempts in a row`);
  };

  const guarded = cellGuard(translate);

  return {
    get: guarded("reading", read),
    put: guarded("writing", (space: string, key: string, value: string, condition: CellCondition) =>
      write(space, key, value, condition),
    ),
    delete: guarded("deleting", (space: string, key: string, condition: CellCondition) =>
      write(space, key, null, condition),
    ),
    list: guarded("listing", async (space: string) => {
      const result = await control.query<Row>(
        `SELECT key, value, version, fence FROM ${q}.cells
         WHERE namespace = $1 AND space = $2 AND value IS NOT NULL ORDER BY key`,
        [namespace, space],
      );
      return result.rows.map(toEntry);
    }),
    watch: guarded(
      "watching",
      async (space: string, key: string, listener: (entry: CellEntry) => void, signal: AbortSignal) => {
        const refresh = () => {
          if (signal.aborted) return;
          read(space, key).then(
            (entry) => {
              if (entry && !signal.aborted) listener(entry);
            },
            // A failed read is followed by the reconnect's resync.
            () => {},
          );
        };
        const onChange = (s: string, k: string) => {
          if (s === space && k === key) refresh();
        };
        // Listening before the first read: no change falls between the two.
        control.cellChanges.add(onChange);
        control.cellResyncs.add(refresh);
        signal.addEventListener(
          "abort",
          () => {
            control.cellChanges.delete(onChange);
            control.cellResyncs.delete(refresh);
          },
          { once: true },
        );
        await control.connection();
        return read(space, key);
      },
    ),
  };
}
