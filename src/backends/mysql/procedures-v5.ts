/**
 * The mysql backend's schema version 5: every procedure's text parameters and variables
 * are utf8mb4. A parameter, OUT parameter or DECLAREd variable of a character type without
 * a `CHARACTER SET` takes the character set the database had when the procedure was
 * created, not the tables' (utf8mb4) nor the connection's: on a `latin1` database every
 * name or member id outside Latin-1 was refused with error 1366 ("Incorrect string value
 * ... for column `p_name`"), before anything was stored.
 *
 * Each procedure is recreated from its current definition (the last version that created
 * it) by {@link utf8mb4}, which adds `CHARACTER SET utf8mb4` to each such declaration and
 * throws if the declarations it finds are not the ones expected, so no body is restated
 * here. Names, parameters and their order stay as they were: a version 4 client calls the
 * version 5 procedures as it called its own. The heartbeat's temporary table of expired
 * sessions gets the tables' character set too (it is created without one, so in the
 * database's). String literals in the bodies take the creating connection's character set
 * (utf8mb4, connection.ts), and the bodies use no user variable of text.
 * Part of a released migration once shipped: never edit, add a new version.
 *
 * @module
 */
import { PROCEDURES_V1, PROCEDURES_V2 } from "./procedures.js";
import { PROCEDURES_V3 } from "./procedures-v3.js";
import { PROCEDURES_V4 } from "./procedures-v4.js";

/** Character types (take a character set) and the other types the procedures declare. */
const TEXT_TYPE = /^(?:VARCHAR\(\d+\)|CHAR\(\d+\)|TINYTEXT|TEXT|MEDIUMTEXT|LONGTEXT)$/;
const OTHER_TYPE = /^(?:BIGINT|INT|TINYINT|DOUBLE|BINARY\(\d+\)|VARBINARY\(\d+\)|BLOB|LONGBLOB)$/;
const CHARSET = " CHARACTER SET utf8mb4";

/**
 * One declaration of a procedure: a parameter or a DECLAREd variable. `type` is its first
 * type token; `at` the offset just after it, where a character set goes.
 */
interface Declaration {
  readonly name: string;
  readonly type: string;
  readonly at: number;
  readonly hasCharset: boolean;
}

/** The parameters and variables of one `CREATE PROCEDURE` statement. */
function declarations(what: string, sql: string): Declaration[] {
  const head = /^CREATE PROCEDURE @p\w+\(/.exec(sql);
  if (!head) throw new Error(`${what}: no CREATE PROCEDURE head: write version 5 in full`);
  // The parameter list: up to the parenthesis closing the head's.
  let depth = 1;
  let end = head[0].length;
  for (; end < sql.length && depth > 0; end++) {
    if (sql[end] === "(") depth++;
    else if (sql[end] === ")") depth--;
  }
  if (depth !== 0) throw new Error(`${what}: unbalanced parameter list: write version 5 in full`);
  const found: Declaration[] = [];
  const add = (name: string, type: string, at: number, rest: string) => {
    if (!TEXT_TYPE.test(type) && !OTHER_TYPE.test(type)) {
      throw new Error(`${what}: ${name} has a type not known here (${type}): write version 5 in full`);
    }
    found.push({ name, type, at, hasCharset: /^\s+CHARACTER SET\b/i.test(rest) });
  };
  const param = /(?:^|,)(\s*(?:IN|OUT|INOUT)\s+(\w+)\s+)([A-Z]+(?:\(\d+\))?)/g;
  const list = sql.slice(head[0].length, end - 1);
  let checked = 0;
  for (let m = param.exec(list); m; m = param.exec(list)) {
    const at = head[0].length + m.index + m[0].length;
    add(m[2] ?? "", m[3] ?? "", at, sql.slice(at));
    checked++;
  }
  // Every parameter was read (a comma per parameter after the first, none nested in a type).
  const params = list.trim() === "" ? 0 : list.split(",").length;
  if (checked !== params)
    throw new Error(`${what}: ${params - checked} parameters not understood: write version 5 in full`);
  const variable = /\bDECLARE\s+(\w+)\s+([A-Z]+(?:\(\d+\))?)/g;
  variable.lastIndex = end;
  for (let m = variable.exec(sql); m; m = variable.exec(sql)) {
    const [, name = "", type = ""] = m;
    if (/^(?:CONTINUE|EXIT|UNDO)$/.test(name) || /^(?:CURSOR|CONDITION)$/.test(type)) continue;
    const at = m.index + m[0].length;
    add(name, type, at, sql.slice(at));
  }
  return found;
}

/**
 * `sql` (a CREATE PROCEDURE) with `CHARACTER SET utf8mb4` added to each character-typed
 * parameter and variable that has none; throws unless exactly `expected` were missing it.
 */
export function utf8mb4(what: string, sql: string, expected: number): string {
  const missing = declarations(what, sql).filter((d) => TEXT_TYPE.test(d.type) && !d.hasCharset);
  if (missing.length !== expected) {
    throw new Error(
      `${what}: ${missing.length} declarations without a character set (${missing.map((d) => d.name).join(", ")}), not ${expected}: write version 5 in full`,
    );
  }
  let out = sql;
  for (const d of [...missing].reverse()) out = `${out.slice(0, d.at)}${CHARSET}${out.slice(d.at)}`;
  const left = declarations(what, out).filter((d) => TEXT_TYPE.test(d.type) && !d.hasCharset);
  if (left.length > 0) throw new Error(`${what}: ${left.map((d) => d.name).join(", ")} still without a character set`);
  return out;
}

/** Each procedure's current definition, by name: the CREATE of the last version that made it. */
function current(): Map<string, string> {
  const byName = new Map<string, string>();
  for (const statements of [PROCEDURES_V1, PROCEDURES_V2, PROCEDURES_V3, PROCEDURES_V4]) {
    for (const sql of statements) {
      const name = /^CREATE PROCEDURE @p(\w+)\(/.exec(sql)?.[1];
      if (name) byName.set(name, sql);
    }
  }
  return byName;
}

/**
 * How many declarations of each procedure lack a character set in its current definition
 * (parameters + variables): the check that what is recreated is what was read.
 */
const EXPECTED: Readonly<Record<string, number>> = {
  eval: 1 + 2, // o_block; v_mode, v_kind
  wait: 1 + 1, // p_key; v_block
  acquire: 7 + 4, // p_ns, p_kind, p_name, p_mode, p_key, p_session, p_member; v_ns, v_kind, v_name, v_block
  withdraw: 1, // p_key
  mode: 3, // p_key, p_new_key, p_mode
  heartbeat: 1 + 1, // p_session; v_id
  takeover_grant: 1, // p_key (the rest has utf8mb4 since version 4)
  wait_tracked: 1 + 1, // p_key; v_block
  acquire_tracked: 7 + 4, // as acquire's (the record's have utf8mb4)
  release_tracked: 1, // p_key
};

/** The heartbeat's temporary table, in the tables' character set. */
const GONE = "CREATE TEMPORARY TABLE IF NOT EXISTS @pgone (id CHAR(36) NOT NULL PRIMARY KEY) ENGINE=MEMORY;";

/** Version 5's statements: every procedure, each after its DROP ... IF EXISTS. */
export const PROCEDURES_V5: readonly string[] = (() => {
  const byName = current();
  const unknown = [...byName.keys()].filter((name) => !(name in EXPECTED));
  if (unknown.length > 0) throw new Error(`procedures not covered by version 5: ${unknown.join(", ")}`);
  const out: string[] = [];
  for (const [name, expected] of Object.entries(EXPECTED)) {
    const sql = byName.get(name);
    if (!sql) throw new Error(`procedure ${name} not found: write version 5 in full`);
    let next = utf8mb4(`the current ${name}`, sql, expected);
    if (name === "heartbeat") {
      if (next.split(GONE).length !== 2)
        throw new Error("the heartbeat's temporary table changed: write version 5 in full");
      next = next.replace(GONE, `${GONE.slice(0, -1)} DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;`);
    }
    out.push(`DROP PROCEDURE IF EXISTS @p${name}`, next);
  }
  return out;
})();
