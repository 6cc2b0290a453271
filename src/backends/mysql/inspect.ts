import { sleep } from "../../core/abortable.js";
import type { DriverSnapshot, QueueKind, QueueSnapshot, RecordEntry } from "../../core/driver.js";
import type { Control } from "./control.js";

interface EntryRow {
  kind: string;
  name: string;
  lim: number;
  mode: string;
  token: string | null;
  since: string | number;
  session_id: string;
  member_id: string;
}

interface RecordRow {
  space: string;
  rname: string;
  value: string;
  session_id: string;
  created_at: string | number;
}

const LIVE = "IS_USED_LOCK(e.lock_key) IS NOT NULL";
const LIVE_SESSION = "s.expires_at >= ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000)";

/**
 * Holders and waiters (live entries: their connection still holds their key) in arrival
 * order, and records of live sessions. Two statements on the control connection.
 */
export async function inspect(control: Control, prefix: string, namespace: string): Promise<DriverSnapshot> {
  const [entries, records] = await Promise.all([
    control.query<EntryRow>(
      `SELECT q.kind, q.name, q.lim, e.mode, e.token, e.since, e.session_id, e.member_id
       FROM ${prefix}entries e JOIN ${prefix}queues q ON q.qid = e.qid
       WHERE q.namespace = ? AND ${LIVE} ORDER BY q.qid, e.id`,
      [namespace],
    ),
    control.query<RecordRow>(
      `SELECT r.space, r.rname, r.value, r.session_id, r.created_at FROM ${prefix}records r
       JOIN ${prefix}sessions s ON s.id = r.session_id AND ${LIVE_SESSION}
       WHERE r.namespace = ? ORDER BY r.created_at, r.rname`,
      [namespace],
    ),
  ]);
  const queues = new Map<string, { kind: QueueKind; name: string; limit: number } & Mutable>();
  for (const row of entries) {
    if (row.kind !== "lock" && row.kind !== "semaphore" && row.kind !== "election") continue;
    const id = `${row.kind}\u0000${row.name}`;
    let queue = queues.get(id);
    if (!queue) {
      queue = {
        kind: row.kind,
        name: row.name,
        limit: row.kind === "semaphore" ? row.lim : 1,
        holders: [],
        waiters: [],
      };
      queues.set(id, queue);
    }
    const who = { memberId: row.member_id, sessionId: row.session_id, since: Number(row.since) };
    // A pending upgrade still holds its shared lock.
    const mode = row.mode === "exclusive" ? "exclusive" : "shared";
    if (row.token !== null) queue.holders.push({ ...who, mode, token: BigInt(row.token) });
    else queue.waiters.push({ ...who, mode });
  }
  const spaces = new Map<string, RecordEntry[]>();
  for (const row of records) {
    let list = spaces.get(row.space);
    if (!list) {
      list = [];
      spaces.set(row.space, list);
    }
    list.push({ key: row.rname, value: row.value, sessionId: row.session_id, createdAt: Number(row.created_at) });
  }
  return {
    queues: [...queues.values()] as QueueSnapshot[],
    records: [...spaces].map(([space, list]) => ({ space, entries: list })),
  };
}

interface Mutable {
  holders: QueueSnapshot["holders"][number][];
  waiters: QueueSnapshot["waiters"][number][];
}

/** Every namespace with a live entry (holder or waiter) or a live record. */
export async function namespaces(control: Control, prefix: string): Promise<string[]> {
  const rows = await control.query<{ namespace: string }>(
    `SELECT DISTINCT q.namespace FROM ${prefix}entries e JOIN ${prefix}queues q ON q.qid = e.qid WHERE ${LIVE}
     UNION
     SELECT DISTINCT r.namespace FROM ${prefix}records r JOIN ${prefix}sessions s ON s.id = r.session_id
       AND ${LIVE_SESSION}`,
  );
  return rows.map((row) => row.namespace).sort();
}

/** How long a revoke waits for the server to end the killed connections. */
const REVOKE_WAIT_MS = 5000;

/**
 * Marks session `sessionId` revoked: its heartbeats renew nothing from now on (the row lock
 * orders the mark against them), so its client's own deadline passes within what is left
 * of its lease, which this returns (server clock), or `null` when the session is gone.
 */
export async function fenceSession(control: Control, prefix: string, sessionId: string): Promise<number | null> {
  await control.query(`UPDATE ${prefix}sessions SET revoked = 1 WHERE id = ?`, [sessionId]);
  const [row] = await control.query<{ left: string | number }>(
    `SELECT expires_at - ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS \`left\` FROM ${prefix}sessions WHERE id = ?`,
    [sessionId],
  );
  return row === undefined ? null : Math.max(0, Number(row.left));
}

/**
 * Ends session `sessionId` as if its process had died: kills its lock connections, waits
 * until the server no longer has them (so their GET_LOCKs are free), then deletes its
 * records (one by one, so watchers are told) and its row. Already gone: nothing to do.
 */
export async function revokeSession(control: Control, prefix: string, sessionId: string): Promise<void> {
  const lanes = await control.query<{ conn: string | number }>(`SELECT conn FROM ${prefix}lanes WHERE session_id = ?`, [
    sessionId,
  ]);
  const conns: number[] = [];
  for (const row of lanes) if (await control.killLane(Number(row.conn))) conns.push(Number(row.conn));
  const deadline = Date.now() + REVOKE_WAIT_MS;
  while (conns.length > 0 && Date.now() < deadline) {
    const [left] = await control.query<{ n: string | number }>(
      `SELECT COUNT(*) AS n FROM information_schema.processlist WHERE id IN (${conns.map(() => "?").join(", ")})`,
      conns,
    );
    if (Number(left?.n ?? 0) === 0) break;
    await sleep(20);
  }
  await control.query(`DELETE FROM ${prefix}lanes WHERE session_id = ?`, [sessionId]);
  await control.query(`DELETE FROM ${prefix}records WHERE session_id = ?`, [sessionId]);
  await control.query(`DELETE FROM ${prefix}sessions WHERE id = ?`, [sessionId]);
}
