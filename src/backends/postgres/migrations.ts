/**
 * The SQL of the postgres backend: the objects it creates in its own schema, one migration
 * per version (applied by `schema.ts`). Version 1 is in three files: the tables and helpers
 * (`migration-v1-tables.ts`), the granting statements, which carry out the granting rule
 * (`migration-v1-grants.ts`), and session expiry and notifications
 * (`migration-v1-sessions.ts`).
 *
 * @module
 */
import { V1_GRANTS } from "./migration-v1-grants.js";
import { V1_SESSIONS } from "./migration-v1-sessions.js";
import { V1_TABLES } from "./migration-v1-tables.js";

/**
 * One migration per version, applied in order inside one transaction that holds an
 * advisory transaction lock, so that clients starting together migrate once. `@s` is the
 * quoted schema, `@lit` the schema as a string literal. Never edit a released version:
 * add a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // v1, in three files, joined into the one string that was released
  V1_TABLES + V1_GRANTS + V1_SESSIONS,
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
  // v5
  `
-- A tracked grant's record costs one in-place (heap-only) update each way: a clean release
-- leaves the record's row as a tombstone (value NULL), as any deleted cell, so the next grant
-- of the name rewrites that row instead of inserting a row and an index entry (and the
-- release deleting them). The rows number the lock names ever tracked, like the key
-- registry. The grant is also one function now (v4 called lock_acquire() from it), and its
-- and the release's set_config() are expressions, not queries.
CREATE OR REPLACE FUNCTION @s.lock_acquire_tracked(p_key bigint, p_ns text, p_kind text, p_name text, p_wait bool,
  p_epoch bigint, p_record text, OUT o_token bigint, OUT o_pid int, OUT o_version bigint,
  OUT o_found_value text, OUT o_found_version bigint, OUT o_found_fence bigint)
LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
  o_pid := pg_backend_pid();
  IF p_wait THEN
    PERFORM @s.collision(p_key, p_ns, p_kind, p_name, 0);
    PERFORM pg_advisory_lock(p_key);
  ELSIF NOT pg_try_advisory_lock(p_key) THEN
    PERFORM @s.collision(p_key, p_ns, p_kind, p_name, 0);
    RETURN;
  END IF;
  UPDATE @s.holders h SET pid = o_pid, token = p_epoch + nextval('@s.tokens'), since = @s.now_ms()
  WHERE h.key = p_key AND h.namespace = p_ns AND h.kind = p_kind AND h.name = p_name AND h.part = 0
  RETURNING h.token INTO o_token;
  IF NOT FOUND THEN o_token := @s.granted(p_key, p_ns, p_kind, p_name, false, p_epoch, o_pid); END IF;
  v := set_config('synchronous_commit', 'off', true);
  v := left(p_record, -1) || ',"t":"' || o_token || '","at":' || @s.now_ms() || '}';
  UPDATE @s.cells c SET value = v, version = nextval('@s.cell_versions'), fence = GREATEST(c.fence, o_token)
  WHERE c.namespace = p_ns AND c.space = 'takeover' AND c.key = p_name AND c.value IS NULL
  RETURNING c.version INTO o_version;
  IF FOUND THEN RETURN; END IF;
  -- The name's first tracked grant, or a live record (the previous holding was lost).
  INSERT INTO @s.cells AS c (namespace, space, key, value, version, fence)
  VALUES (p_ns, 'takeover', p_name, v, nextval('@s.cell_versions'), o_token)
  ON CONFLICT (namespace, space, key) DO UPDATE
    SET value = EXCLUDED.value, version = EXCLUDED.version, fence = GREATEST(c.fence, EXCLUDED.fence)
    WHERE c.value IS NULL
  RETURNING c.version INTO o_version;
  IF o_version IS NULL THEN
    SELECT c.value, c.version, c.fence INTO o_found_value, o_found_version, o_found_fence
    FROM @s.cells c WHERE c.namespace = p_ns AND c.space = 'takeover' AND c.key = p_name;
  END IF;
END $$;
-- Kept for clients of v4 (this version's clients release with one plain statement,
-- postgres/session.ts): the same tombstone.
CREATE OR REPLACE FUNCTION @s.lock_release_tracked(p_key bigint, p_ns text, p_name text, p_version bigint,
  OUT o_released bool, OUT o_pid int)
LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
  v := set_config('synchronous_commit', 'off', true);
  UPDATE @s.cells SET value = NULL, version = nextval('@s.cell_versions')
  WHERE namespace = p_ns AND space = 'takeover' AND key = p_name AND version = p_version;
  o_released := pg_advisory_unlock(p_key);
  o_pid := pg_backend_pid();
END $$;
`,
];
