/**
 * Version 1 of the postgres backend's schema, part 3 of 3 (joined in `migrations.ts`):
 * session expiry, the heartbeat, and the records' change notifications.
 *
 * @module
 */

/** Never edit: version 1 is released (add a migration instead). `@s` is the quoted schema. */
export const V1_SESSIONS = `
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
`;
