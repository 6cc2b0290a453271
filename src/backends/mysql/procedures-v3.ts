/**
 * The mysql backend's schema version 3: a queue's count of entries (`live`), kept in its
 * row, so that the uncontended request is granted by the statement that bumps its token,
 * without reading the queue's entries (that read walks every deleted entry the server has
 * not purged yet, and was the dearest statement of an uncontended acquisition, issue 15).
 * Part of a released migration once shipped: never edit, add a new version.
 *
 * The count's rule: every insert and delete of a queue's entries runs in a transaction
 * that holds the queue's row lock and moves `live` by one, so under that lock `live` is
 * the number of the queue's entries. It may run high, never low: a row migrated from
 * version 2 starts at {@link UNKNOWN} (procedures of version 2 still running during the
 * migration insert and delete without counting), a sweep interrupted by a deadlock may
 * delete without counting. A high count only sends a request down the slow path, which
 * recounts the entries under the row lock and stores the exact number. Dead entries (their
 * connection gone) count until a heartbeat sweeps them.
 *
 * @module
 */
import { PROCEDURES_V2 } from "./procedures.js";

/** What `live` starts at where the count is not known: far above any limit. */
const UNKNOWN = 1_000_000_000;

const acquire = `CREATE PROCEDURE @pacquire(IN p_qkey BINARY(32), IN p_ns VARCHAR(512), IN p_kind VARCHAR(16),
    IN p_name TEXT, IN p_mode VARCHAR(10), IN p_lim INT, IN p_key VARCHAR(64), IN p_session CHAR(36),
    IN p_member VARCHAR(512), IN p_chunk_ms INT, IN p_sem_poll_ms INT)
  BEGIN
    DECLARE v_qid BIGINT DEFAULT NULL;
    DECLARE v_ns VARCHAR(512);
    DECLARE v_kind VARCHAR(16);
    DECLARE v_name TEXT;
    DECLARE v_lim INT;
    DECLARE v_id BIGINT;
    DECLARE v_token BIGINT UNSIGNED;
    DECLARE v_block VARCHAR(64);
    DECLARE v_gone INT;
    DECLARE v_held INT;
    DECLARE v_count INT;
    DECLARE v_busy BIGINT DEFAULT NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DO RELEASE_LOCK(p_key); RESIGNAL; END;
    IF GET_LOCK(p_key, 0) IS NOT TRUE THEN
      SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: entry key already in use', MYSQL_ERRNO = 32001;
    END IF;
    -- The fast path: a known name (same namespace, kind, name and limit) with fewer entries
    -- than its limit (none, for a lock) has nobody this request could wait for, whatever
    -- its mode. The row lock this UPDATE takes is the queue's lock of the rule.
    START TRANSACTION;
    UPDATE @pqueues SET token = LAST_INSERT_ID(token + 1), live = live + 1
      WHERE qkey = p_qkey AND namespace = p_ns AND kind = p_kind AND name = p_name AND lim = p_lim
        AND live >= 0 AND live < IF(kind = 'semaphore', lim, 1);
    IF ROW_COUNT() = 1 THEN
      SET v_token = LAST_INSERT_ID();
      INSERT INTO @pentries (qid, lock_key, conn, session_id, member_id, mode, token, since)
        VALUES ((SELECT qid FROM @pqueues WHERE qkey = p_qkey), p_key, CONNECTION_ID(), p_session, p_member,
          p_mode, v_token, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000));
      COMMIT;
      SELECT v_token AS token, 0 AS gone, 0 AS interrupted;
    ELSE
      COMMIT;
      -- A new name's row is created in a statement of its own, before the transaction: an
      -- insert that meets a duplicate takes a shared lock on it, and two requests holding
      -- that lock and then asking for the row FOR UPDATE would deadlock.
      SELECT qid INTO v_qid FROM @pqueues WHERE qkey = p_qkey;
      IF v_qid IS NULL THEN
        INSERT IGNORE INTO @pqueues (qkey, namespace, kind, name, lim, live) VALUES (p_qkey, p_ns, p_kind, p_name, p_lim, 0);
      END IF;
      START TRANSACTION;
      SELECT qid, namespace, kind, name, lim INTO v_qid, v_ns, v_kind, v_name, v_lim
        FROM @pqueues WHERE qkey = p_qkey FOR UPDATE;
      IF v_ns <> p_ns OR v_kind <> p_kind OR v_name <> p_name THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: name hash collision', MYSQL_ERRNO = 32002;
      END IF;
      IF v_lim <> p_lim THEN
        SELECT COUNT(*) INTO v_held FROM @pentries WHERE qid = v_qid AND IS_USED_LOCK(lock_key) IS NOT NULL;
        IF v_held > 0 THEN
          SET @baton_limit = v_lim;
          SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: semaphore limit mismatch', MYSQL_ERRNO = 32003;
        END IF;
        UPDATE @pqueues SET lim = p_lim WHERE qid = v_qid;
      END IF;
      -- The exact count, under the row lock (see the module's rule), this entry included.
      SELECT COUNT(*) INTO v_count FROM @pentries WHERE qid = v_qid;
      SELECT id INTO v_busy FROM @pentries WHERE qid = v_qid
        AND (p_mode = 'exclusive' OR mode <> 'shared') AND IS_USED_LOCK(lock_key) IS NOT NULL LIMIT 1;
      IF p_kind <> 'semaphore' AND v_busy IS NULL THEN
        UPDATE @pqueues SET token = LAST_INSERT_ID(token + 1), live = v_count + 1 WHERE qid = v_qid;
        SET v_token = LAST_INSERT_ID();
        INSERT INTO @pentries (qid, lock_key, conn, session_id, member_id, mode, token, since)
          VALUES (v_qid, p_key, CONNECTION_ID(), p_session, p_member, p_mode, v_token, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000));
      ELSE
        UPDATE @pqueues SET live = v_count + 1 WHERE qid = v_qid;
        INSERT INTO @pentries (qid, lock_key, conn, session_id, member_id, mode, since)
          VALUES (v_qid, p_key, CONNECTION_ID(), p_session, p_member, p_mode, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000));
        SET v_id = LAST_INSERT_ID();
        CALL @peval(v_id, v_token, v_block, v_gone);
      END IF;
      IF v_token IS NULL AND p_chunk_ms <= 0 THEN
        -- A failed try leaves no trace: its entry and its count are rolled back together.
        ROLLBACK;
        DO RELEASE_LOCK(p_key);
        SELECT NULL AS token, 1 AS gone, 0 AS interrupted;
      ELSEIF v_token IS NOT NULL THEN
        COMMIT;
        SELECT v_token AS token, 0 AS gone, 0 AS interrupted;
      ELSE
        COMMIT;
        CALL @pwait(p_key, p_chunk_ms, p_sem_poll_ms);
      END IF;
    END IF;
  END`;

// Frees entry p_key of this connection (a grant, or a waiter withdrawn) and counts it out,
// under the queue's row lock (taken first, as a grant takes it), then frees its key, which
// wakes whoever waits for it. (An interrupted wait was rolled back by the client.)
const withdraw = `CREATE PROCEDURE @pwithdraw(IN p_key VARCHAR(64))
  BEGIN
    DECLARE v_qid BIGINT DEFAULT NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SELECT qid INTO v_qid FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
    IF v_qid IS NOT NULL THEN
      START TRANSACTION;
      UPDATE @pqueues SET live = live - 1 WHERE qid = v_qid;
      DELETE FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
      COMMIT;
    END IF;
    DO RELEASE_LOCK(p_key);
  END`;

/** Version 3's statements: the count, then the procedures that keep it. */
export const PROCEDURES_V3: readonly string[] = (() => {
  const heartbeat = PROCEDURES_V2.find((sql) => sql.startsWith("CREATE PROCEDURE @pheartbeat"));
  const cursor = "DECLARE dead CURSOR FOR SELECT id FROM @pentries";
  const sweep = "DELETE FROM @pentries WHERE id = v_entry AND IS_USED_LOCK(lock_key) IS NULL;";
  const parts = ["DECLARE v_entry BIGINT;", "FETCH dead INTO v_entry;", cursor, sweep];
  if (!heartbeat || parts.some((part) => heartbeat.split(part).length !== 2)) {
    throw new Error("the version 2 heartbeat changed: write version 3 in full");
  }
  return [
    `ALTER TABLE @pqueues ADD COLUMN IF NOT EXISTS live INT NOT NULL DEFAULT ${UNKNOWN}`,
    "DROP PROCEDURE IF EXISTS @pacquire",
    acquire,
    "DROP PROCEDURE IF EXISTS @pwithdraw",
    withdraw,
    "DROP PROCEDURE IF EXISTS @pheartbeat",
    // A dead entry is counted out with its delete; a deadlock (handled: the sweep is
    // best-effort) rolls both back, or leaves the count high.
    heartbeat
      .replace("DECLARE v_entry BIGINT;", "DECLARE v_entry BIGINT;\n      DECLARE v_eq BIGINT;")
      .replace(cursor, "DECLARE dead CURSOR FOR SELECT id, qid FROM @pentries")
      .replace("FETCH dead INTO v_entry;", "FETCH dead INTO v_entry, v_eq;")
      .replace(
        sweep,
        `START TRANSACTION;
        UPDATE @pqueues SET live = live - 1 WHERE qid = v_eq;
        DELETE FROM @pentries WHERE id = v_entry AND IS_USED_LOCK(lock_key) IS NULL;
        IF ROW_COUNT() = 1 THEN COMMIT; ELSE ROLLBACK; END IF;`,
      ),
  ];
})();
