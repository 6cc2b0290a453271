import { UnsupportedError } from "../../core/errors.js";
import { ControlLink } from "../sql/control-link.js";
import { type CreateConnection, MyConnection } from "./connection.js";
import type { MysqlSettings } from "./options.js";
import { migrate } from "./schema.js";
import { BACKEND } from "./options.js";

/**
 * The coordinator's control connection: heartbeats, records, cells, inspection and killing
 * waits on other connections. It never holds a lock and never blocks, so it is always free
 * for those. Reconnects on demand; the first connection migrates the tables and refuses a
 * Galera cluster.
 */
export class Control {
  readonly #link: ControlLink<MyConnection>;
  readonly #prefix: string;

  constructor(create: CreateConnection, settings: MysqlSettings, ttlMs: number) {
    this.#prefix = settings.prefix;
    let checked = false;
    this.#link = new ControlLink<MyConnection>(
      {
        open: () => MyConnection.open(create, settings.client, ttlMs),
        setup: async (connection) => {
          if (checked) return;
          await refuseGalera(connection);
          await migrate(connection, settings.prefix);
          checked = true;
        },
      },
      ttlMs,
    );
  }

  /** Default timeout of a control statement: a third of the TTL, at least 1 s. */
  get timeoutMs(): number {
    return this.#link.timeoutMs;
  }

  /** The connected control connection, connecting (and migrating, the first time) if needed. */
  connection(): Promise<MyConnection> {
    return this.#link.connection();
  }

  /** Runs a statement on the control connection (reconnecting if needed), with a timeout. */
  async query<R>(sql: string, params: readonly unknown[] = [], timeoutMs = this.timeoutMs): Promise<R[]> {
    const connection = await this.connection();
    return connection.query<R>(sql, params, timeoutMs);
  }

  /**
   * Interrupts connection `id`'s statement (a wait in GET_LOCK). The caller sends nothing
   * else on that connection until this resolves: the server clears a KILL QUERY that finds
   * the connection idle before its next statement, so a late one cannot hit that statement.
   */
  async interrupt(id: number): Promise<void> {
    await this.query(`KILL QUERY ${Number(id)}`, [], 2000).catch((error: unknown) => {
      // 1094: no such thread (it is gone already, which ends its wait too).
      if ((error as { errno?: number }).errno !== 1094) throw error;
    });
  }

  /** Ends connection `id` (an expired session's, or one blocked in a wait at close). */
  async kill(id: number): Promise<void> {
    await this.query(`KILL CONNECTION ${Number(id)}`, [], 2000).catch(() => {});
  }

  /**
   * Ends connection `id` of a `lanes` row (an expired or revoked session's) if it is still
   * that lane: it holds the `GET_LOCK` of an entry recorded for it. A row can outlive its
   * server (a restart numbers connections from 1 again, and the tables keep the row), and
   * its id may then name a connection of someone else, even of another application, which
   * is left alone. A lane holding nothing frees nothing when killed. Resolves whether it
   * was killed; never rejects (a sweep is best-effort).
   */
  async killLane(id: number): Promise<boolean> {
    try {
      const held = await this.query(
        `SELECT 1 AS held FROM ${this.#prefix}entries WHERE conn = ? AND IS_USED_LOCK(lock_key) = ? LIMIT 1`,
        [id, id],
        2000,
      );
      if (held.length === 0) return false;
      await this.kill(id);
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves once {@link close} has finished. */
  get closed(): Promise<void> {
    return this.#link.closed;
  }

  /** Closes the connection for good. */
  close(): Promise<void> {
    return this.#link.close();
  }
}

/**
 * Galera (MariaDB Galera Cluster, Percona XtraDB Cluster) does not replicate GET_LOCK: two
 * clients on two nodes would both hold one lock. Refused at connect time.
 */
async function refuseGalera(connection: MyConnection): Promise<void> {
  const rows = await connection.query<{ Variable_name: string; Value: string }>(
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_provider')",
  );
  const reason = galeraReason(Object.fromEntries(rows.map((r) => [r.Variable_name, r.Value])));
  if (reason) throw new UnsupportedError(reason, { backend: BACKEND });
}

/**
 * Why the server's `wsrep` variables show a Galera node (`null` when they do not): GET_LOCK,
 * which every Baton grant rests on, is local to one node.
 */
export function galeraReason(variables: Readonly<Record<string, string>>): string | null {
  const on = (variables.wsrep_on ?? "").toUpperCase();
  const provider = (variables.wsrep_provider ?? "none").trim().toLowerCase();
  if (on !== "ON" && on !== "1") return null;
  return `the server is a Galera cluster node (wsrep_on=ON, wsrep_provider=${provider || "none"}): Galera does not replicate GET_LOCK, so clients on two nodes could hold one lock at once. Connect to a single MySQL/MariaDB server (or a primary with asynchronous replicas), or use etcd or ZooKeeper for a replicated lock service`;
}
