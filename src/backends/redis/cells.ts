/**
 * Cells on Redis: a hash per key (`P cl:<space>:<key>`: `v` version, `f` fence, `x` the
 * JSON value, absent in a deleted key's tombstone), versions from one counter per namespace
 * (`P cv`, so they increase across delete and re-create), a set of live keys per space
 * (`P cs:<space>`) and a channel per key (`P cw:<space>:<key>`) that every write publishes
 * the new version on.
 *
 * A write is a compare-and-set: the key is read, the shared rule (cell-rule.ts) decides,
 * and one script writes only if the version is still the one read (else read again; each
 * retry follows a write by someone else, so it is bounded). The condition is thus checked
 * by the server atomically with the write, against the state the rule saw. Durable as
 * Redis is configured: with `appendfsync always` once acknowledged; with the default
 * `everysec`, a server crash can lose the last second of writes (docs/backends/redis.md).
 *
 * @module
 * @internal
 */
import { decideCellWrite } from "../../core/cell-rule.js";
import type { CellCondition, CellEntry, CellWriteResult, DriverCells } from "../../core/driver.js";
import { translate } from "./errors.js";
import type { Keyspace } from "./keys.js";
import type { Link } from "./link.js";
import type { Script } from "./lua.js";

/** Bounded: each retry follows a write by another client between our read and our write. */
const MAX_ATTEMPTS = 16;

/**
 * ARGV: cell key, space set key, channel, counter key, expected version ("0": never
 * written), "1" to put (then value, fence) or "0" to delete (then "", fence), raw key.
 * Replies the new version, or 0 when the version was not the expected one.
 */
const CAS: Script = {
  name: "cell-cas",
  source: `
local k = ARGV[1]
if (redis.call('HGET', k, 'v') or '0') ~= ARGV[5] then return 0 end
local v = redis.call('INCR', ARGV[4])
if ARGV[6] == '1' then
  redis.call('HSET', k, 'v', v, 'f', ARGV[8], 'x', ARGV[7])
  redis.call('SADD', ARGV[2], ARGV[9])
else
  redis.call('HSET', k, 'v', v, 'f', ARGV[8])
  redis.call('HDEL', k, 'x')
  redis.call('SREM', ARGV[2], ARGV[9])
end
redis.call('PUBLISH', ARGV[3], v)
return v
`,
};

/** ARGV: space set key, cell key prefix. Replies {key, version, fence, value} per live key. */
const LIST: Script = {
  name: "cell-list",
  source: `
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', ARGV[1])) do
  local h = redis.call('HMGET', ARGV[2] .. key, 'v', 'f', 'x')
  if h[3] then table.insert(out, {key, h[1], h[2], h[3]}) end
end
return out
`,
};

/**
 * The keys of one cell, as the scripts that write it take them: the cell's hash, its
 * space's set, its channel, the version counter, and the raw key (a set member).
 */
export function cellKeys(keys: Keyspace, space: string, key: string): string[] {
  const enc = encodeURIComponent;
  const { prefix } = keys;
  return [
    `${prefix}cl:${enc(space)}:${enc(key)}`,
    `${prefix}cs:${enc(space)}`,
    `${prefix}cw:${enc(space)}:${enc(key)}`,
    `${prefix}cv`,
    key,
  ];
}

/** The cells of one driver (one namespace). */
export function redisCells(link: Link, keys: Keyspace): DriverCells {
  const enc = encodeURIComponent;
  const prefixOf = (space: string) => `${keys.prefix}cl:${enc(space)}:`;
  const cellKey = (space: string, key: string) => `${prefixOf(space)}${enc(key)}`;
  const setKey = (space: string) => `${keys.prefix}cs:${enc(space)}`;
  const channel = (space: string, key: string) => `${keys.prefix}cw:${enc(space)}:${enc(key)}`;

  const get = async (space: string, key: string): Promise<CellEntry | null> => {
    const [v, f, x] = (await link.command(["HMGET", cellKey(space, key), "v", "f", "x"])) as (string | null)[];
    if (!v) return null;
    return { key, version: BigInt(v), fence: BigInt(f ?? "0"), value: x ?? null };
  };

  const write = async (
    space: string,
    key: string,
    value: string | null,
    condition: CellCondition,
  ): Promise<CellWriteResult> => {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const current = await get(space, key);
      const decision = decideCellWrite(current, condition, value === null);
      if (decision.action === "refuse") return { ok: false, reason: decision.reason, current };
      if (decision.action === "noop") return { ok: true, version: 0n };
      const version = await link.run(CAS, [
        cellKey(space, key),
        setKey(space),
        channel(space, key),
        `${keys.prefix}cv`,
        String(current?.version ?? 0n),
        value === null ? "0" : "1",
        value ?? "",
        String(decision.fence),
        enc(key),
      ]);
      if (Number(version) !== 0) return { ok: true, version: BigInt(version as number) };
    }
    throw new Error(`cell "${key}" changed ${MAX_ATTEMPTS} times while it was being written`);
  };

  const wrap =
    <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args);
      } catch (error) {
        throw translate(error, what);
      }
    };

  return {
    get: wrap("reading a cell", get),
    put: wrap("writing a cell", (space: string, key: string, value: string, condition: CellCondition) =>
      write(space, key, value, condition),
    ),
    delete: wrap("deleting a cell", (space: string, key: string, condition: CellCondition) =>
      write(space, key, null, condition),
    ),
    list: wrap("listing cells", async (space: string) => {
      const rows = (await link.run(LIST, [setKey(space), prefixOf(space)])) as [string, string, string, string][];
      return rows.map(([key, v, f, x]) => ({
        key: decodeURIComponent(key),
        version: BigInt(v),
        fence: BigInt(f),
        value: x,
      }));
    }),
    watch: wrap(
      "watching a cell",
      async (space: string, key: string, listener: (entry: CellEntry) => void, signal: AbortSignal) => {
        // Every message (and every resubscription, after which messages may have been
        // missed) re-reads the key: the latest state is always delivered.
        const reread = () => {
          if (signal.aborted) return;
          get(space, key).then(
            (entry) => {
              if (entry && !signal.aborted) listener(entry);
            },
            () => {},
          );
        };
        const name = channel(space, key);
        await link.subscribe(name, reread);
        const stopResync = link.onResubscribed(reread);
        signal.addEventListener(
          "abort",
          () => {
            stopResync();
            void link.unsubscribe(name, reread).catch(() => {});
          },
          { once: true },
        );
        return get(space, key);
      },
    ),
  };
}
