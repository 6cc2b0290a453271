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
];
