/**
 * The stored procedures of the mysql backend's schema version 1 (see schema.ts for the
 * tables and docs/backends/mysql.md for the design): the granting rule (`eval`), enqueue
 * and try (`acquire`), the server-side wait (`wait`), release (`withdraw`), mode changes
 * (`mode`) and the heartbeat with its sweep. `@p` is the table prefix. Part of a released
 * migration once shipped: never edit, add a new version.
 *
 * @module
 */

/** Version 1's procedures, in creation order (each preceded by its DROP ... IF EXISTS). */
export const PROCEDURES_V1: readonly string[] = [
  "DROP PROCEDURE IF EXISTS @peval",
  // The granting rule, evaluated for entry p_id inside the caller's transaction, which
  // holds the queue row FOR UPDATE (so grants of one queue are serialised and every
  // entry inserted before is visible: sessions run READ COMMITTED). Entries whose
  // connection is gone (key no longer held) do not count; they are read without row
  // locks (deleting them here would lock rows of other queues in a scan and deadlock with
  // their grants) and deleted by heartbeats. o_token: the grant's token, or NULL with
  // o_block the key of an entry this one must wait for; o_gone: the entry is gone.
  `CREATE PROCEDURE @peval(IN p_id BIGINT, OUT o_token BIGINT UNSIGNED, OUT o_block VARCHAR(64), OUT o_gone INT)
    BEGIN
      DECLARE v_qid BIGINT DEFAULT NULL;
      DECLARE v_mode VARCHAR(10);
      DECLARE v_token BIGINT UNSIGNED;
      DECLARE v_kind VARCHAR(16);
      DECLARE v_lim INT;
      DECLARE v_ahead INT;
      SET o_token = NULL, o_block = NULL, o_gone = 0;
      SELECT qid INTO v_qid FROM @pentries WHERE id = p_id;
      IF v_qid IS NULL THEN
        SET o_gone = 1;
      ELSE
        SELECT kind, lim INTO v_kind, v_lim FROM @pqueues WHERE qid = v_qid FOR UPDATE;
        SELECT mode, token INTO v_mode, v_token FROM @pentries WHERE id = p_id;
        IF v_kind = 'semaphore' THEN
          SELECT COUNT(*) INTO v_ahead FROM @pentries
            WHERE qid = v_qid AND id <> p_id AND (id < p_id OR token IS NOT NULL) AND IS_USED_LOCK(lock_key) IS NOT NULL;
          IF v_token IS NOT NULL THEN SET o_token = v_token;
          ELSEIF v_ahead < v_lim THEN SET o_token = 0;
          ELSE
            SELECT lock_key INTO o_block FROM @pentries
              WHERE qid = v_qid AND id <> p_id AND (id < p_id OR token IS NOT NULL) AND IS_USED_LOCK(lock_key) IS NOT NULL
              ORDER BY id LIMIT 1;
          END IF;
        ELSEIF v_mode = 'upgrading' THEN
          -- Ahead of every waiter: only the other holders count.
          SELECT lock_key INTO o_block FROM @pentries
            WHERE qid = v_qid AND id <> p_id AND token IS NOT NULL AND IS_USED_LOCK(lock_key) IS NOT NULL
            ORDER BY id DESC LIMIT 1;
          IF o_block IS NULL THEN SET o_token = 0; END IF;
        ELSEIF v_token IS NOT NULL THEN
          SET o_token = v_token;
        ELSEIF v_mode = 'shared' THEN
          SELECT lock_key INTO o_block FROM @pentries
            WHERE qid = v_qid AND id <> p_id AND mode IN ('exclusive', 'upgrading')
              AND (id < p_id OR token IS NOT NULL) AND IS_USED_LOCK(lock_key) IS NOT NULL ORDER BY id DESC LIMIT 1;
          IF o_block IS NULL THEN SET o_token = 0; END IF;
        ELSE
          -- Wait for the entry just ahead, or, deeper in the queue, for the 17th from the
          -- front: the server treats a chain of GET_LOCK waits deeper than 32 as a deadlock,
          -- so chains stay at most 17 long (and the waiters far back wake once per 16 grants).
          SELECT lock_key INTO o_block FROM @pentries
            WHERE qid = v_qid AND id <> p_id AND (id < p_id OR token IS NOT NULL) AND IS_USED_LOCK(lock_key) IS NOT NULL
            ORDER BY id LIMIT 1 OFFSET 16;
          IF o_block IS NULL THEN
            SELECT lock_key INTO o_block FROM @pentries
              WHERE qid = v_qid AND id <> p_id AND (id < p_id OR token IS NOT NULL) AND IS_USED_LOCK(lock_key) IS NOT NULL
              ORDER BY id DESC LIMIT 1;
          END IF;
          IF o_block IS NULL THEN SET o_token = 0; END IF;
        END IF;
        IF o_token = 0 THEN
          -- Granted now: the counter is bumped in the same transaction as the grant.
          UPDATE @pqueues SET token = token + 1 WHERE qid = v_qid;
          SELECT token INTO o_token FROM @pqueues WHERE qid = v_qid;
          UPDATE @pentries SET token = o_token, since = ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000),
            mode = IF(mode = 'upgrading', 'exclusive', mode) WHERE id = p_id;
        END IF;
      END IF;
    END`,
  "DROP PROCEDURE IF EXISTS @pwait",
  // Waits server-side until entry p_key (of this connection) is granted, for at most
  // p_chunk_ms (then returns a NULL token and the client calls again: a client that died
  // silently stops calling, and its idle connection then times out). Sleeps in GET_LOCK
  // on the key of the entry it waits for; a semaphore waiter also wakes every
  // p_sem_poll_ms (a permit freed by another holder releases no key it could wait on).
  `CREATE PROCEDURE @pwait(IN p_key VARCHAR(64), IN p_chunk_ms INT, IN p_sem_poll_ms INT)
    BEGIN
      DECLARE v_id BIGINT DEFAULT NULL;
      DECLARE v_token BIGINT UNSIGNED;
      DECLARE v_block VARCHAR(64);
      DECLARE v_gone INT DEFAULT 0;
      DECLARE v_sem INT DEFAULT 0;
      DECLARE v_got INT;
      DECLARE v_int INT DEFAULT 0;
      DECLARE v_end DOUBLE DEFAULT UNIX_TIMESTAMP(NOW(6)) + p_chunk_ms / 1000;
      DECLARE v_left DOUBLE;
      ROLLBACK;
      SELECT e.id, q.kind = 'semaphore' INTO v_id, v_sem FROM @pentries e JOIN @pqueues q ON q.qid = e.qid
        WHERE e.lock_key = p_key AND e.conn = CONNECTION_ID();
      waiting: LOOP
        IF v_id IS NULL THEN SET v_gone = 1; LEAVE waiting; END IF;
        START TRANSACTION;
        CALL @peval(v_id, v_token, v_block, v_gone);
        COMMIT;
        IF v_token IS NOT NULL OR v_gone = 1 THEN LEAVE waiting; END IF;
        SET v_left = v_end - UNIX_TIMESTAMP(NOW(6));
        IF v_left <= 0 THEN LEAVE waiting; END IF;
        IF v_sem THEN SET v_left = LEAST(v_left, p_sem_poll_ms / 1000); END IF;
        SET v_got = GET_LOCK(v_block, v_left);
        -- NULL: interrupted (KILL QUERY: cancelled or preempted by the client).
        IF v_got IS NULL THEN SET v_int = 1; LEAVE waiting; END IF;
        IF v_got = 1 THEN DO RELEASE_LOCK(v_block); END IF;
      END LOOP;
      SELECT v_token AS token, v_gone AS gone, v_int AS interrupted;
    END`,
  "DROP PROCEDURE IF EXISTS @pacquire",
  // Enqueues a request under a fresh key (held by this connection for the entry's life,
  // taken before the row exists so the row is never seen without it), then tries once;
  // a failed try leaves no trace. p_chunk_ms > 0 waits as @pwait does.
  `CREATE PROCEDURE @pacquire(IN p_qkey BINARY(32), IN p_ns VARCHAR(512), IN p_kind VARCHAR(16), IN p_name TEXT,
      IN p_mode VARCHAR(10), IN p_lim INT, IN p_key VARCHAR(64), IN p_session CHAR(36), IN p_member VARCHAR(512),
      IN p_chunk_ms INT, IN p_sem_poll_ms INT)
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
      DECLARE v_busy BIGINT DEFAULT NULL;
      DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DO RELEASE_LOCK(p_key); RESIGNAL; END;
      IF GET_LOCK(p_key, 0) IS NOT TRUE THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: entry key already in use', MYSQL_ERRNO = 32001;
      END IF;
      -- A new name's row is created in a statement of its own, before the transaction: an
      -- insert that meets a duplicate takes a shared lock on it, and two requests holding
      -- that lock and then asking for the row FOR UPDATE would deadlock.
      SELECT qid INTO v_qid FROM @pqueues WHERE qkey = p_qkey;
      IF v_qid IS NULL THEN
        INSERT IGNORE INTO @pqueues (qkey, namespace, kind, name, lim) VALUES (p_qkey, p_ns, p_kind, p_name, p_lim);
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
      -- The uncontended lock: nothing live it would wait for, so it is granted as it is
      -- queued (the rule below would say the same, in more statements).
      -- (A plain SELECT ... INTO: a subquery in IF would take shared row locks.)
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
    END`,
  "DROP PROCEDURE IF EXISTS @pwithdraw",
  // Frees entry p_key of this connection (a grant, or a waiter withdrawn), then its key,
  // which wakes whoever waits for it. (An interrupted wait was rolled back by the client.)
  `CREATE PROCEDURE @pwithdraw(IN p_key VARCHAR(64))
    BEGIN
      DELETE FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
      SELECT RELEASE_LOCK(p_key) AS released;
    END`,
  "DROP PROCEDURE IF EXISTS @pmode",
  // Changes a granted lock entry's mode to p_mode ('shared': downgrade or an upgrade given
  // up; 'upgrading': an upgrade starts) under a new key, then releases the old key: whoever
  // waited on it looks again (readers behind a writer that became a reader get in).
  // A second upgrade of one lock is refused (it would wait for the first forever).
  `CREATE PROCEDURE @pmode(IN p_key VARCHAR(64), IN p_new_key VARCHAR(64), IN p_mode VARCHAR(10))
    BEGIN
      DECLARE v_id BIGINT DEFAULT NULL;
      DECLARE v_qid BIGINT;
      DECLARE v_other INT;
      DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DO RELEASE_LOCK(p_new_key); RESIGNAL; END;
      IF GET_LOCK(p_new_key, 0) IS NOT TRUE THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: entry key already in use', MYSQL_ERRNO = 32001;
      END IF;
      START TRANSACTION;
      SELECT id, qid INTO v_id, v_qid FROM @pentries WHERE lock_key = p_key AND conn = CONNECTION_ID();
      IF v_id IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: not held', MYSQL_ERRNO = 32004;
      END IF;
      SELECT qid INTO v_qid FROM @pqueues WHERE qid = v_qid FOR UPDATE;
      IF p_mode = 'upgrading' THEN
        SELECT COUNT(*) INTO v_other FROM @pentries
          WHERE qid = v_qid AND id <> v_id AND mode = 'upgrading' AND IS_USED_LOCK(lock_key) IS NOT NULL;
        IF v_other > 0 THEN
          SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'baton: concurrent upgrade', MYSQL_ERRNO = 32005;
        END IF;
      END IF;
      UPDATE @pentries SET lock_key = p_new_key, mode = p_mode WHERE id = v_id;
      COMMIT;
      DO RELEASE_LOCK(p_key);
      SELECT 1 AS ok;
    END`,
  "DROP PROCEDURE IF EXISTS @pheartbeat",
  // Renews a session's lease on the server's clock (it cannot expire before the client's
  // own deadline), ends expired sessions (their records go with them) and returns the
  // connections they held locks on, for the caller to kill.
  `CREATE PROCEDURE @pheartbeat(IN p_session CHAR(36), IN p_ttl_ms INT)
    BEGIN
      DECLARE v_now BIGINT DEFAULT ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000);
      DECLARE v_alive INT;
      DECLARE v_id CHAR(36);
      DECLARE v_entry BIGINT;
      DECLARE v_done INT DEFAULT 0;
      DECLARE expired CURSOR FOR SELECT id FROM @pgone;
      DECLARE dead CURSOR FOR SELECT id FROM @pentries WHERE IS_USED_LOCK(lock_key) IS NULL LIMIT 100;
      DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = 1;
      -- The sweep is best-effort (the next heartbeat sweeps again); the renewal, committed
      -- first, is what counts.
      DECLARE CONTINUE HANDLER FOR 1213 BEGIN END;
      UPDATE @psessions SET expires_at = v_now + p_ttl_ms WHERE id = p_session;
      SET v_alive = ROW_COUNT();
      -- Victims are picked by plain reads and deleted one by one by primary key: a locking
      -- scan would wait for, and deadlock with, the renewals and releases it meets.
      CREATE TEMPORARY TABLE IF NOT EXISTS @pgone (id CHAR(36) NOT NULL PRIMARY KEY) ENGINE=MEMORY;
      DELETE FROM @pgone;
      INSERT INTO @pgone SELECT id FROM @psessions WHERE expires_at < v_now LIMIT 100;
      SELECT v_alive AS alive, (SELECT GROUP_CONCAT(l.conn) FROM @planes l WHERE l.session_id IN (SELECT id FROM @pgone)) AS conns;
      OPEN expired;
      sessions: LOOP
        FETCH expired INTO v_id;
        IF v_done THEN LEAVE sessions; END IF;
        DELETE FROM @planes WHERE session_id = v_id;
        DELETE FROM @precords WHERE session_id = v_id;
        DELETE FROM @psessions WHERE id = v_id AND expires_at < v_now;
      END LOOP;
      CLOSE expired;
      SET v_done = 0;
      OPEN dead;
      entries: LOOP
        FETCH dead INTO v_entry;
        IF v_done THEN LEAVE entries; END IF;
        DELETE FROM @pentries WHERE id = v_entry AND IS_USED_LOCK(lock_key) IS NULL;
      END LOOP;
      CLOSE dead;
      DELETE FROM @precord_events WHERE at < v_now - 60000;
    END`,
];

/**
 * Version 2: a session an operator revoked (`fenceSession`) is no longer renewed, so its
 * holder's own deadline fires its signal before anything of it is freed. The heartbeat is
 * version 1's with that one condition.
 */
export const PROCEDURES_V2: readonly string[] = (() => {
  const heartbeat = PROCEDURES_V1.find((sql) => sql.startsWith("CREATE PROCEDURE @pheartbeat"));
  const renewal = "UPDATE @psessions SET expires_at = v_now + p_ttl_ms WHERE id = p_session;";
  if (!heartbeat?.includes(renewal)) throw new Error("the version 1 heartbeat changed: write version 2 in full");
  return [
    "ALTER TABLE @psessions ADD COLUMN IF NOT EXISTS revoked TINYINT NOT NULL DEFAULT 0",
    "DROP PROCEDURE IF EXISTS @pheartbeat",
    heartbeat.replace(
      renewal,
      "UPDATE @psessions SET expires_at = v_now + p_ttl_ms WHERE id = p_session AND revoked = 0;",
    ),
  ];
})();
