/**
 * Version 1 of the postgres backend's schema, part 1 of 3 (joined in `migrations.ts`): the
 * tables, and the helpers every statement uses (advisory keys, channels, token epochs,
 * crash recovery of the token counter, a lane's set-up, key collisions).
 *
 * @module
 */

/** Never edit: version 1 is released (add a migration instead). `@s` is the quoted schema. */
export const V1_TABLES = String.raw`
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
`;
