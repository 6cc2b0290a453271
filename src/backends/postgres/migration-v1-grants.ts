/**
 * Version 1 of the postgres backend's schema, part 2 of 3 (joined in `migrations.ts`): the
 * granting statements. The granting rule (`src/core/grant-rule.ts`) is carried out here by
 * the server's lock manager: an advisory lock's wait queue is FIFO and a request that
 * conflicts with a queued one waits (readers behind an earlier writer), semaphore permits
 * queue on a turnstile, and an upgrade takes an intent key first (a second upgrader is
 * refused). The conformance suite replays the rule's table (`test/grant-rule-cases.ts`)
 * through this backend.
 *
 * @module
 */

/** Never edit: version 1 is released (add a migration instead). `@s` is the quoted schema. */
export const V1_GRANTS = `
-- After a lock or election key was granted (p_pid holds it): checks the registry (a
-- colliding name frees the lock and raises), draws a token and records the grant. The
-- first grant of a key registers it (the only durable write); later exclusive grants are
-- one in-place update of its unlogged holders row.
CREATE FUNCTION @s.granted(p_key bigint, p_ns text, p_kind text, p_name text, p_shared bool, p_epoch bigint,
  p_pid int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE r record; t bigint;
BEGIN
  IF NOT p_shared THEN
    UPDATE @s.holders h SET pid = p_pid, token = p_epoch + nextval('@s.tokens'), since = @s.now_ms()
    WHERE h.key = p_key AND h.namespace = p_ns AND h.kind = p_kind AND h.name = p_name AND h.part = 0
    RETURNING h.token INTO t;
    IF FOUND THEN RETURN t; END IF;
  END IF;
  SELECT k.namespace, k.kind, k.name, k.part INTO r FROM @s.keys k WHERE k.key = p_key;
  IF NOT FOUND THEN
    INSERT INTO @s.keys (key, namespace, kind, name, part) VALUES (p_key, p_ns, p_kind, p_name, 0)
    ON CONFLICT (key) DO NOTHING;
    SELECT k.namespace, k.kind, k.name, k.part INTO r FROM @s.keys k WHERE k.key = p_key;
  END IF;
  IF (r.namespace, r.kind, r.name, r.part) IS DISTINCT FROM (p_ns, p_kind, p_name, 0) THEN
    IF p_shared THEN PERFORM pg_advisory_unlock_shared(p_key); ELSE PERFORM pg_advisory_unlock(p_key); END IF;
    PERFORM @s.collision(p_key, p_ns, p_kind, p_name, 0);
  END IF;
  t := p_epoch + nextval('@s.tokens');
  IF p_shared THEN
    INSERT INTO @s.grants AS g (key, pid, namespace, mode, token, since)
    VALUES (p_key, p_pid, p_ns, 'shared', t, @s.now_ms())
    ON CONFLICT (key, pid) DO UPDATE SET mode = 'shared', token = excluded.token, since = excluded.since, sem = NULL;
  ELSE
    INSERT INTO @s.holders AS h (key, namespace, kind, name, part, pid, token, since)
    VALUES (p_key, p_ns, p_kind, p_name, 0, p_pid, t, @s.now_ms())
    ON CONFLICT (key) DO UPDATE SET namespace = excluded.namespace, kind = excluded.kind, name = excluded.name,
      part = 0, pid = excluded.pid, token = excluded.token, since = excluded.since;
  END IF;
  RETURN t;
END $$;

-- Grants a lock or an election (kind 'lock' | 'election') on its key (computed by the
-- client like key()): tries, or waits server-side when p_wait (after checking the registry,
-- so a colliding name is refused before waiting). o_token is null when not granted. The
-- uncontended path is one try and one update of an unlogged row.
CREATE FUNCTION @s.lock_acquire(p_key bigint, p_ns text, p_kind text, p_name text, p_shared bool, p_wait bool,
  p_epoch bigint, OUT o_token bigint, OUT o_pid int)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  IF p_wait THEN
    PERFORM @s.collision(p_key, p_ns, p_kind, p_name, 0);
    IF p_shared THEN PERFORM pg_advisory_lock_shared(p_key); ELSE PERFORM pg_advisory_lock(p_key); END IF;
  ELSIF NOT (CASE WHEN p_shared THEN pg_try_advisory_lock_shared(p_key) ELSE pg_try_advisory_lock(p_key) END) THEN
    PERFORM @s.collision(p_key, p_ns, p_kind, p_name, 0);
    RETURN;
  END IF;
  IF NOT p_shared THEN
    -- The common case inline (granted() does the same first).
    UPDATE @s.holders h SET pid = o_pid, token = p_epoch + nextval('@s.tokens'), since = @s.now_ms()
    WHERE h.key = p_key AND h.namespace = p_ns AND h.kind = p_kind AND h.name = p_name AND h.part = 0
    RETURNING h.token INTO o_token;
    IF FOUND THEN RETURN; END IF;
  END IF;
  o_token := @s.granted(p_key, p_ns, p_kind, p_name, p_shared, p_epoch, o_pid);
END $$;

-- Semaphores: permit i is advisory key part i+1; waiters queue FIFO on the turnstile
-- (part -1); the head of the queue holds the turnstile and is woken by NOTIFY when a
-- permit is freed. p_mode: 'try' scans once; 'wait' queues on the turnstile first; 'scan'
-- is a head scanning again (it holds the turnstile). The base row (part 0) holds the
-- counter and the limit; its row lock serialises grants of one semaphore.
CREATE FUNCTION @s.sem_acquire(p_ns text, p_name text, p_lim int, p_mode text, p_since bigint,
  OUT o_base bigint, OUT o_turnstile bigint, OUT o_slot bigint, OUT o_token bigint, OUT o_pid int, OUT o_head bool)
LANGUAGE plpgsql AS $$
DECLARE r record; s bigint;
BEGIN
  o_pid := pg_backend_pid();
  o_head := false;
  o_base := @s.key(p_ns, 'semaphore', p_name, 0);
  o_turnstile := @s.key(p_ns, 'semaphore', p_name, -1);
  PERFORM @s.collision(o_base, p_ns, 'semaphore', p_name, 0);
  IF p_mode = 'wait' THEN
    PERFORM @s.collision(o_turnstile, p_ns, 'semaphore', p_name, -1);
    PERFORM pg_advisory_lock(o_turnstile);
  END IF;
  INSERT INTO @s.keys (key, namespace, kind, name, part, token, lim)
  VALUES (o_base, p_ns, 'semaphore', p_name, 0, 0, p_lim) ON CONFLICT (key) DO NOTHING;
  SELECT * INTO r FROM @s.keys WHERE key = o_base FOR UPDATE;
  IF (r.namespace, r.kind, r.name, r.part) IS DISTINCT FROM (p_ns, 'semaphore', p_name, 0) THEN
    PERFORM @s.collision(o_base, p_ns, 'semaphore', p_name, 0);
  END IF;
  IF r.lim IS DISTINCT FROM p_lim THEN
    IF EXISTS (SELECT 1 FROM @s.grants g JOIN pg_locks l
        ON l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid = g.pid
        AND ((l.classid::bigint << 32) | l.objid::bigint) = g.key
        WHERE g.sem = o_base AND g.pid <> o_pid) THEN
      IF p_mode = 'wait' THEN PERFORM pg_advisory_unlock(o_turnstile); END IF;
      RAISE EXCEPTION USING ERRCODE = 'BT002', MESSAGE = 'semaphore limit mismatch', DETAIL = r.lim::text;
    END IF;
    UPDATE @s.keys SET lim = p_lim WHERE key = o_base;
  END IF;
  FOR i IN 1 .. p_lim LOOP
    s := @s.key(p_ns, 'semaphore', p_name, i);
    IF pg_try_advisory_lock(s) THEN
      IF EXISTS (SELECT 1 FROM @s.keys k WHERE k.key = s
          AND (k.namespace, k.kind, k.name, k.part) IS DISTINCT FROM (p_ns, 'semaphore', p_name, i)) THEN
        PERFORM pg_advisory_unlock(s);
        IF p_mode <> 'try' THEN PERFORM pg_advisory_unlock(o_turnstile); END IF;
        PERFORM @s.collision(s, p_ns, 'semaphore', p_name, i);
      END IF;
      INSERT INTO @s.keys (key, namespace, kind, name, part) VALUES (s, p_ns, 'semaphore', p_name, i)
      ON CONFLICT (key) DO NOTHING;
      UPDATE @s.keys SET token = greatest(token, @s.epoch()) + 1 WHERE key = o_base RETURNING token INTO o_token;
      INSERT INTO @s.grants AS g (key, pid, namespace, sem, mode, token, since)
      VALUES (s, o_pid, p_ns, o_base, 'exclusive', o_token, @s.now_ms())
      ON CONFLICT (key, pid) DO UPDATE SET sem = excluded.sem, mode = excluded.mode, token = excluded.token, since = excluded.since;
      o_slot := s;
      IF p_mode <> 'try' THEN
        DELETE FROM @s.grants WHERE key = o_turnstile AND pid = o_pid;
        PERFORM pg_advisory_unlock(o_turnstile);
      END IF;
      RETURN;
    END IF;
  END LOOP;
  IF p_mode <> 'try' THEN
    o_head := true;
    INSERT INTO @s.grants AS g (key, pid, namespace, sem, mode, since)
    VALUES (o_turnstile, o_pid, p_ns, o_base, 'head', p_since)
    ON CONFLICT (key, pid) DO UPDATE SET sem = excluded.sem, mode = 'head', token = NULL, since = excluded.since;
  END IF;
END $$;

-- Frees every hold this backend has on p_key (cleanup after a cancelled or failed
-- acquisition; a lane never holds one key twice otherwise). Returns how many it freed.
CREATE FUNCTION @s.unlock_key(p_key bigint) RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int := 0; m text;
BEGIN
  FOR m IN SELECT l.mode FROM pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid = pg_backend_pid()
      AND ((l.classid::bigint << 32) | l.objid::bigint) = p_key LOOP
    IF m = 'ExclusiveLock' THEN PERFORM pg_advisory_unlock(p_key); ELSE PERFORM pg_advisory_unlock_shared(p_key); END IF;
    n := n + 1;
  END LOOP;
  DELETE FROM @s.grants WHERE key = p_key AND pid = pg_backend_pid();
  RETURN n;
END $$;

-- A head leaving the queue without a permit (cancelled), or cleanup after an error:
-- frees the turnstile and any permit of this semaphore the statement may have taken.
CREATE FUNCTION @s.sem_abort(p_base bigint, p_turnstile bigint) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE n int; k bigint;
BEGIN
  n := @s.unlock_key(p_turnstile);
  FOR k IN SELECT ((l.classid::bigint << 32) | l.objid::bigint) FROM pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid = pg_backend_pid() LOOP
    IF EXISTS (SELECT 1 FROM @s.keys s JOIN @s.keys b ON b.key = p_base
        WHERE s.key = k AND s.kind = 'semaphore' AND s.part > 0 AND s.namespace = b.namespace AND s.name = b.name) THEN
      n := n + @s.unlock_key(k);
    END IF;
  END LOOP;
  RETURN n;
END $$;

-- Frees a grant. For a semaphore permit, wakes the queue's head (if there is one) by NOTIFY.
CREATE FUNCTION @s.release(p_key bigint, p_shared bool, p_ns text, p_sem bigint, p_turnstile bigint,
  OUT o_pid int, OUT o_released bool)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  IF p_shared THEN o_released := pg_advisory_unlock_shared(p_key); ELSE o_released := pg_advisory_unlock(p_key); END IF;
  IF p_shared OR p_sem IS NOT NULL THEN
    DELETE FROM @s.grants WHERE key = p_key AND pid = o_pid;
  END IF;
  IF p_sem IS NOT NULL THEN
    -- The permit is free already: a head that scans after this sees it; one that scanned
    -- before holds the turnstile, so this try fails and it gets the NOTIFY.
    IF pg_try_advisory_lock(p_turnstile) THEN
      PERFORM pg_advisory_unlock(p_turnstile);
    ELSE
      PERFORM pg_notify(@s.channel(p_ns), json_build_object('t', 'sem', 'k', p_sem::text)::text);
    END IF;
  END IF;
END $$;

-- Upgrade, step 1: claim the lock's upgrade intent. A second shared holder asking while the
-- first waits would deadlock: it is refused at once instead (o_ok false).
CREATE FUNCTION @s.upgrade_begin(p_ns text, p_name text, OUT o_intent bigint, OUT o_ok bool, OUT o_pid int)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  o_intent := @s.key(p_ns, 'lock', p_name, -2);
  o_ok := pg_try_advisory_lock(o_intent);
END $$;

-- Upgrade, step 2: wait for exclusive while still holding shared (PostgreSQL queues a
-- request from a holder ahead of conflicting waiters), then drop shared, with a new token.
CREATE FUNCTION @s.upgrade_wait(p_key bigint, p_intent bigint, p_epoch bigint, OUT o_token bigint, OUT o_pid int)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  PERFORM pg_advisory_lock(p_key);
  INSERT INTO @s.holders AS h (key, namespace, kind, name, part, pid, token, since)
  SELECT key, namespace, kind, name, part, o_pid, p_epoch + nextval('@s.tokens'), @s.now_ms()
  FROM @s.keys WHERE key = p_key
  ON CONFLICT (key) DO UPDATE SET pid = excluded.pid, token = excluded.token, since = excluded.since
  RETURNING h.token INTO o_token;
  DELETE FROM @s.grants WHERE key = p_key AND pid = o_pid;
  PERFORM pg_advisory_unlock_shared(p_key);
  PERFORM pg_advisory_unlock(p_intent);
END $$;

-- After a cancelled or failed upgrade_wait: back to exactly shared (re-taking shared is
-- immediate while we hold exclusive), keeping the intent when p_keep_intent.
CREATE FUNCTION @s.upgrade_abort(p_key bigint, p_intent bigint, p_keep_intent bool, OUT o_shared bool, OUT o_pid int)
LANGUAGE plpgsql AS $$
DECLARE has_x bool; has_s bool;
BEGIN
  o_pid := pg_backend_pid();
  SELECT bool_or(mode = 'ExclusiveLock'), bool_or(mode = 'ShareLock') INTO has_x, has_s FROM pg_locks l
  WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid = o_pid
    AND ((l.classid::bigint << 32) | l.objid::bigint) = p_key;
  IF coalesce(has_x, false) AND NOT coalesce(has_s, false) THEN
    PERFORM pg_advisory_lock_shared(p_key);
    has_s := true;
  END IF;
  IF coalesce(has_x, false) THEN PERFORM pg_advisory_unlock(p_key); END IF;
  IF NOT p_keep_intent THEN PERFORM @s.unlock_key(p_intent); END IF;
  o_shared := coalesce(has_s, false);
  INSERT INTO @s.grants AS g (key, pid, namespace, mode, token, since)
  SELECT p_key, o_pid, namespace, 'shared', 0, @s.now_ms() FROM @s.keys WHERE key = p_key
  ON CONFLICT (key, pid) DO NOTHING;
END $$;

-- Downgrade: take shared (immediate while holding exclusive), drop exclusive; token kept.
CREATE FUNCTION @s.downgrade(p_key bigint, OUT o_pid int)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  PERFORM pg_advisory_lock_shared(p_key);
  PERFORM pg_advisory_unlock(p_key);
  INSERT INTO @s.grants AS g (key, pid, namespace, mode, token, since)
  SELECT p_key, o_pid, namespace, 'shared', token, since FROM @s.holders WHERE key = p_key AND pid = o_pid
  ON CONFLICT (key, pid) DO UPDATE SET mode = 'shared', token = excluded.token, since = excluded.since, sem = NULL;
END $$;
`;
