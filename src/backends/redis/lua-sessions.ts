/**
 * The Lua scripts of sessions, records and inspection (renew, fence, close, put, delete
 * and list records, inspect); the queue scripts are in lua.ts, the keys described there.
 *
 * @module
 */
import { script } from "./lua-prelude.js";

/**
 * ARGV: P, session, ttlMs. Replies 1 when renewed, 0 when the session is gone or revoked
 * (`P v:<sid>`, set by FENCE: a revoked session is never renewed again).
 */
export const RENEW = script(
  "renew",
  `
if redis.call('EXISTS', P .. 'v:' .. ARGV[2]) == 1 then return 0 end
return redis.call('PEXPIRE', P .. 's:' .. ARGV[2], ARGV[3])
`,
);

/**
 * ARGV: P, session. Marks the session revoked (`P v:<sid>`, outliving its key) so RENEW
 * refuses it from now on, and replies the session key's PTTL: no renewal can follow, so its
 * client's local deadline (at most its last renewal's send time plus the TTL) has passed
 * once that much time has. Replies -1 when the session is gone.
 */
export const FENCE = script(
  "fence",
  `
local left = redis.call('PTTL', P .. 's:' .. ARGV[2])
if left < 0 then return -1 end
redis.call('SET', P .. 'v:' .. ARGV[2], '1', 'PX', left + 60000)
return left
`,
);

/**
 * ARGV: P, session, JSON [queue...], JSON [[encoded space, key]...]: the queues and records
 * the client knows the session has. Ends it: its entries leave those queues (waiters behind
 * them are granted), its records are deleted and announced. Anything the list misses
 * belongs to a dead session from now on and is dropped by the next script that looks.
 */
export const CLOSE = script(
  "close",
  `
local sid = ARGV[2]
redis.call('DEL', P .. 's:' .. sid, P .. 'v:' .. sid)
for _, Q in ipairs(cjson.decode(ARGV[3])) do process(Q) end
for _, r in ipairs(cjson.decode(ARGV[4])) do drop_record(r[1], r[2], sid) end
return 1
`,
);

/** ARGV: P, encoded space, space, key, value, session. Replies 1, or 0 when the session is gone. */
export const PUT_RECORD = script(
  "put-record",
  `
local S, space, key, value, sid = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not alive(sid) then return 0 end
local H = P .. 'r:' .. S
local raw = redis.call('HGET', H, key)
local c = now_ms()
if raw then
  local old = cjson.decode(raw)
  if old.s == sid then c = old.c end
end
redis.call('HSET', H, key, cjson.encode({s = sid, c = c, v = value}))
redis.call('HSET', P .. 'spaces', S, space)
record_changed(S, {t = 'p', k = key, s = sid, c = c, v = value})
return 1
`,
);

/** ARGV: P, encoded space, key, session. Deletes the record if the session owns it. */
export const DELETE_RECORD = script(
  "delete-record",
  `
return drop_record(ARGV[2], ARGV[3], ARGV[4])
`,
);

/**
 * ARGV: P, encoded space. Replies {changeCounter, recheckMs, {{key, value, session,
 * createdAt}...}}: every change after the counter is published with a larger one.
 */
export const LIST_RECORDS = script(
  "list-records",
  `
local S = ARGV[2]
local out, best = live_records(S)
return {redis.call('GET', P .. 'rv:' .. S) or '0', tostring(best), out}
`,
);

/**
 * ARGV: P. Replies {queues, spaces}: queues as {kind, name, limit, holders {member,
 * session, mode, token, since}, waiters {member, session, mode, since}}, spaces as {space,
 * records}.
 */
export const INSPECT = script(
  "inspect",
  `
local queues = {}
for _, Q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  local meta = redis.call('HMGET', Q .. ':e', 'k', 'n', 'l')
  local holders, waiters = all_entries(Q)
  if #holders + #waiters > 0 then
    local hs, ws = {}, {}
    for _, h in ipairs(holders) do hs[#hs + 1] = {h.i, h.s, h.m, h.t, tostring(h.c)} end
    for _, w in ipairs(waiters) do ws[#ws + 1] = {w.i, w.s, w.m, tostring(w.c)} end
    queues[#queues + 1] = {meta[1], meta[2], meta[3], hs, ws}
  end
end
local spaces = {}
local all = redis.call('HGETALL', P .. 'spaces')
for i = 1, #all, 2 do
  local out = live_records(all[i])
  if #out > 0 then spaces[#spaces + 1] = {all[i + 1], out} end
end
return {queues, spaces}
`,
);
