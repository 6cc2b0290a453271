/**
 * The Lua scripts: every decision (acquire, release, convert, renew, records) is one script,
 * run atomically by the server. They share the prelude of lua-prelude.ts: the granting rule
 * of `src/core/grant-rule.ts`, transcribed into Lua. This file holds the queue scripts;
 * lua-sessions.ts those of sessions, records and inspection (re-exported here).
 *
 * Keys under the namespace prefix P (`baton:<namespace>:`):
 * - `P s:<sid>`: the session (value: member id), with the session TTL; `P v:<sid>`: set
 *   while an operator's revoke waits out its deadline (RENEW then refuses it). Which queues and
 *   records a session has is known to its client, which names them when it closes.
 * - `P q:<kind>:<name>`: a queue Q; `Q:o` (zset: entry id -> arrival), `Q:e` (hash: entry
 *   id -> JSON {s: session, i: member, m: "x"|"s", h: 1 when held, t: token, c: since,
 *   rv: its takeover record's version}, and the queue's own fields l limit, k kind, n name,
 *   seq, u the upgrading entry, rk the keys of the queue's takeover record cell: one key
 *   fewer to create and delete per queue; entry ids are longer than any of those names),
 *   `Q:r` (hash: waiting entry id -> its takeover record).
 * - `P queues`: every non-empty queue; `P token`: the last fencing token.
 * - `P r:<space>` (hash: key -> JSON {s, c, v}), `P rv:<space>` (change counter),
 *   `P spaces` (hash: encoded space -> space).
 * - Channels: `P c:<sid>` (grants and upgrades for that session's waiters, "g|u <entry>
 *   <token>"), `P rc:<space>` (record changes, JSON with the change counter `n`).
 *
 * Granting publishes to the channel of exactly the entry granted, so a release wakes the
 * waiters it let in and nobody else.
 *
 * @module
 */
import { script } from "./lua-prelude.js";

export type { Script } from "./lua-prelude.js";
export { CLOSE, DELETE_RECORD, FENCE, INSPECT, LIST_RECORDS, PUT_RECORD, RENEW } from "./lua-sessions.js";

/**
 * ARGV: P, Q, kind, name, entry, session, member, mode (x|s), limit, wait (1|0), TTL ms, takeover
 * record ('' for none) and, with one, its cell's keys (cells.ts cellKeys).
 * Replies {granted, token, since[, written, version | found, version, fence, value]} |
 * {waiting, recheckMs} | {busy} | {limit, theirs} | {lost}.
 * Idempotent per entry id: a retry after a lost answer reports the entry's state.
 */
export const ACQUIRE = script(
  "acquire",
  `
if redis.call('HEXISTS', Q .. ':e', id) == 1 then return state_of(Q, id) end
local holders, waiters, marker = process(Q)
local empty = #holders + #waiters == 0
if not empty then
  local theirs = tonumber(redis.call('HGET', meta, 'l'))
  if theirs ~= limit then return {'limit', tostring(theirs)} end
end
local free = (not marker) and #waiters == 0 and compatible(holders, count_shared(holders), mode, limit)
if not free and not wait then return {'busy'} end
if empty then
  redis.call('HSET', meta, 'l', limit, 'k', kind, 'n', name)
  redis.call('SADD', P .. 'queues', Q)
end
local e = {s = sid, i = mid, m = mode, h = 0, c = now_ms(), id = id}
if free then
  e.h = 1
  e.t = next_token()
elseif record then
  redis.call('HSET', Q .. ':r', id, record)
  redis.call('HSET', meta, 'rk', cjson.encode(record_keys))
end
save(Q, e)
redis.call('ZADD', Q .. ':o', redis.call('HINCRBY', meta, 'seq', 1), id)
if free then return granted(e.t, e.c) end
return {'waiting', tostring(soonest({holders, waiters}, sid))}
`,
  `
local Q, kind, name, id, sid, mid, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local limit, wait = tonumber(ARGV[9]), ARGV[10] == '1'
if not alive(sid) then return {'lost'} end
-- The takeover record (ARGV[12], '' for none; ARGV[13..17]: its cell's keys) is written
-- with the grant unless a live record is there, which is replied instead. A waiter's
-- waits in Q:r, for the script that grants it.
local record = ARGV[12] ~= '' and ARGV[12] or nil
local record_keys = record and {ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17]} or nil
local function granted(t, c)
  if not record then return {'granted', t, tostring(c)} end
  local r = write_record(record, record_keys, t, c)
  return {'granted', t, tostring(c), r[1], r[2], r[3], r[4]}
end
local meta = Q .. ':e'
if redis.call('EXISTS', Q .. ':o') == 0 then
  -- Nobody there: granted at once, with the fewest commands.
  local t, c = next_token(), now_ms()
  local e = cjson.encode({s = sid, i = mid, m = mode, h = 1, t = t, c = c})
  redis.call('HSET', meta, 'l', limit, 'k', kind, 'n', name, 'seq', 1, id, e)
  redis.call('SADD', P .. 'queues', Q)
  redis.call('ZADD', Q .. ':o', 1, id)
  return granted(t, c)
end
`,
);

/** ARGV: P, Q, entry. Replies like ACQUIRE's state ({granted...} | {waiting...} | {missing}). */
export const CHECK = script(
  "check",
  `
return state_of(ARGV[2], ARGV[3])
`,
);

/**
 * ARGV: P, Q, entry[, '1' to delete the entry's own takeover record, its cell's keys
 * (cells.ts cellKeys)]. Removes the entry whatever its state (release, or withdrawal of a
 * waiter) and grants whoever may go next. Replies 1 if it was there.
 */
export const RELEASE = script(
  "release",
  `
if ARGV[4] == '1' then known_rk = {ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]} end
remove(Q, {id = id})
-- An upgrade this entry had pending is cleared by process(), as a marker whose entry is gone.
process(Q)
return 1
`,
  `
local Q, id = ARGV[2], ARGV[3]
local raw = redis.call('HGET', Q .. ':e', id)
if not raw then return 0 end
-- A clean release, or the withdrawal of a grant never handed out, deletes the entry's own
-- takeover record (ARGV[5..9]: its cell's keys): the one fenced by the entry's token, which
-- no other holding has (tokens are unique), whatever version the client saw. The script
-- decides, not the client: a grant made by another script (a release that let this waiter
-- in) wrote a record the client may never have heard of. No tombstone: the record's fence
-- is the lock itself, and a key per lock name ever used would only accumulate.
if ARGV[4] == '1' then
  local e = cjson.decode(raw)
  if e.h == 1 and e.t and redis.call('HGET', ARGV[5], 'f') == e.t then
    cell_freed = true
    redis.call('DEL', ARGV[5])
    redis.call('SREM', ARGV[6], ARGV[9])
    redis.call('PUBLISH', ARGV[7], redis.call('INCR', ARGV[8]))
  end
end
-- The only entry (every entry of Q:e is also in Q:o): the queue goes, nobody to grant.
if redis.call('ZCARD', Q .. ':o') == 1 then
  redis.call('DEL', Q .. ':o', Q .. ':e', Q .. ':r')
  redis.call('SREM', P .. 'queues', Q)
  return 1
end
`,
);

/**
 * ARGV: P, Q, entry, mode (x|s). Downgrade never waits; upgrade marks the queue (no new
 * grants) and completes once the entry is the only holder. Replies {done, token} |
 * {waiting, recheckMs} | {deadlock} | {missing}. Idempotent: a repeated upgrade goes on.
 */
export const CONVERT = script(
  "convert",
  `
local Q, id, mode = ARGV[2], ARGV[3], ARGV[4]
local meta = Q .. ':e'
local raw = redis.call('HGET', Q .. ':e', id)
if not raw then return {'missing'} end
local e = cjson.decode(raw)
e.id = id
if e.h ~= 1 or not alive(e.s) then return {'missing'} end
if mode == 's' then
  if e.m ~= 's' then
    e.m = 's'
    save(Q, e)
  end
  if redis.call('HGET', meta, 'u') == id then redis.call('HDEL', meta, 'u') end
  process(Q)
  return {'done', e.t}
end
if e.m == 'x' then return {'done', e.t} end
local marker = redis.call('HGET', meta, 'u')
if marker and marker ~= id then return {'deadlock'} end
redis.call('HSET', meta, 'u', id)
local holders = process(Q)
for _, h in ipairs(holders) do
  if h.id == id and h.m == 'x' then return {'done', h.t} end
end
return {'waiting', tostring(soonest({holders}, e.s))}
`,
);

/**
 * ARGV: P, Q, entry. Withdraws a pending upgrade; one that completed meanwhile is turned
 * back to shared, so cancellation leaves the grant as it was. Replies 1 if held.
 */
export const CANCEL_UPGRADE = script(
  "cancel-upgrade",
  `
local Q, id = ARGV[2], ARGV[3]
local meta = Q .. ':e'
local raw = redis.call('HGET', Q .. ':e', id)
if redis.call('HGET', meta, 'u') == id then redis.call('HDEL', meta, 'u') end
if not raw then
  process(Q)
  return 0
end
local e = cjson.decode(raw)
e.id = id
if e.m == 'x' then
  e.m = 's'
  save(Q, e)
end
process(Q)
return 1
`,
);
