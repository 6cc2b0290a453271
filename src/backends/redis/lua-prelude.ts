/**
 * What every Lua script of the Redis backend starts with ({@link script}): the granting
 * rule of `src/core/grant-rule.ts` (FIFO, readers behind earlier writers, semaphores, a
 * pending upgrade ahead of every waiter, the second upgrader refused), transcribed into
 * Lua because it must run inside the server, applied to a queue stored in Redis, with
 * every entry naming its session and counting only while that session's key exists; and
 * the record helpers. The conformance suite replays the rule's table
 * (`test/grant-rule-cases.ts`) through this backend. The keys are described in lua.ts.
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
-- Set by RELEASE: the keys of its lock's takeover cell, and whether it deleted that record
-- (then no live record is there for the next grant's write to find).
local known_rk, cell_freed = nil, false
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
-- A takeover record r (JSON text) written with the grant of token t at c, sealed as
-- core/driver.ts sealRecord says, in the cell whose keys (cells.ts cellKeys) are k, unless
-- a live record is there. Replies {'written', version} or {'found', version, fence, value}.
local function write_record(r, k, t, c)
  if not cell_freed then
    local h = redis.call('HMGET', k[1], 'v', 'f', 'x')
    if h[3] then return {'found', h[1], h[2], h[3]} end
  end
  cell_freed = false
  local v = redis.call('INCR', k[4])
  redis.call('HSET', k[1], 'v', v, 'f', t, 'x', string.sub(r, 1, -2) .. ',"t":"' .. t .. '","at":' .. c .. '}')
  redis.call('SADD', k[2], k[5])
  redis.call('PUBLISH', k[3], v)
  return {'written', tostring(v)}
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
  redis.call('HDEL', Q .. ':r', e.id)
end
-- A grant message names the entry, its token and, when the grant wrote the entry's
-- takeover record, its version.
local function notify(e, what)
  redis.call('PUBLISH', P .. 'c:' .. e.s, what .. ' ' .. e.id .. ' ' .. e.t .. (e.rv and (' ' .. e.rv) or ''))
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
  -- In chunks: the walk usually stops at the first waiter, so a long queue is not all read.
  -- An entry dropped on the way moves the later ones up by one.
  local from, done, ids = 0, false, nil
  repeat
  ids = redis.call('ZRANGE', Q .. ':o', from, from + 15)
  local dropped = 0
  for _, id in ipairs(ids) do
    if #waiters > 0 and reached then
      done = true
      break
    end
    local raw = redis.call('HGET', Q .. ':e', id)
    if not raw then
      redis.call('ZREM', Q .. ':o', id)
      dropped = dropped + 1
    else
      local e = cjson.decode(raw)
      e.id = id
      if not alive(e.s) then
        remove(Q, e)
        dropped = dropped + 1
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
          -- A waiter's takeover record waits apart from its entry (Q:r), so that walking a
          -- long queue decodes no more than before; its cell's keys are the queue's (field rk of Q:e).
          local r = redis.call('HGET', Q .. ':r', id)
          if r then
            -- The cell's keys: the release's own (same lock, same cell) when it gave them.
            local written = write_record(r, known_rk or cjson.decode(redis.call('HGET', meta, 'rk')), e.t, e.c)
            if written[1] == 'written' then e.rv = written[2] end
            redis.call('HDEL', Q .. ':r', id)
          end
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
  from = from + #ids - dropped
  until done or #ids < 16
  if not settled and marker then marker = settle_upgrade(Q, meta, marker, holders) end
  if #holders == 0 and #waiters == 0 then
    redis.call('DEL', Q .. ':o', Q .. ':e', Q .. ':r')
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
    if h.id == id then
      if h.rv then return {'granted', h.t, tostring(h.c), 'written', h.rv} end
      return {'granted', h.t, tostring(h.c), h.m}
    end
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
 * A script named `name`: {@link BASE}, then `fast` (a path that returns early, before the
 * rest of the definitions are made; it may leave locals for `body`), then {@link PRELUDE}
 * and `body`.
 */
export function script(name: string, body: string, fast = ""): Script {
  return { name, source: `${BASE}\n${fast}\n${PRELUDE}\n${body}` };
}
