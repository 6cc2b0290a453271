/**
 * The SQL of the postgres backend: the objects it creates in its own schema, one migration
 * per version (applied by `schema.ts`). The granting rule (`src/core/grant-rule.ts`) is
 * carried out here by the server's lock manager: an advisory lock's wait queue is FIFO and
 * a request that conflicts with a queued one waits (readers behind an earlier writer),
 * semaphore permits queue on a turnstile, and an upgrade takes an intent key first (a
 * second upgrader is refused). The conformance suite replays the rule's table
 * (`test/grant-rule-cases.ts`) through this backend.
 *
 * @module
 */

/**
 * One migration per version, applied in order inside one transaction that holds an
 * advisory transaction lock, so that clients starting together migrate once. `@s` is the
 * quoted schema, `@lit` the schema as a string literal. Never edit a released version:
 * add a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // v1
  String.raw`
-- Registry of every advisory key Baton uses, with the name it stands for (collisions on the
-- 64-bit key are detected, never silent), and for semaphores the fencing counter and the
-- limit. Written once per key (semaphores: per grant), never per lock grant.
CREATE TABLE @s.keys (
  key bigint PRIMARY KEY,
  namespace text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  part int NOT NULL,
  token bigint NOT NULL DEFAULT 0,
  lim int
);
-- Fencing counter of locks and elections: one sequence for all names, so tokens increase
-- per name too. nextval() is not transactional and WAL-logs only every 32nd value, so a
-- grant writes nothing durable; see recover() for crashes.
CREATE SEQUENCE @s.tokens;
-- The last exclusive grant of each lock/election key (a copy of its registry names, the
-- holder's backend, token and time), for inspect(). One row per key, updated in place by
-- every exclusive grant, never deleted on release: rows whose pid does not hold the key are
-- stale and ignored. Unlogged: grants die with their connections, so with the server.
CREATE UNLOGGED TABLE @s.holders (
  key bigint PRIMARY KEY,
  namespace text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  part int NOT NULL,
  pid int NOT NULL,
  token bigint NOT NULL,
  since bigint NOT NULL
);
-- Empty after a crash (unlogged tables are reset by crash recovery, kept by a clean
-- shutdown): tells recover() to move the token sequence past values a crash may have lost.
CREATE UNLOGGED TABLE @s.alive (ok bool PRIMARY KEY);
CREATE TABLE @s.sessions (
  id text PRIMARY KEY,
  namespace text NOT NULL,
  member_id text NOT NULL,
  ttl_ms int NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_expires_at ON @s.sessions (expires_at);
-- Which session a lock-holding connection (backend pid) serves. Unlogged: a crash ends
-- every connection anyway.
CREATE UNLOGGED TABLE @s.backends (
  pid int PRIMARY KEY,
  backend_start timestamptz,
  session_id text NOT NULL,
  member_id text NOT NULL
);
CREATE INDEX backends_session ON @s.backends (session_id);
-- Shared-lock holders, semaphore permits and semaphore queue heads: token and time of
-- each grant, for inspect() and for waking semaphore waiters when a holder dies.
CREATE UNLOGGED TABLE @s.grants (
  key bigint NOT NULL,
  pid int NOT NULL,
  namespace text NOT NULL,
  sem bigint,
  mode text NOT NULL,
  token bigint,
  since bigint NOT NULL,
  PRIMARY KEY (key, pid)
);
CREATE TABLE @s.records (
  namespace text NOT NULL,
  space text NOT NULL,
  key text NOT NULL,
  value text NOT NULL,
  session_id text NOT NULL REFERENCES @s.sessions (id) ON DELETE CASCADE,
  created_at bigint NOT NULL,
  PRIMARY KEY (namespace, space, key)
);
CREATE INDEX records_session ON @s.records (session_id);

CREATE FUNCTION @s.now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- 64-bit advisory key of (schema, namespace, kind, name, part): the first 8 bytes of a
-- SHA-256. The schema is part of it because advisory locks are per database.
CREATE FUNCTION @s.key(p_ns text, p_kind text, p_name text, p_part int) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ('x' || left(encode(sha256(convert_to(
    @lit || E'\x1f' || p_ns || E'\x1f' || p_kind || E'\x1f' || p_name || E'\x1f' || p_part::text,
    'UTF8')), 'hex'), 16))::bit(64)::bigint
$$;

-- LISTEN/NOTIFY channel of a namespace (channel names are limited to 63 bytes).
CREATE FUNCTION @s.channel(p_ns text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT 'baton_' || left(encode(sha256(convert_to(@lit || E'\x1f' || p_ns, 'UTF8')), 'hex'), 24)
$$;

-- Fencing tokens are (timeline << 44) + counter: a promoted replica starts a new timeline,
-- so tokens keep increasing across a failover even if the last counter bumps were not
-- replicated (as long as counters stay below 2^44 and timelines below 2^19).
CREATE FUNCTION @s.epoch() RETURNS bigint LANGUAGE sql VOLATILE AS $$
  SELECT ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::bigint << 44
$$;

-- A crash can lose the last sequence increments that were handed out but not yet flushed:
-- nextval() WAL-logs 32 values ahead, and a value taken from the batch logged by a
-- transaction that has not flushed yet is not covered by that record on disk. Such records
-- are flushed when their transaction commits (Baton's connections never commit
-- asynchronously), so few can be pending at once; after a crash, before any grant, the
-- sequence is moved 2^20 ahead. Every lane runs this when it connects, so every grant
-- after a crash comes after it.
CREATE FUNCTION @s.recover() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM @s.alive) THEN
    PERFORM pg_advisory_xact_lock(@s.key('', 'recover', '', 0));
    IF NOT EXISTS (SELECT 1 FROM @s.alive) THEN
      PERFORM setval('@s.tokens', nextval('@s.tokens') + 1048576);
      INSERT INTO @s.alive VALUES (true);
    END IF;
  END IF;
END $$;

-- A new lane: records which session its backend serves, makes sure the token sequence is
-- past a crash, and returns the token prefix (a primary's timeline never changes while a
-- connection to it lasts; standbys are refused).
CREATE FUNCTION @s.lane_setup(p_session text, p_member text, OUT o_pid int, OUT o_epoch bigint)
LANGUAGE plpgsql AS $$
BEGIN
  o_pid := pg_backend_pid();
  INSERT INTO @s.backends (pid, backend_start, session_id, member_id)
  SELECT pid, backend_start, p_session, p_member FROM pg_stat_activity WHERE pid = o_pid
  ON CONFLICT (pid) DO UPDATE SET backend_start = excluded.backend_start,
    session_id = excluded.session_id, member_id = excluded.member_id;
  PERFORM @s.recover();
  o_epoch := @s.epoch();
END $$;

CREATE FUNCTION @s.collision(p_key bigint, p_ns text, p_kind text, p_name text, p_part int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  SELECT namespace, kind, name, part INTO r FROM @s.keys WHERE key = p_key;
  IF FOUND AND (r.namespace, r.kind, r.name, r.part) IS DISTINCT FROM (p_ns, p_kind, p_name, p_part) THEN
    RAISE EXCEPTION USING ERRCODE = 'BT001', MESSAGE = 'advisory key collision',
      DETAIL = json_build_object('namespace', r.namespace, 'kind', r.kind, 'name', r.name, 'part', r.part)::text;
  END IF;
END $$;

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

-- Ends sessions whose lease ran out (their connections are terminated, their records
-- deleted, which notifies watchers) and forgets grants of connections that are gone,
-- waking the semaphore queues they were in. Any client runs it with its heartbeat.
CREATE FUNCTION @s.sweep() RETURNS void LANGUAGE plpgsql AS $$
DECLARE expired text[]; r record;
BEGIN
  WITH gone AS (
    DELETE FROM @s.sessions WHERE id IN (
      SELECT id FROM @s.sessions WHERE expires_at < now() ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED)
    RETURNING id)
  SELECT array_agg(id) INTO expired FROM gone;
  IF expired IS NOT NULL THEN
    PERFORM pg_terminate_backend(b.pid) FROM @s.backends b
      JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.backend_start
      WHERE b.session_id = ANY (expired);
    DELETE FROM @s.backends WHERE session_id = ANY (expired);
  END IF;
  FOR r IN DELETE FROM @s.grants g WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = g.pid)
      RETURNING g.namespace, g.sem LOOP
    IF r.sem IS NOT NULL THEN
      PERFORM pg_notify(@s.channel(r.namespace), json_build_object('t', 'sem', 'k', r.sem::text)::text);
    END IF;
  END LOOP;
  DELETE FROM @s.backends b WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = b.pid);
END $$;

-- Renews a session's lease (from the server's clock: it cannot expire before the client's
-- own deadline), reports which of its connections the server still has, and sweeps.
CREATE FUNCTION @s.heartbeat(p_session text, p_ttl_ms int, p_lanes int[], OUT o_alive bool, OUT o_lanes int[])
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE @s.sessions SET expires_at = now() + p_ttl_ms * interval '1 millisecond' WHERE id = p_session;
  o_alive := FOUND;
  o_lanes := ARRAY(SELECT pid FROM pg_stat_activity WHERE pid = ANY (p_lanes));
  PERFORM @s.sweep();
END $$;

-- Pushes record changes to the namespace's channel. The transaction id lets a watcher drop
-- events already contained in its snapshot; values too big for a NOTIFY are fetched.
CREATE FUNCTION @s.records_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE payload text;
BEGIN
  IF TG_OP = 'DELETE' THEN
    payload := json_build_object('t', 'del', 's', OLD.space, 'k', OLD.key, 'x', txid_current()::text)::text;
    PERFORM pg_notify(@s.channel(OLD.namespace), payload);
    RETURN NULL;
  END IF;
  payload := json_build_object('t', 'put', 's', NEW.space, 'k', NEW.key, 'x', txid_current()::text,
    'id', NEW.session_id, 'c', NEW.created_at, 'v', NEW.value)::text;
  IF octet_length(payload) > 7800 THEN
    payload := json_build_object('t', 'put', 's', NEW.space, 'k', NEW.key, 'x', txid_current()::text,
      'big', true)::text;
  END IF;
  PERFORM pg_notify(@s.channel(NEW.namespace), payload);
  RETURN NULL;
END $$;
CREATE TRIGGER records_notify AFTER INSERT OR UPDATE OR DELETE ON @s.records
  FOR EACH ROW EXECUTE FUNCTION @s.records_notify();
`,
  // v2
  `
-- Versions of cells: one sequence for all, so a cell's version increases across delete and
-- re-create. Every write takes nextval() after it has locked the row, so the later of two
-- writers of a row always gets the higher version.
CREATE SEQUENCE @s.cell_versions;
-- Durable versioned keys (cells, and other durable records in spaces of their own). A
-- deleted key keeps its row with value NULL: its version and its highest fence live on.
CREATE TABLE @s.cells (
  namespace text NOT NULL,
  space text NOT NULL,
  key text NOT NULL,
  value text,
  version bigint NOT NULL,
  fence bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (namespace, space, key)
);
-- Tells watchers which cell changed; they read it (values may exceed a NOTIFY payload).
CREATE FUNCTION @s.cells_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(@s.channel(NEW.namespace),
    json_build_object('t', 'cell', 's', NEW.space, 'k', NEW.key)::text);
  RETURN NULL;
END $$;
CREATE TRIGGER cells_notify AFTER INSERT OR UPDATE ON @s.cells
  FOR EACH ROW EXECUTE FUNCTION @s.cells_notify();
`,
  // v3
  `
-- An operator's revoke marks the session first (its heartbeat then fails, so its client's
-- signals fire) and frees its holdings only once its deadline must have passed.
ALTER TABLE @s.sessions ADD COLUMN revoked boolean NOT NULL DEFAULT false;
CREATE OR REPLACE FUNCTION @s.heartbeat(p_session text, p_ttl_ms int, p_lanes int[], OUT o_alive bool, OUT o_lanes int[])
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE @s.sessions SET expires_at = now() + p_ttl_ms * interval '1 millisecond'
    WHERE id = p_session AND NOT revoked;
  o_alive := FOUND;
  o_lanes := ARRAY(SELECT pid FROM pg_stat_activity WHERE pid = ANY (p_lanes));
  PERFORM @s.sweep();
END $$;
`,
  // v4
  `
-- Takeover records (src/core/takeover.ts: cells of the space 'takeover', one per lock
-- name) written with an exclusive lock grant and deleted with its release, in the grant's
-- and the release's own statement. The record is sealed as core/driver.ts sealRecord says.
-- Its commit is asynchronous: it survives its holder's death at once (the server has it),
-- while a crash of the server itself may lose the last moments' records (but not a cell).
CREATE FUNCTION @s.lock_acquire_tracked(p_key bigint, p_ns text, p_kind text, p_name text, p_wait bool,
  p_epoch bigint, p_record text, OUT o_token bigint, OUT o_pid int, OUT o_version bigint,
  OUT o_found_value text, OUT o_found_version bigint, OUT o_found_fence bigint)
LANGUAGE plpgsql AS $$
BEGIN
  SELECT a.o_token, a.o_pid INTO o_token, o_pid FROM @s.lock_acquire(p_key, p_ns, p_kind, p_name, false, p_wait, p_epoch) a;
  IF o_token IS NULL THEN RETURN; END IF;
  PERFORM set_config('synchronous_commit', 'off', true);
  INSERT INTO @s.cells AS c (namespace, space, key, value, version, fence)
  VALUES (p_ns, 'takeover', p_name, left(p_record, -1) || ',"t":"' || o_token || '","at":' || @s.now_ms() || '}',
    nextval('@s.cell_versions'), o_token)
  ON CONFLICT (namespace, space, key) DO UPDATE
    SET value = EXCLUDED.value, version = EXCLUDED.version, fence = GREATEST(c.fence, EXCLUDED.fence)
    WHERE c.value IS NULL
  RETURNING c.version INTO o_version;
  IF o_version IS NULL THEN
    SELECT c.value, c.version, c.fence INTO o_found_value, o_found_version, o_found_fence
    FROM @s.cells c WHERE c.namespace = p_ns AND c.space = 'takeover' AND c.key = p_name;
  END IF;
END $$;
-- The clean release of a tracked exclusive grant: its record goes if still at the version
-- it claimed, with no tombstone (the lock itself fences the record's writers, and a row
-- per lock name ever used would only accumulate), then the lock.
CREATE FUNCTION @s.lock_release_tracked(p_key bigint, p_ns text, p_name text, p_version bigint,
  OUT o_released bool, OUT o_pid int)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  DELETE FROM @s.cells WHERE namespace = p_ns AND space = 'takeover' AND key = p_name AND version = p_version;
  o_released := pg_advisory_unlock(p_key);
  o_pid := pg_backend_pid();
END $$;
-- Nobody watches takeover records; a NOTIFY with each grant would only cost.
DROP TRIGGER cells_notify ON @s.cells;
CREATE TRIGGER cells_notify AFTER INSERT OR UPDATE ON @s.cells
  FOR EACH ROW WHEN (NEW.space <> 'takeover') EXECUTE FUNCTION @s.cells_notify();
`,
];
