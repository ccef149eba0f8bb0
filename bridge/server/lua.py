"""The Lua scripts behind :class:`bridge.server.redis_store.RedisStore`: each one is atomic in Redis.

Every script takes the key prefix as ``ARGV[1]`` and builds its keys from it (one Redis, or a Sentinel
primary; Redis Cluster is not supported: the scripts touch keys they only learn while running).
Time is Redis's own ``TIME``, so replicas with skewed clocks share one clock. Keys under ``<p>:``::

    rl:<client>            hash tokens, stamp(ms)      per-client token bucket
    tb:<credential>        hash tokens, stamp(ms)      per-credential bucket ("shared", "kiosk:<name>")
    calls                  zset member -> lease end    live calls + pending creations (the fleet cap)
    kcalls:<kiosk>         zset member -> lease end    the same per kiosk
    callidx                set  call ids               registered calls (the orphan scan)
    call:<id>              hash owner agent created heartbeat accounted kiosk state model ...
    lock:<id>              string owner token, PX ttl  who runs the call's sideband
    fc:<id>:<tool call>    string replica, EX 1 h      who answers one function call (exactly once)
    usage:<day>:<kiosk|_fleet>  hash mints calls call_seconds text_in ... cost_micro_usd   (40 days)
    kiosks                 set  names
    kiosk:<name>           hash name hash created max_calls seconds_per_day revoked
    ktok:<sha256 of token> string name
    channel <p>:handover   published call ids a leaving replica released

Tokens are stored only as SHA-256 digests.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(tonumber(t[1]) / 86400)
local USAGE_TTL = 40 * 86400
local function ms(x) return string.format('%.0f', x) end
"""

# Accrue call seconds and token usage for one call (its kiosk and the fleet) on `day`.
_ACCRUE = """
local function accrue(p, kiosk, fields)
  local keys = {p .. ':usage:' .. day .. ':_fleet'}
  if kiosk and kiosk ~= '' then keys[2] = p .. ':usage:' .. day .. ':' .. kiosk end
  for _, key in ipairs(keys) do
    for name, value in pairs(fields) do
      if value ~= 0 then
        if name == 'call_seconds' then
          redis.call('HINCRBYFLOAT', key, name, string.format('%.3f', value))
        else
          redis.call('HINCRBY', key, name, value)
        end
      end
    end
    redis.call('EXPIRE', key, USAGE_TTL)
  end
end
"""

ADMIT = (
    _NOW
    + _ACCRUE
    + """
-- ARGV: p kind client credential token_hash rate_burst rate_period_ms token_burst token_period_ms
--       max_calls fleet_seconds reservation lease_ms anonymous_ok
-- -> {code, kiosk, retry_after}; code 'ok' or a refusal. Checks everything first, then spends.
local p, kind, client, cred, thash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rburst, rperiod = tonumber(ARGV[6]), tonumber(ARGV[7])
local tburst, tperiod = tonumber(ARGV[8]), tonumber(ARGV[9])
local max_calls, fleet_secs = tonumber(ARGV[10]), tonumber(ARGV[11])
local resv, lease, anon_ok = ARGV[12], tonumber(ARGV[13]), ARGV[14] == '1'
local to_midnight = tostring(86400 - (tonumber(t[1]) % 86400))
local kiosk, kmax, ksecs = '', 0, 0
if thash ~= '' then
  local name = redis.call('GET', p .. ':ktok:' .. thash)
  if name then
    local k = redis.call('HMGET', p .. ':kiosk:' .. name, 'revoked', 'max_calls', 'seconds_per_day')
    if k[1] == '1' then return {'kiosk_revoked', name, ''} end
    kiosk, cred = name, 'kiosk:' .. name
    kmax, ksecs = tonumber(k[2]) or 0, tonumber(k[3]) or 0
  elseif not anon_ok then
    return {'access_token_required', '', ''}
  end
end
local function level(key, burst, period)
  local b = redis.call('HMGET', key, 'tokens', 'stamp')
  local tokens, stamp = tonumber(b[1]), tonumber(b[2])
  if not tokens then return burst end
  return math.min(burst, tokens + math.max(0, now - stamp) / period)
end
local rkey = p .. ':rl:' .. client
local rlevel = level(rkey, rburst, rperiod)
if rlevel < 1 then return {'rate_limited', kiosk, tostring(math.ceil((1 - rlevel) * rperiod / 1000))} end
local tkey, tlevel = nil, 0
if cred ~= '' then
  tkey = p .. ':tb:' .. cred
  tlevel = level(tkey, tburst, tperiod)
  if tlevel < 1 then return {'token_rate_limited', kiosk, tostring(math.ceil((1 - tlevel) * tperiod / 1000))} end
end
local fleet_usage = p .. ':usage:' .. day .. ':_fleet'
if fleet_secs > 0 and (tonumber(redis.call('HGET', fleet_usage, 'call_seconds')) or 0) >= fleet_secs then
  return {'fleet_minutes_exhausted', kiosk, to_midnight}
end
if kiosk ~= '' and ksecs > 0 then
  local used = tonumber(redis.call('HGET', p .. ':usage:' .. day .. ':' .. kiosk, 'call_seconds')) or 0
  if used >= ksecs then return {'kiosk_minutes_exhausted', kiosk, to_midnight} end
end
if kind == 'call' then
  local calls = p .. ':calls'
  redis.call('ZREMRANGEBYSCORE', calls, '-inf', ms(now))
  if redis.call('ZCARD', calls) >= max_calls then return {'too_many_calls', kiosk, ''} end
  if kiosk ~= '' and kmax > 0 then
    local kc = p .. ':kcalls:' .. kiosk
    redis.call('ZREMRANGEBYSCORE', kc, '-inf', ms(now))
    if redis.call('ZCARD', kc) >= kmax then return {'kiosk_busy', kiosk, ''} end
    redis.call('ZADD', kc, ms(now + lease), resv)
  end
  redis.call('ZADD', calls, ms(now + lease), resv)
end
redis.call('HSET', rkey, 'tokens', string.format('%.6f', rlevel - 1), 'stamp', ms(now))
redis.call('PEXPIRE', rkey, ms(rburst * rperiod + 1000))
if tkey then
  redis.call('HSET', tkey, 'tokens', string.format('%.6f', tlevel - 1), 'stamp', ms(now))
  redis.call('PEXPIRE', tkey, ms(tburst * tperiod + 1000))
end
if kind == 'mint' then accrue(p, kiosk, {mints = 1}) end
return {'ok', kiosk, ''}
"""
)

REFUND_MINT = (
    _NOW
    + _ACCRUE
    + """
-- ARGV: p kiosk. An upstream mint failed after admission: it is not usage.
accrue(ARGV[1], ARGV[2], {mints = -1})
return 1
"""
)

CANCEL = """
-- ARGV: p reservation kiosk
redis.call('ZREM', ARGV[1] .. ':calls', ARGV[2])
if ARGV[3] ~= '' then redis.call('ZREM', ARGV[1] .. ':kcalls:' .. ARGV[3], ARGV[2]) end
return 1
"""

REGISTER = (
    _NOW
    + _ACCRUE
    + """
-- ARGV: p call_id reservation owner token ttl_ms lease_ms record_ttl_s agent kiosk model
local p, id, resv, owner, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, lease, record_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local agent, kiosk, model = ARGV[9], ARGV[10], ARGV[11]
redis.call('ZREM', p .. ':calls', resv)
redis.call('ZADD', p .. ':calls', ms(now + lease), id)
if kiosk ~= '' then
  redis.call('ZREM', p .. ':kcalls:' .. kiosk, resv)
  redis.call('ZADD', p .. ':kcalls:' .. kiosk, ms(now + lease), id)
end
local rec = p .. ':call:' .. id
redis.call('HSET', rec, 'owner', owner, 'agent', agent, 'created', ms(now), 'heartbeat', ms(now),
  'accounted', ms(now), 'kiosk', kiosk, 'state', 'live', 'model', model)
redis.call('EXPIRE', rec, record_ttl)
redis.call('SET', p .. ':lock:' .. id, token, 'PX', ttl)
redis.call('SADD', p .. ':callidx', id)
accrue(p, kiosk, {calls = 1})
return 1
"""
)

USAGE_FIELDS = ("text_in", "text_cached", "audio_in", "audio_cached", "text_out", "audio_out", "cost_micro_usd")

HEARTBEAT = (
    _NOW
    + _ACCRUE
    + """
-- ARGV: p ttl_ms lease_ms record_ttl_s, then per call: id token text_in text_cached audio_in audio_cached
--       text_out audio_out cost_micro_usd.  -> {1|0 per call}: 0 = we do not hold its lock (any more).
local p, ttl, lease, record_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local names = {'text_in', 'text_cached', 'audio_in', 'audio_cached', 'text_out', 'audio_out', 'cost_micro_usd'}
local out = {}
local i = 5
while i <= #ARGV do
  local id, token = ARGV[i], ARGV[i + 1]
  local lock = p .. ':lock:' .. id
  if redis.call('GET', lock) == token then
    redis.call('PEXPIRE', lock, ttl)
    local rec = p .. ':call:' .. id
    local f = redis.call('HMGET', rec, 'accounted', 'kiosk')
    local acc = tonumber(f[1]) or now
    local fields = {call_seconds = math.max(0, now - acc) / 1000}
    for j, name in ipairs(names) do fields[name] = tonumber(ARGV[i + 1 + j]) or 0 end
    redis.call('HSET', rec, 'heartbeat', ms(now), 'accounted', ms(now))
    redis.call('EXPIRE', rec, record_ttl)
    redis.call('ZADD', p .. ':calls', ms(now + lease), id)
    if f[2] and f[2] ~= '' then redis.call('ZADD', p .. ':kcalls:' .. f[2], ms(now + lease), id) end
    accrue(p, f[2], fields)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + 2 + #names
end
return out
"""
)

END = (
    _NOW
    + _ACCRUE
    + """
-- ARGV: p call_id token('' = anyone: the call was hung up upstream) count('1': its time runs until now)
--       text_in text_cached audio_in audio_cached text_out audio_out cost_micro_usd (the owner's last usage)
-- -> 1 if this ended it, 0 if it was already ended/unknown or someone else holds it. The usage is added
-- whenever the record exists: a call another replica hung up still gets its owner's last tokens.
local p, id, token, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rec = p .. ':call:' .. id
local f = redis.call('HMGET', rec, 'state', 'accounted', 'kiosk')
if not f[1] then return 0 end
local names = {'text_in', 'text_cached', 'audio_in', 'audio_cached', 'text_out', 'audio_out', 'cost_micro_usd'}
local used = {}
for j, name in ipairs(names) do used[name] = tonumber(ARGV[4 + j]) or 0 end
accrue(p, f[3], used)
if f[1] == 'ended' then return 0 end
local lock = p .. ':lock:' .. id
if token ~= '' and redis.call('GET', lock) ~= token then return 0 end
if count == '1' then accrue(p, f[3], {call_seconds = math.max(0, now - (tonumber(f[2]) or now)) / 1000}) end
redis.call('HSET', rec, 'state', 'ended', 'ended', ms(now), 'accounted', ms(now))
redis.call('EXPIRE', rec, 3600)
redis.call('DEL', lock)
redis.call('ZREM', p .. ':calls', id)
if f[3] and f[3] ~= '' then redis.call('ZREM', p .. ':kcalls:' .. f[3], id) end
redis.call('SREM', p .. ':callidx', id)
return 1
"""
)

CLAIM_TOOL_CALL = """
-- ARGV: p call_id tool_call_id replica -> {won 1|0, the call's active agent or ''}
local won = redis.call('SET', ARGV[1] .. ':fc:' .. ARGV[2] .. ':' .. ARGV[3], ARGV[4], 'NX', 'EX', 3600)
local agent = redis.call('HGET', ARGV[1] .. ':call:' .. ARGV[2], 'agent')
return {won and 1 or 0, agent or ''}
"""

SET_AGENT = """
-- ARGV: p call_id tool_call_id replica agent. Only the replica that won the handoff's tool call writes.
local rec = ARGV[1] .. ':call:' .. ARGV[2]
if redis.call('GET', ARGV[1] .. ':fc:' .. ARGV[2] .. ':' .. ARGV[3]) == ARGV[4] and redis.call('EXISTS', rec) == 1 then
  redis.call('HSET', rec, 'agent', ARGV[5])
  return 1
end
return 0
"""

RELEASE = (
    _NOW
    + """
-- ARGV: p call_id token. Graceful handover: free the lock at once and tell the other replicas.
local lock = ARGV[1] .. ':lock:' .. ARGV[2]
if redis.call('GET', lock) ~= ARGV[3] then return 0 end
redis.call('DEL', lock)
redis.call('HSET', ARGV[1] .. ':call:' .. ARGV[2], 'state', 'handover', 'released', ms(now))
redis.call('PUBLISH', ARGV[1] .. ':handover', ARGV[2])
return 1
"""
)

CLAIM_ORPHAN = (
    _NOW
    + """
-- ARGV: p owner token ttl_ms lease_ms
-- -> {id, agent, created, kiosk, previous owner, previous state, model, released (ms, '0' = never)}
-- for the first registered call nobody holds (its owner died or handed it over), now locked by us; or nil.
local p, owner, token, ttl, lease = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
for _, id in ipairs(redis.call('SMEMBERS', p .. ':callidx')) do
  local rec = p .. ':call:' .. id
  local f = redis.call('HMGET', rec, 'state', 'agent', 'created', 'kiosk', 'owner', 'model', 'released')
  if not f[1] or f[1] == 'ended' then
    redis.call('SREM', p .. ':callidx', id)
  elseif redis.call('EXISTS', p .. ':lock:' .. id) == 0 then
    redis.call('SET', p .. ':lock:' .. id, token, 'PX', ttl)
    redis.call('HSET', rec, 'owner', owner, 'state', 'taking_over', 'previous_owner', f[5] or '')
    redis.call('ZADD', p .. ':calls', ms(now + lease), id)
    if f[4] and f[4] ~= '' then redis.call('ZADD', p .. ':kcalls:' .. f[4], ms(now + lease), id) end
    return {id, f[2] or '', f[3] or '0', f[4] or '', f[5] or '', f[1], f[6] or '', f[7] or '0'}
  end
end
return false
"""
)

MARK_ATTACHED = (
    _NOW
    + """
-- ARGV: p call_id token owner
if redis.call('GET', ARGV[1] .. ':lock:' .. ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', ARGV[1] .. ':call:' .. ARGV[2], 'state', 'live', 'owner', ARGV[4], 'attached', ms(now))
return 1
"""
)

KIOSK_ADD = (
    _NOW
    + """
-- ARGV: p name token_hash max_calls seconds_per_day -> 1 added, 0 exists (and is not revoked)
local p, name, hash = ARGV[1], ARGV[2], ARGV[3]
local k = p .. ':kiosk:' .. name
local old = redis.call('HMGET', k, 'revoked', 'hash')
if old[2] and old[1] ~= '1' then return 0 end
if old[2] then redis.call('DEL', p .. ':ktok:' .. old[2]) end
redis.call('DEL', k)
redis.call('HSET', k, 'name', name, 'hash', hash, 'created', ms(now), 'max_calls', ARGV[4],
  'seconds_per_day', ARGV[5], 'revoked', '0')
redis.call('SET', p .. ':ktok:' .. hash, name)
redis.call('SADD', p .. ':kiosks', name)
return 1
"""
)

KIOSK_REVOKE = (
    _NOW
    + """
-- ARGV: p name -> 1 revoked, 0 unknown
local k = ARGV[1] .. ':kiosk:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'revoked', '1', 'revoked_at', ms(now))
return 1
"""
)
