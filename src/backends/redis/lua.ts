/**
 * The Lua scripts: every decision (acquire, release, convert, renew, records) is one script,
 * run atomically by the server. They share {@link PRELUDE}: the granting rule of
 * `src/core/grant-rule.ts` (FIFO, readers behind earlier writers, semaphores, a pending
 * upgrade ahead of every waiter, the second upgrader refused), transcribed into Lua because
 * it must run inside the server, applied to a queue stored in Redis, with every entry
 * naming its session and counting only while that session's key exists. The conformance
 * suite replays the rule's table (`test/grant-rule-cases.ts`) through this backend.
 *
 * Keys under the namespace prefix P (`baton:<namespace>:`):
 * - `P s:<sid>`: the session (value: member id), with the session TTL; `P v:<sid>`: set
 *   while an operator's revoke waits out its deadline (RENEW then refuses it). Which queues and
 *   records a session has is known to its client, which names them when it closes.
 * - `P q:<kind>:<name>`: a queue Q; `Q:o` (zset: entry id -> arrival), `Q:e` (hash: entry
 *   id -> JSON {s: session, i: member, m: "x"|"s", h: 1 when held, t: token, c: since}, and
 *   the queue's own fields l limit, k kind, n name, seq, u the upgrading entry: one key fewer
 *   to create and delete per queue; entry ids are longer than any of those names).
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

/**
 * Shared definitions; ARGV[1] is always the namespace prefix. In two parts: a script's fast
 * path (see {@link script}) runs between them, and Lua makes a closure for every function
 * defined each time a script runs, so a call that ends there pays only for {@link BASE}'s.
 */
const BASE = `
local P = ARGV[1]
-- The server clock, read once per script.
local clock = nil
local function time()
  if not clock then clock = redis.call('TIME') end
  return tonumber(clock[1]), tonumber(clock[2])
end
local function now_ms()
  local s, us = time()
  return s * 1000 + math.floor(us / 1000)
end
local function alive(sid)
  return redis.call('EXISTS', P .. 's:' .. sid) == 1
end
-- Fencing tokens: one counter per namespace, and never below the server clock in
-- microseconds, so that a replica promoted without the last increments still hands out
-- larger tokens than the old primary did (as long as its clock is not behind).
local function next_token()
  local s, micros = time()
  local us = s * 1000000 + micros
  local token = tonumber(redis.call('GET', P .. 'token') or '0') + 1
  if us > token then token = us end
  local text = string.format('%.0f', token)
  redis.call('SET', P .. 'token', text)
  return text
end
local function save(Q, e)
  local id = e.id
  e.id = nil
  redis.call('HSET', Q .. ':e', id, cjson.encode(e))
  e.id = id
end
`;

/** The rest of the shared definitions: the granting rule and the records. */
const PRELUDE = `
local function entries_of(Q)
  local ids = redis.call('ZRANGE', Q .. ':o', 0, -1)
  local list = {}
  -- HMGET in chunks: unpack() is limited by Lua's stack (about 8000 values).
  local raws = {}
  for from = 1, #ids, 1000 do
    local chunk = redis.call('HMGET', Q .. ':e', unpack(ids, from, math.min(from + 999, #ids)))
    for i, raw in ipairs(chunk) do raws[from + i - 1] = raw end
  end
  for i, id in ipairs(ids) do
    local raw = raws[i]
    if raw then
      local e = cjson.decode(raw)
      e.id = id
      list[#list + 1] = e
    else
      redis.call('ZREM', Q .. ':o', id)
    end
  end
  return list
end
local function remove(Q, e)
  redis.call('ZREM', Q .. ':o', e.id)
  redis.call('HDEL', Q .. ':e', e.id)
end
local function notify(e, what)
  redis.call('PUBLISH', P .. 'c:' .. e.s, what .. ' ' .. e.id .. ' ' .. e.t)
end
local function compatible(holders, shared, mode, limit)
  if mode == 's' then return shared == #holders end
  return shared == 0 and #holders < limit
end
local function count_shared(holders)
  local n = 0
  for _, h in ipairs(holders) do if h.m == 's' then n = n + 1 end end
  return n
end
-- Completes a pending upgrade once its holder is the only one left; clears a stale marker.
local function settle_upgrade(Q, meta, marker, holders)
  local up = nil
  for _, h in ipairs(holders) do if h.id == marker then up = h end end
  if up == nil then
    redis.call('HDEL', meta, 'u')
    return false
  end
  if #holders ~= 1 then return marker end
  up.m = 'x'
  up.t = next_token()
  save(Q, up)
  redis.call('HDEL', meta, 'u')
  notify(up, 'u')
  return false
end
-- Walks the queue in arrival order, dropping dead sessions' entries and granting waiters
-- while they are compatible; stops at the first waiter that must wait (every later one
-- waits too), unless asked to walk on until entry upto. Holders are always a prefix of the
-- queue (a waiter is granted only when nobody before it waits), so they are all known when
-- the first waiter is reached. Deletes the queue once empty. Returns the holders, the
-- waiters walked, and the upgrading entry's id (false if none).
local function process(Q, upto)
  local meta = Q .. ':e'
  local m = redis.call('HMGET', meta, 'l', 'u')
  local limit, marker = tonumber(m[1] or '1'), m[2]
  local holders, waiters = {}, {}
  local shared = 0
  local settled = false
  local reached = upto == nil
  for _, id in ipairs(redis.call('ZRANGE', Q .. ':o', 0, -1)) do
    if #waiters > 0 and reached then break end
    local raw = redis.call('HGET', Q .. ':e', id)
    if not raw then
      redis.call('ZREM', Q .. ':o', id)
    else
      local e = cjson.decode(raw)
      e.id = id
      if not alive(e.s) then
        remove(Q, e)
      elseif e.h == 1 then
        holders[#holders + 1] = e
        if e.m == 's' then shared = shared + 1 end
      else
        if not settled then
          settled = true
          if marker then marker = settle_upgrade(Q, meta, marker, holders) end
        end
        if #waiters == 0 and not marker and compatible(holders, shared, e.m, limit) then
          e.h = 1
          e.t = next_token()
          e.c = now_ms()
          save(Q, e)
          holders[#holders + 1] = e
          if e.m == 's' then shared = shared + 1 end
          notify(e, 'g')
        else
          waiters[#waiters + 1] = e
        end
      end
      if id == upto then reached = true end
    end
  end
  if not settled and marker then marker = settle_upgrade(Q, meta, marker, holders) end
  if #holders == 0 and #waiters == 0 then
    redis.call('DEL', Q .. ':o', Q .. ':e')
    redis.call('SREM', P .. 'queues', Q)
  end
  return holders, waiters, marker
end
-- Every live entry of a queue, after processing it: holders and all waiters, in order.
local function all_entries(Q)
  local holders = process(Q)
  local held = {}
  for _, h in ipairs(holders) do held[h.id] = true end
  local waiters = {}
  for _, e in ipairs(entries_of(Q)) do
    if not held[e.id] and e.h ~= 1 and alive(e.s) then waiters[#waiters + 1] = e end
  end
  return holders, waiters
end
-- The soonest expiry (ms) among the sessions in lists other than sid's, -1 if none: when a
-- waiter should look again in case a blocker died without releasing.
local function soonest(lists, sid)
  local best = -1
  for _, list in ipairs(lists) do
    for _, e in ipairs(list) do
      if e.s ~= sid then
        local ttl = redis.call('PTTL', P .. 's:' .. e.s)
        if ttl >= 0 and (best < 0 or ttl < best) then best = ttl end
      end
    end
  end
  return best
end
local function state_of(Q, id)
  local holders, waiters = process(Q, id)
  for _, h in ipairs(holders) do
    if h.id == id then return {'granted', h.t, tostring(h.c), h.m} end
  end
  for i, w in ipairs(waiters) do
    if w.id == id then
      local ahead = {}
      for j = 1, i - 1 do ahead[#ahead + 1] = waiters[j] end
      return {'waiting', tostring(soonest({holders, ahead}, w.s))}
    end
  end
  return {'missing'}
end
local function record_changed(S, event)
  event.n = redis.call('INCR', P .. 'rv:' .. S)
  redis.call('PUBLISH', P .. 'rc:' .. S, cjson.encode(event))
end
local function drop_record(S, key, sid)
  local H = P .. 'r:' .. S
  local raw = redis.call('HGET', H, key)
  if not raw then return 0 end
  if sid and cjson.decode(raw).s ~= sid then return 0 end
  redis.call('HDEL', H, key)
  record_changed(S, {t = 'd', k = key})
  if redis.call('HLEN', H) == 0 then redis.call('HDEL', P .. 'spaces', S) end
  return 1
end
-- Live records of a space as {key, value, session, createdAt}; dead sessions' records are
-- deleted (and announced) on the way.
local function live_records(S)
  local all = redis.call('HGETALL', P .. 'r:' .. S)
  local out = {}
  local best = -1
  for i = 1, #all, 2 do
    local key, r = all[i], cjson.decode(all[i + 1])
    local ttl = redis.call('PTTL', P .. 's:' .. r.s)
    if ttl == -2 then
      drop_record(S, key, nil)
    else
      out[#out + 1] = {key, r.v, r.s, tostring(r.c)}
      if ttl >= 0 and (best < 0 or ttl < best) then best = ttl end
    end
  end
  return out, best
end
`;

/** A script and its SHA-1, computed once. */
export interface Script {
  readonly name: string;
  readonly source: string;
}

/**
 * A script: {@link BASE}, then `fast` (a path that returns early, before the rest of the
 * definitions are made; it may leave locals for `body`), then {@link PRELUDE} and `body`.
 */
function script(name: string, body: string, fast = ""): Script {
  return { name, source: `${BASE}\n${fast}\n${PRELUDE}\n${body}` };
}

/**
 * ARGV: P, Q, kind, name, entry, session, member, mode (x|s), limit, wait (1|0).
 * Replies {granted, token, since} | {waiting, recheckMs} | {busy} | {limit, theirs} | {lost}.
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
end
save(Q, e)
redis.call('ZADD', Q .. ':o', redis.call('HINCRBY', meta, 'seq', 1), id)
if free then return {'granted', e.t, tostring(e.c)} end
return {'waiting', tostring(soonest({holders, waiters}, sid))}
`,
  `
local Q, kind, name, id, sid, mid, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local limit, wait = tonumber(ARGV[9]), ARGV[10] == '1'
if not alive(sid) then return {'lost'} end
local meta = Q .. ':e'
if redis.call('EXISTS', Q .. ':o') == 0 then
  -- Nobody there: granted at once, with the fewest commands.
  local t, c = next_token(), now_ms()
  local e = cjson.encode({s = sid, i = mid, m = mode, h = 1, t = t, c = c})
  redis.call('HSET', meta, 'l', limit, 'k', kind, 'n', name, 'seq', 1, id, e)
  redis.call('SADD', P .. 'queues', Q)
  redis.call('ZADD', Q .. ':o', 1, id)
  return {'granted', t, tostring(c)}
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
 * ARGV: P, Q, entry. Removes the entry whatever its state (release, or withdrawal of a
 * waiter) and grants whoever may go next. Replies 1 if it was there.
 */
export const RELEASE = script(
  "release",
  `
remove(Q, {id = id})
-- An upgrade this entry had pending is cleared by process(), as a marker whose entry is gone.
process(Q)
return 1
`,
  `
local Q, id = ARGV[2], ARGV[3]
if redis.call('HEXISTS', Q .. ':e', id) == 0 then return 0 end
-- The only entry (every entry of Q:e is also in Q:o): the queue goes, nobody to grant.
if redis.call('ZCARD', Q .. ':o') == 1 then
  redis.call('DEL', Q .. ':o', Q .. ':e')
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
