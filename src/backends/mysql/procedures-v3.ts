/**
 * The mysql backend's schema version 3: a queue's count of entries (`live`), kept in its
 * row, so that the uncontended request is granted by the statement that bumps its token,
 * without reading the queue's entries (that read walks every deleted entry the server has
 * not purged yet, and was the dearest statement of an uncontended acquisition, issue 15).
 * Part of a released migration once shipped: never edit, add a new version.
 *
 * The count's rule: triggers move `live` by one with every insert and delete of an entry,
 * in the same statement, and every insert runs in a transaction holding the queue's row
 * lock; so under that lock `live` is the number of the queue's entries, dead ones (their
 * connection gone) included until a heartbeat sweeps them. A row from before version 3
 * starts at {@link UNKNOWN} (its entries made before the triggers were not counted; half of
 * it or more reads as "not known"), which no limit is above, until a request on the slow
 * path counts the entries under the row lock and stores the number; from then on the
 * triggers keep it. Version 2's procedures still running during the migration (the server
 * replaces a procedure while calls of it run) are counted too: the triggers, created
 * before the procedures are replaced, count every statement that starts after them.
 *
 * @module
 */
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
    UPDATE @pqueues SET token = LAST_INSERT_ID(token + 1)
      WHERE qkey = p_qkey AND namespace = p_ns AND kind = p_kind AND name = p_name AND lim = p_lim
        AND live >= 0 AND live < IF(kind = 'semaphore', lim, 1);
    IF ROW_COUNT() = 1 THEN
      SET v_token = LAST_INSERT_ID();
      SELECT qid INTO v_qid FROM @pqueues WHERE qkey = p_qkey;
      INSERT INTO @pentries (qid, lock_key, conn, session_id, member_id, mode, token, since)
        VALUES (v_qid, p_key, CONNECTION_ID(), p_session, p_member, p_mode, v_token, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000));
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
      SELECT qid, namespace, kind, name, lim, live INTO v_qid, v_ns, v_kind, v_name, v_lim, v_count
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
      -- A count not known yet (see the module's rule) is counted, under the row lock.
      IF v_count < 0 OR v_count >= ${UNKNOWN / 2} THEN
        SELECT COUNT(*) INTO v_count FROM @pentries WHERE qid = v_qid;
        UPDATE @pqueues SET live = v_count WHERE qid = v_qid;
      END IF;
      SELECT id INTO v_busy FROM @pentries WHERE qid = v_qid
        AND (p_mode = 'exclusive' OR mode <> 'shared') AND IS_USED_LOCK(lock_key) IS NOT NULL LIMIT 1;
      IF p_kind <> 'semaphore' AND v_busy IS NULL THEN
        UPDATE @pqueues SET token = LAST_INSERT_ID(token + 1) WHERE qid = v_qid;
        SET v_token = LAST_INSERT_ID();
        INSERT INTO @pentries (qid, lock_key, conn, session_id, member_id, mode, token, since)
          VALUES (v_qid, p_key, CONNECTION_ID(), p_session, p_member, p_mode, v_token, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000));
      ELSE
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

// Frees entry p_key of this connection (a grant, or a waiter withdrawn), then its key, which wakes whoever waits for it. (An interrupted wait was rolled
// back by the client.)
const withdraw = `CREATE PROCEDURE @pwithdraw(IN p_key VARCHAR(64))
  BEGIN
    DELETE FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
    DO RELEASE_LOCK(p_key);
  END`;

/** Version 3's statements: the count and its trigger, then the procedures that use it. */
export const PROCEDURES_V3: readonly string[] = [
  `ALTER TABLE @pqueues ADD COLUMN IF NOT EXISTS live INT NOT NULL DEFAULT ${UNKNOWN}`,
  "DROP TRIGGER IF EXISTS @pentries_insert",
  `CREATE TRIGGER @pentries_insert AFTER INSERT ON @pentries FOR EACH ROW
    UPDATE @pqueues SET live = live + 1 WHERE qid = NEW.qid`,
  "DROP TRIGGER IF EXISTS @pentries_delete",
  // Every delete: a release, a withdrawn waiter, a heartbeat's sweep of dead entries.
  `CREATE TRIGGER @pentries_delete AFTER DELETE ON @pentries FOR EACH ROW
    UPDATE @pqueues SET live = live - 1 WHERE qid = OLD.qid`,
  "DROP PROCEDURE IF EXISTS @pacquire",
  acquire,
  "DROP PROCEDURE IF EXISTS @pwithdraw",
  withdraw,
];
