/**
 * The tables and procedures the mysql backend creates in the URL's database, as versioned
 * migrations. The table prefix is the only thing ever put into SQL text: it is validated as
 * a plain lower-case identifier (see options.ts). Every name and value is a parameter.
 *
 * How a grant works (see docs/backends/mysql.md): every request is a row of `entries`
 * whose connection holds a `GET_LOCK` on the row's random `lock_key`, so the row lives
 * exactly as long as that connection (a dead connection's rows are deleted by whoever
 * meets them). A request is granted by the queue's granting rule, evaluated under the
 * queue row's InnoDB lock; a waiter sleeps server-side in `GET_LOCK` on the key of the
 * entry it waits for, and wakes when that entry's connection releases it or dies.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { PROCEDURES_V1, PROCEDURES_V2 } from "./procedures.js";
import { PROCEDURES_V3 } from "./procedures-v3.js";
import { PROCEDURES_V4 } from "./procedures-v4.js";
import { PROCEDURES_V5 } from "./procedures-v5.js";

/**
 * One migration per version, applied in order under `GET_LOCK` (DDL commits implicitly in
 * MySQL, so a transaction cannot serialise it). `@p` is the table prefix. Never edit a
 * released version: add a new one.
 */
const MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE IF NOT EXISTS @psessions (
      id CHAR(36) NOT NULL PRIMARY KEY,
      namespace VARCHAR(512) NOT NULL,
      member_id VARCHAR(512) NOT NULL,
      ttl_ms INT NOT NULL,
      expires_at BIGINT NOT NULL,
      KEY (expires_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    // Which session a lock-holding connection serves, so an expired session's connections
    // can be killed (their GET_LOCKs, and so their grants, end with them).
    `CREATE TABLE IF NOT EXISTS @planes (
      conn BIGINT UNSIGNED NOT NULL PRIMARY KEY,
      session_id CHAR(36) NOT NULL,
      KEY (session_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    // One row per (namespace, kind, name), never deleted: the registry of hashed names (a
    // different name under the same hash is refused) and the fencing counter.
    `CREATE TABLE IF NOT EXISTS @pqueues (
      qid BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      qkey BINARY(32) NOT NULL UNIQUE,
      namespace VARCHAR(512) NOT NULL,
      kind VARCHAR(16) NOT NULL,
      name TEXT NOT NULL,
      token BIGINT UNSIGNED NOT NULL DEFAULT 0,
      lim INT NOT NULL DEFAULT 1
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    // Holders (token set) and waiters (token NULL) in arrival order (id).
    `CREATE TABLE IF NOT EXISTS @pentries (
      id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      qid BIGINT NOT NULL,
      lock_key VARCHAR(64) NOT NULL,
      conn BIGINT UNSIGNED NOT NULL,
      session_id CHAR(36) NOT NULL,
      member_id VARCHAR(512) NOT NULL,
      mode VARCHAR(10) NOT NULL,
      token BIGINT UNSIGNED NULL,
      since BIGINT NOT NULL,
      KEY (qid, id),
      UNIQUE KEY (lock_key)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE IF NOT EXISTS @precords (
      rkey BINARY(32) NOT NULL PRIMARY KEY,
      sp BINARY(32) NOT NULL,
      namespace VARCHAR(512) NOT NULL,
      space TEXT NOT NULL,
      rname TEXT NOT NULL,
      value LONGTEXT NOT NULL,
      session_id CHAR(36) NOT NULL,
      created_at BIGINT NOT NULL,
      KEY (sp, created_at),
      CONSTRAINT @precords_session FOREIGN KEY (session_id) REFERENCES @psessions (id) ON DELETE CASCADE
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    // The change log of records, written by triggers, read by watches (MySQL has no
    // LISTEN/NOTIFY): every put and delete, in commit order per key. Pruned by heartbeats.
    `CREATE TABLE IF NOT EXISTS @precord_events (
      seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      sp BINARY(32) NOT NULL,
      op CHAR(3) NOT NULL,
      rname TEXT NOT NULL,
      value LONGTEXT NULL,
      session_id CHAR(36) NULL,
      created_at BIGINT NULL,
      at BIGINT NOT NULL,
      KEY (sp, seq),
      KEY (at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    "DROP TRIGGER IF EXISTS @precords_put",
    `CREATE TRIGGER @precords_put AFTER INSERT ON @precords FOR EACH ROW
      INSERT INTO @precord_events (sp, op, rname, value, session_id, created_at, at)
      VALUES (NEW.sp, 'put', NEW.rname, NEW.value, NEW.session_id, NEW.created_at, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000))`,
    "DROP TRIGGER IF EXISTS @precords_update",
    `CREATE TRIGGER @precords_update AFTER UPDATE ON @precords FOR EACH ROW
      INSERT INTO @precord_events (sp, op, rname, value, session_id, created_at, at)
      VALUES (NEW.sp, 'put', NEW.rname, NEW.value, NEW.session_id, NEW.created_at, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000))`,
    // Foreign-key cascades fire no triggers: sessions' records are deleted explicitly.
    "DROP TRIGGER IF EXISTS @precords_delete",
    `CREATE TRIGGER @precords_delete AFTER DELETE ON @precords FOR EACH ROW
      INSERT INTO @precord_events (sp, op, rname, at)
      VALUES (OLD.sp, 'del', OLD.rname, ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000))`,
    // Durable versioned keys. A deleted key keeps its row (value NULL): its version and its
    // highest fence live on.
    `CREATE TABLE IF NOT EXISTS @pcells (
      ckey BINARY(32) NOT NULL PRIMARY KEY,
      sp BINARY(32) NOT NULL,
      namespace VARCHAR(512) NOT NULL,
      space TEXT NOT NULL,
      cname TEXT NOT NULL,
      value LONGTEXT NULL,
      version BIGINT UNSIGNED NOT NULL,
      fence BIGINT UNSIGNED NOT NULL DEFAULT 0,
      KEY (sp)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    ...PROCEDURES_V1,
  ],
  PROCEDURES_V2,
  PROCEDURES_V3,
  PROCEDURES_V4,
  // Every procedure again, its text parameters and variables in utf8mb4 (not the database's).
  PROCEDURES_V5,
];

/** The schema version this code expects. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Renders a statement for the validated table prefix. */
export function render(sql: string, prefix: string): string {
  return sql.replaceAll("@p", prefix);
}

/** What migrate() needs of a connection. */
export interface Migrator {
  query<R>(sql: string, params?: readonly unknown[]): Promise<R[]>;
}

/**
 * Brings the tables up to {@link SCHEMA_VERSION}. Idempotent; concurrent callers serialise
 * on a `GET_LOCK` named after the database and prefix, so one applies each missing version.
 */
export async function migrate(connection: Migrator, prefix: string): Promise<void> {
  const [db] = await connection.query<{ db: string | null }>("SELECT DATABASE() AS db");
  const lockName = `baton-migrate:${hashHex(`${db?.db ?? ""}\u001f${prefix}`).slice(0, 40)}`;
  const [got] = await connection.query<{ got: number | null }>("SELECT GET_LOCK(?, 60) AS got", [lockName]);
  if (got?.got !== 1) throw new Error("could not take the migration lock within 60 s");
  try {
    await connection.query(
      `CREATE TABLE IF NOT EXISTS ${prefix}migrations (version INT NOT NULL PRIMARY KEY) ENGINE=InnoDB`,
    );
    const [row] = await connection.query<{ v: number | null }>(`SELECT MAX(version) AS v FROM ${prefix}migrations`);
    const from = row?.v ?? 0;
    if (from > SCHEMA_VERSION) {
      throw new Error(
        `tables ${prefix}* are at version ${from}, newer than this Baton (${SCHEMA_VERSION}); upgrade Baton`,
      );
    }
    const [server] = await connection.query<{ v: string }>("SELECT VERSION() AS v");
    const atomic = replacesAtomically(server?.v ?? "");
    for (let version = from + 1; version <= SCHEMA_VERSION; version++) {
      for (const statement of replacing(MIGRATIONS[version - 1] ?? [], atomic)) {
        await connection.query(render(statement, prefix));
      }
      await connection.query(`INSERT INTO ${prefix}migrations (version) VALUES (?)`, [version]);
    }
  } finally {
    await connection.query("DO RELEASE_LOCK(?)", [lockName]);
  }
}

/**
 * Whether the server (its `VERSION()`) has `CREATE OR REPLACE PROCEDURE`: MariaDB 10.1.3
 * and later. MySQL has not.
 */
export function replacesAtomically(version: string): boolean {
  const m = /^(\d+)\.(\d+)\.(\d+).*mariadb/i.exec(version);
  if (!m) return false;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return major > 10 || (major === 10 && (minor > 1 || (minor === 1 && patch >= 3)));
}

/**
 * A migration's statements as they are run. With `atomic`, each `DROP PROCEDURE IF EXISTS`
 * directly followed by the CREATE of that procedure is one `CREATE OR REPLACE PROCEDURE`:
 * a call from a client running on through the migration then meets the old procedure or
 * the new one, never none (between a DROP and its CREATE it fails with error 1305).
 */
export function replacing(statements: readonly string[], atomic: boolean): string[] {
  if (!atomic) return [...statements];
  const out: string[] = [];
  for (let i = 0; i < statements.length; i++) {
    const statement = statements[i] ?? "";
    const name = /^DROP PROCEDURE IF EXISTS (@p\w+)$/.exec(statement)?.[1];
    const next = statements[i + 1];
    if (name && next?.startsWith(`CREATE PROCEDURE ${name}(`)) {
      out.push(`CREATE OR REPLACE PROCEDURE ${next.slice("CREATE PROCEDURE ".length)}`);
      i++;
    } else out.push(statement);
  }
  return out;
}

/** SHA-256 of the parts joined by U+001F: the fixed-size key of a name, record or cell. */
export function nameHash(...parts: string[]): Buffer {
  return createHash("sha256").update(parts.join("\u001f"), "utf8").digest();
}

function hashHex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}
