/**
 * The mysql backend's schema version 4: native takeover records (src/core/takeover.ts). A
 * tracked exclusive lock grant writes its record (the cell `name` of the space `takeover`,
 * sealed with the token and the grant time as core/driver.ts `sealRecord` says) in the
 * transaction that grants it: the enqueue's own (uncontended, or granted on arrival) and
 * the server-side wait's (a waiter is granted by its own re-check, woken by the release
 * ahead of it). If a live record is there (a lost holder's), it is left as it is and
 * answered, read in the same transaction. The clean release deletes the record in the
 * call that frees the lock, only at the version the holder claimed and only while this
 * connection still holds the grant's key.
 *
 * A fresh record's version is its token: tokens are never reused for a lock, so a version
 * a holder claimed is never met again on a later record of the name (the cells table drops
 * a deleted record's row, and versions counted from 1 would start again). The row names
 * the entry key of the grant that wrote it (`grant_key`, cleared by any cell write), so a
 * grant never handed out (its answer lost, its wait given up as it was granted) can delete
 * its own record and no other.
 *
 * The upgrade path: the untracked procedures are version 3's, unchanged, and the tracked
 * ones are new (`*_tracked`), so clients of version 3 keep running during and after the
 * migration (the added column is nullable and no statement of theirs names it). The tracked
 * procedures are version 3's enqueue and version 1's wait with the record's statements
 * added (derived here, checked, rather than copied). Part of a released migration once
 * shipped: never edit, add a new version.
 *
 * @module
 */
import { PROCEDURES_V1 } from "./procedures.js";
import { PROCEDURES_V3 } from "./procedures-v3.js";

/** The answer columns the tracked procedures add: the record written, or the one found. */
const ANSWER =
  "v_version AS version, v_found_value AS found_value, v_found_version AS found_version, v_found_fence AS found_fence";

const DECLARE_ANSWER = `DECLARE v_version BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_found_value LONGTEXT CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_found_version BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_found_fence BIGINT UNSIGNED DEFAULT NULL;`;

const RECORD_PARAMS = "IN p_record TEXT CHARACTER SET utf8mb4, IN p_ckey BINARY(32), IN p_sp BINARY(32)";

/** Writes the record of grant `p_token` (entry key `p_key`), inside the granting transaction. */
const takeoverGrant = `CREATE PROCEDURE @ptakeover_grant(IN p_ckey BINARY(32), IN p_sp BINARY(32),
    IN p_ns VARCHAR(512) CHARACTER SET utf8mb4, IN p_name TEXT CHARACTER SET utf8mb4, IN p_token BIGINT UNSIGNED, IN p_key VARCHAR(64), IN p_record TEXT CHARACTER SET utf8mb4,
    OUT o_version BIGINT UNSIGNED, OUT o_found_value LONGTEXT CHARACTER SET utf8mb4, OUT o_found_version BIGINT UNSIGNED,
    OUT o_found_fence BIGINT UNSIGNED)
  BEGIN
    DECLARE v_value LONGTEXT CHARACTER SET utf8mb4 DEFAULT NULL;
    DECLARE v_version BIGINT UNSIGNED;
    DECLARE v_fence BIGINT UNSIGNED;
    DECLARE v_sealed LONGTEXT CHARACTER SET utf8mb4 DEFAULT CONCAT(LEFT(p_record, CHAR_LENGTH(p_record) - 1),
      ',"t":"', p_token, '","at":', ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000), '}');
    SET o_version = NULL, o_found_value = NULL, o_found_version = NULL, o_found_fence = NULL;
    -- The common case (no row: free, or cleanly released) in one statement. A row that is
    -- there keeps the insert out and is share-locked by it, so the read below sees it as it
    -- stays until this transaction ends.
    INSERT IGNORE INTO @pcells (ckey, sp, namespace, space, cname, value, version, fence, grant_key)
      VALUES (p_ckey, p_sp, p_ns, 'takeover', p_name, v_sealed, p_token, p_token, p_key);
    IF ROW_COUNT() = 1 THEN
      SET o_version = p_token;
    ELSE
      SELECT value, version, fence INTO v_value, v_version, v_fence FROM @pcells WHERE ckey = p_ckey;
      IF v_value IS NULL THEN
        -- A tombstone (a delete that kept the row): its versions and its fence go on.
        SET o_version = GREATEST(v_version + 1, p_token);
        UPDATE @pcells SET value = v_sealed, version = o_version, fence = GREATEST(fence, p_token), grant_key = p_key
          WHERE ckey = p_ckey;
      ELSEIF v_fence = p_token THEN
        -- Its own, from a wait asked again after its answer was lost (tokens are unique).
        SET o_version = v_version;
      ELSE
        SET o_found_value = v_value, o_found_version = v_version, o_found_fence = v_fence;
      END IF;
    END IF;
  END`;

/**
 * The clean release of a tracked grant (`p_version`: the version it claimed), or, with
 * `p_version` NULL, the withdrawal of a tracked request that was never handed out: the
 * record it wrote goes (a lost holder's found there stays). The record first: once the key
 * is free the next holder reads it. Each statement commits on its own (the record's row
 * lock is never held while the queue's is asked for).
 */
const releaseTracked = `CREATE PROCEDURE @prelease_tracked(IN p_key VARCHAR(64), IN p_ckey BINARY(32), IN p_version BIGINT UNSIGNED)
  BEGIN
    IF p_version IS NULL THEN
      DELETE FROM @pcells WHERE ckey = p_ckey AND grant_key = p_key;
    ELSE
      -- Only while this connection holds the grant's key: the lock is still this holding's.
      DELETE FROM @pcells WHERE ckey = p_ckey AND version = p_version AND IS_USED_LOCK(p_key) = CONNECTION_ID();
    END IF;
    DELETE FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
    DO RELEASE_LOCK(p_key);
  END`;

/** Applies `edits` to `sql`, each required to match exactly `count` times (default 1). */
function derive(what: string, sql: string, edits: readonly [RegExp | string, string, number?][]): string {
  let out = sql;
  for (const [from, to, count = 1] of edits) {
    const pattern = typeof from === "string" ? new RegExp(from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "g") : from;
    const found = out.match(pattern)?.length ?? 0;
    if (found !== count) throw new Error(`${what} changed (${found} of ${pattern}): write version 4 in full`);
    out = out.replace(pattern, to);
  }
  return out;
}

const find = (statements: readonly string[], head: string): string =>
  statements.find((sql) => sql.startsWith(head)) ?? "";

const writeRecord = (ns: string, name: string) =>
  `CALL @ptakeover_grant(p_ckey, p_sp, ${ns}, ${name}, v_token, p_key, p_record, v_version, v_found_value, v_found_version, v_found_fence);`;

/** Version 1's wait, granting with the record. */
const waitTracked = derive("the version 1 wait", find(PROCEDURES_V1, "CREATE PROCEDURE @pwait"), [
  [
    "CREATE PROCEDURE @pwait(IN p_key VARCHAR(64), IN p_chunk_ms INT, IN p_sem_poll_ms INT)",
    `CREATE PROCEDURE @pwait_tracked(IN p_key VARCHAR(64), IN p_chunk_ms INT, IN p_sem_poll_ms INT, ${RECORD_PARAMS})`,
  ],
  [
    "DECLARE v_left DOUBLE;",
    `DECLARE v_left DOUBLE;\n      DECLARE v_ns VARCHAR(512) CHARACTER SET utf8mb4;\n      DECLARE v_name TEXT CHARACTER SET utf8mb4;\n      ${DECLARE_ANSWER}`,
  ],
  [
    "SELECT e.id, q.kind = 'semaphore' INTO v_id, v_sem FROM",
    "SELECT e.id, q.kind = 'semaphore', q.namespace, q.name INTO v_id, v_sem, v_ns, v_name FROM",
  ],
  [
    /CALL @peval\(v_id, v_token, v_block, v_gone\);(\s+)COMMIT;/g,
    `CALL @peval(v_id, v_token, v_block, v_gone);$1IF v_token IS NOT NULL THEN ${writeRecord("v_ns", "v_name")} END IF;$1COMMIT;`,
  ],
  [
    "SELECT v_token AS token, v_gone AS gone, v_int AS interrupted;",
    `SELECT v_token AS token, v_gone AS gone, v_int AS interrupted, ${ANSWER};`,
  ],
]);

/** Version 3's enqueue, granting with the record, and waiting with it. */
const acquireTracked = derive("the version 3 acquire", find(PROCEDURES_V3, "CREATE PROCEDURE @pacquire"), [
  ["CREATE PROCEDURE @pacquire(", "CREATE PROCEDURE @pacquire_tracked("],
  ["IN p_sem_poll_ms INT)", `IN p_sem_poll_ms INT, ${RECORD_PARAMS})`],
  ["DECLARE v_busy BIGINT DEFAULT NULL;", `DECLARE v_busy BIGINT DEFAULT NULL;\n    ${DECLARE_ANSWER}`],
  // The fast path's grant and the slow path's grant on arrival.
  [
    /COMMIT;(\s+)SELECT v_token AS token, 0 AS gone, 0 AS interrupted;/g,
    `${writeRecord("p_ns", "p_name")}$1COMMIT;$1SELECT v_token AS token, 0 AS gone, 0 AS interrupted, ${ANSWER};`,
    2,
  ],
  [
    "CALL @pwait(p_key, p_chunk_ms, p_sem_poll_ms);",
    "CALL @pwait_tracked(p_key, p_chunk_ms, p_sem_poll_ms, p_record, p_ckey, p_sp);",
  ],
]);

/** Version 4's statements: the column, then the procedures (each after its DROP ... IF EXISTS). */
export const PROCEDURES_V4: readonly string[] = [
  "ALTER TABLE @pcells ADD COLUMN IF NOT EXISTS grant_key VARCHAR(64) NULL",
  "DROP PROCEDURE IF EXISTS @ptakeover_grant",
  takeoverGrant,
  "DROP PROCEDURE IF EXISTS @pwait_tracked",
  waitTracked,
  "DROP PROCEDURE IF EXISTS @pacquire_tracked",
  acquireTracked,
  "DROP PROCEDURE IF EXISTS @prelease_tracked",
  releaseTracked,
];
