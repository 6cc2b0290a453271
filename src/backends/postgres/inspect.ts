import type { DriverSnapshot, LockMode, QueueKind, QueueSnapshot, RecordEntry } from "../../core/driver.js";
import type { Control } from "./control.js";
import { toEntry } from "./control.js";

interface LockRow {
  kind: string;
  name: string;
  part: number;
  pid: number;
  mode: string;
  granted: boolean;
  waitstart: string | null;
  session_id: string | null;
  member_id: string | null;
  h_token: string | null;
  h_since: string | null;
  g_token: string | null;
  g_since: string | null;
  g_mode: string | null;
}

interface SemRow {
  name: string;
  lim: number;
}

/**
 * Holders and waiters as PostgreSQL's lock manager sees them (`pg_locks`, advisory locks
 * granted or not), joined with Baton's registry of keys (names), its connection table
 * (member and session of each backend), its exclusive holders (tokens, times) and its grant
 * rows (shared holders and permits). One round trip.
 */
export async function inspect(control: Control, schema: string, namespace: string): Promise<DriverSnapshot> {
  const conn = await control.connection();
  const q = `"${schema}"`;
  const waitstart =
    conn.serverVersion >= 140000 ? "(extract(epoch FROM l.waitstart) * 1000)::float8::text" : "NULL::text";
  const result = await control.query<{
    locks: LockRow[];
    sems: SemRow[];
    records: (RecordEntryRow & { space: string })[];
  }>(
    `WITH l AS (
       SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key, l.pid, l.mode, l.granted, ${waitstart} AS waitstart
       FROM pg_locks l
       WHERE l.locktype = 'advisory' AND l.objsubid = 1
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     ), sems AS (
       SELECT key AS base, ${q}.key(namespace, kind, name, -1) AS turnstile, name, lim
       FROM ${q}.keys WHERE namespace = $1 AND kind = 'semaphore' AND part = 0
     ), named AS (
       SELECT l.*, k.kind, k.name, k.part FROM l JOIN ${q}.keys k ON k.key = l.key AND k.namespace = $1
       UNION ALL
       SELECT l.*, 'semaphore', s.name, -1 FROM l JOIN sems s ON s.turnstile = l.key
     )
     SELECT
       (SELECT coalesce(json_agg(json_build_object('kind', n.kind, 'name', n.name, 'part', n.part, 'pid', n.pid,
          'mode', n.mode, 'granted', n.granted, 'waitstart', n.waitstart, 'session_id', b.session_id,
          'member_id', b.member_id, 'h_token', h.token::text, 'h_since', h.since::text,
          'g_token', g.token::text, 'g_since', g.since::text, 'g_mode', g.mode)), '[]'::json)
        FROM named n
        LEFT JOIN ${q}.backends b ON b.pid = n.pid
        LEFT JOIN ${q}.holders h ON h.key = n.key AND h.pid = n.pid
        LEFT JOIN ${q}.grants g ON g.key = n.key AND g.pid = n.pid) AS locks,
       (SELECT coalesce(json_agg(json_build_object('name', name, 'lim', lim)), '[]'::json) FROM sems) AS sems,
       (SELECT coalesce(json_agg(json_build_object('space', space, 'key', key, 'value', value,
          'session_id', session_id, 'created_at', created_at) ORDER BY created_at, key), '[]'::json)
        FROM ${q}.records WHERE namespace = $1) AS records`,
    [namespace],
  );
  const row = result.rows[0];
  if (!row) return { queues: [], records: [] };
  return { queues: assemble(row.locks, row.sems), records: groupRecords(row.records) };
}

interface RecordEntryRow {
  key: string;
  value: string;
  session_id: string;
  created_at: string | number;
}

function groupRecords(rows: readonly (RecordEntryRow & { space: string })[]): DriverSnapshot["records"] {
  const spaces = new Map<string, RecordEntry[]>();
  for (const row of rows) {
    let list = spaces.get(row.space);
    if (!list) {
      list = [];
      spaces.set(row.space, list);
    }
    list.push(toEntry(row));
  }
  return [...spaces].map(([space, entries]) => ({ space, entries }));
}

interface Queue {
  kind: QueueKind;
  name: string;
  limit: number;
  holders: (QueueSnapshot["holders"][number] & { pid: number })[];
  waiters: (QueueSnapshot["waiters"][number] & { head: boolean })[];
}

function assemble(rows: readonly LockRow[], sems: readonly SemRow[]): QueueSnapshot[] {
  const now = Date.now();
  const limits = new Map(sems.map((s) => [s.name, s.lim]));
  const queues = new Map<string, Queue>();
  const queue = (kind: QueueKind, name: string): Queue => {
    const id = `${kind}\u0000${name}`;
    let found = queues.get(id);
    if (!found) {
      found = { kind, name, limit: kind === "semaphore" ? (limits.get(name) ?? 1) : 1, holders: [], waiters: [] };
      queues.set(id, found);
    }
    return found;
  };
  // A backend waiting for exclusive while it holds shared is upgrading: still a holder.
  const held = new Set(
    rows.filter((r) => r.granted).map((r) => `${r.kind}\u0000${r.name}\u0000${r.part}\u0000${r.pid}`),
  );
  for (const row of rows) {
    if (row.session_id === null || row.member_id === null) continue; // not one of Baton's connections
    if (row.kind !== "lock" && row.kind !== "election" && row.kind !== "semaphore") continue;
    const kind: QueueKind = row.kind;
    const who = { memberId: row.member_id, sessionId: row.session_id };
    if (kind === "semaphore" && row.part > 0) {
      if (!row.granted) continue;
      queue(kind, row.name).holders.push({
        ...who,
        pid: row.pid,
        mode: "exclusive",
        token: BigInt(row.g_token ?? "0"),
        since: Number(row.g_since ?? now),
      });
    } else if (kind === "semaphore" && row.part === -1) {
      if (row.granted && row.g_mode !== "head") continue; // a try passing through
      queue(kind, row.name).waiters.push({
        ...who,
        mode: "exclusive",
        since: Number((row.granted ? row.g_since : row.waitstart) ?? now),
        head: row.granted,
      });
    } else if (row.part === 0 && kind !== "semaphore") {
      const mode: LockMode = row.mode === "ShareLock" ? "shared" : "exclusive";
      if (row.granted) {
        queue(kind, row.name).holders.push({
          ...who,
          pid: row.pid,
          mode,
          token: BigInt((mode === "shared" ? row.g_token : row.h_token) ?? "0"),
          since: Number((mode === "shared" ? row.g_since : row.h_since) ?? now),
        });
      } else if (!held.has(`${row.kind}\u0000${row.name}\u0000${row.part}\u0000${row.pid}`)) {
        queue(kind, row.name).waiters.push({ ...who, mode, since: Number(row.waitstart ?? now), head: false });
      }
    }
  }
  return [...queues.values()].map((q) => ({
    kind: q.kind,
    name: q.name,
    limit: q.limit,
    holders: q.holders.sort((a, b) => a.since - b.since || a.pid - b.pid).map(({ pid: _pid, ...h }) => h),
    waiters: q.waiters
      .sort((a, b) => Number(b.head) - Number(a.head) || a.since - b.since)
      .map(({ head: _head, ...w }) => ({ ...w, since: Math.floor(w.since) })),
  }));
}

/**
 * Every namespace with a lock held or awaited (an advisory lock in `pg_locks` of a
 * registered key) or a record. One round trip.
 */
export async function namespaces(control: Control, schema: string): Promise<string[]> {
  const q = `"${schema}"`;
  const result = await control.query<{ namespace: string }>(
    `SELECT DISTINCT k.namespace FROM pg_locks l
       JOIN ${q}.keys k ON k.key = ((l.classid::bigint << 32) | l.objid::bigint)
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     UNION
     SELECT DISTINCT namespace FROM ${q}.records`,
    [],
  );
  return result.rows.map((row) => row.namespace);
}
