"""The Lua scripts behind the Redis counters (counters_redis): admission, seeding, the epoch.

They live apart from the client so each can be read whole. Numbers in Lua are doubles: counters
are exact up to 2^53 (9e15 nano-units, nine million currency units per budget period; documented
in docs/metering.md). Increments stay strings so INCRBY gets the exact integer.

**Epoch.** `{prefix}epoch` holds a random token, set (once) by the first replica that has seeded
the counters from stored usage. Every admission call names the token its process counts in; when
the key is missing (Redis restarted empty, or was flushed) or holds another token (another replica
re-seeded it), the script changes nothing and answers 0, and the process re-seeds before it
admits again (counters_redis.RedisCounters._resync). So detecting an empty Redis costs one GET
inside the call that is made anyway, not a round trip.
"""

from __future__ import annotations

EXPIRED = 4  # an admission that reached Redis after its deadline: not applied (the caller gave up)

# KEYS[1]: the epoch key; KEYS[2]: this process's last call (below); then the counters being settled;
#       then the counters to top up; then per admission its budgets, rates and every deployment counter
#       (group by group).
# ARGV[1]: the epoch token this process counts in. ARGV[2]: this process's clock minus Redis's, ms.
# ARGV[3]: the call's number: a process numbers its calls upwards, and a call sent again on a new
#       connection (the first died, maybe after Redis ran the call) keeps its number. KEYS[2] holds the
#       last call applied: its number, the last settlement batch applied (below) and its reply, packed
#       with cmsgpack (exact integers; cjson would round past 14 digits). The same number again gets
#       that reply and nothing is applied, so a call counts once; a lower one is a late copy of a call
#       the process gave up on: an error, nothing applied. A process has one call in flight at a
#       time, so only its last is kept (one key per process; it expires a day after its last call).
# ARGV[4]: the settlements, "seq,delta1,...,deltaN" for the N counters after KEYS[2] ("" for none).
#       A delta is added only to a counter that still exists (a settlement never revives an expired
#       window), except one written "delta@expire_at_ms": its counter is made when it does not exist and
#       the window has not ended (a deployment's count of an answer it gave, when no call was charged on it
#       this minute: metering/limiter.py `walked`). One a counter cannot take (it holds no integer) is
#       skipped, not the rest. A batch
#       is applied once: one whose seq is not above the last applied one is a late copy of a call
#       that timed out and was sent again, and is skipped.
# ARGV[5]: lease top-ups (counters_lease), "deadline_ms,limit,want,least,..." per counter ("" for none).
#       A counter that does not exist is not revived; past the deadline nothing is granted.
# ARGV[6...]: one string per admission: "deadline_ms,nb,nr,ng,rate_expire_ms" then per budget:
#       limit,reserve,hard(1/0),expire_at_ms(0: never),want; per rate: limit,incr,want; per group: size,
#       then per counter: limit,incr,want. deadline_ms is on the caller's clock; past it, the caller has
#       already fallen back, so the admission is not applied (a stalled Redis runs it late). want: the
#       lease to grant besides (0: none), only on hard counters and the chosen group's.
# Reply: 0 when the epoch is not ARGV[1]; else {top-ups, admissions...}: top-ups as value,grant per
#       counter (value before the grant); per admission {0, chosen group, values after applying...,
#       grants...}, {code, index, used} when refused, or {4, -1, 0} when expired.
# A grant is min(want, floor((limit - value) / 8)), none when below `least` (one admission's
#       increment) or when less than 256 `least` are left: grants shrink near the limit and stop
#       256 admissions before it, so a replica is refused only for what other replicas hold unused
#       while more than that is left (docs/metering.md "Leases").
ADMIT = """
local call, settled = tonumber(ARGV[3]), 0
local last = redis.call('GET', KEYS[2])
if last then
  local at, ran = cmsgpack.unpack_one(last)
  at, settled = cmsgpack.unpack_one(last, at)
  if call == ran then
    local _, reply = cmsgpack.unpack_one(last, at)
    if type(reply) == 'string' then return redis.error_reply(reply) end  -- (the first run failed)
    return reply
  end
  if call < ran then return redis.error_reply('ERR a late copy of a call already superseded') end
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.replicate_commands then redis.replicate_commands() end
local function run()
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[2])
  -- Grants are made after every admission of the call, so none of them is refused for a lease
  -- granted in the same call: {out table, index in it, key, limit, want, least} each.
  local asked = {}
  local function grant(key, limit, want, least)
    local value = tonumber(redis.call('GET', key) or '0')
    -- Fewer than 256 admissions' worth left: no lease, so a small limit (and a large one's last
    -- 256 admissions) is met exactly whatever the replicas are offered.
    if limit - value < 256 * tonumber(least) then return 0 end
    local g = math.floor((limit - value) / 8)
    if g > want then g = want end
    if g < least or g <= 0 then return 0 end
    redis.call('INCRBY', key, string.format('%.0f', g))
    return g
  end
  local function admit(t, k0)
    local nb, nr, ng = tonumber(t[2]), tonumber(t[3]), tonumber(t[4])
    local rexp = t[5]
    local a = 6
    for i = 1, nb do
      local used = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
      if t[a + 2] == '1' and used + tonumber(t[a + 1]) > tonumber(t[a]) then return {1, i - 1, used} end
      a = a + 5
    end
    for i = 1, nr do
      local used = tonumber(redis.call('GET', KEYS[k0 + nb + i]) or '0')
      if used + tonumber(t[a + 1]) > tonumber(t[a]) then return {2, i - 1, used} end
      a = a + 3
    end
    local chosen, ck, ca, csize = -1, 0, 0, 0
    local k = k0 + nb + nr
    for g = 1, ng do
      local size = tonumber(t[a])
      a = a + 1
      local fits = true
      for j = 0, size - 1 do
        local used = tonumber(redis.call('GET', KEYS[k + 1 + j]) or '0')
        if used + tonumber(t[a + 3 * j + 1]) > tonumber(t[a + 3 * j]) then fits = false break end
      end
      if fits then chosen, ck, ca, csize = g - 1, k, a, size break end
      a = a + 3 * size
      k = k + size
    end
    if ng > 0 and chosen < 0 then return {3, -1, 0} end
    local out = {0, chosen}
    local first, ngrants = #asked + 1, 0
    local function ask(key, limit, want, least)
      ngrants = ngrants + 1
      if tonumber(want) > 0 then asked[#asked + 1] = {out, ngrants, key, limit, want, least} end
    end
    a = 6
    for i = 1, nb do
      local v = redis.call('INCRBY', KEYS[k0 + i], t[a + 1])
      out[#out + 1] = v
      if t[a + 3] ~= '0' then redis.call('PEXPIREAT', KEYS[k0 + i], t[a + 3]) end
      ask(KEYS[k0 + i], t[a], t[a + 2] == '1' and t[a + 4] or '0', t[a + 1])
      a = a + 5
    end
    for i = 1, nr do
      local v = redis.call('INCRBY', KEYS[k0 + nb + i], t[a + 1])
      out[#out + 1] = v
      redis.call('PEXPIREAT', KEYS[k0 + nb + i], rexp)
      ask(KEYS[k0 + nb + i], t[a], t[a + 2], t[a + 1])
      a = a + 3
    end
    for j = 0, csize - 1 do
      local key, b = KEYS[ck + 1 + j], ca + 3 * j
      local v = redis.call('INCRBY', key, t[b + 1])
      out[#out + 1] = v
      redis.call('PEXPIREAT', key, rexp)
      ask(key, t[b], t[b + 2], t[b + 1])
    end
    local n = #out  -- the values; then a grant per value, 0 until the grants are made (below)
    for i = 1, ngrants do out[n + i] = 0 end
    for i = first, #asked do asked[i][2] = n + asked[i][2] end
    return out
  end
  local k0 = 2
  local seq, apply = nil, false
  for v in string.gmatch(ARGV[4], '[^,]+') do
    if seq == nil then
      seq = tonumber(v)
      apply = seq > settled
      if apply then settled = seq end
    else
      k0 = k0 + 1
      if apply then
        -- "delta@expire_at_ms": a counter made if it does not exist (unless its window is over).
        local at = string.find(v, '@', 1, true)
        local d = at and string.sub(v, 1, at - 1) or v
        -- pcall: a counter that cannot take it (not an integer) does not stop the rest of the batch.
        if redis.call('EXISTS', KEYS[k0]) == 1 then
          redis.pcall('INCRBY', KEYS[k0], d)
        elseif at and tonumber(string.sub(v, at + 1)) > now then
          redis.call('SET', KEYS[k0], d)
          redis.call('PEXPIREAT', KEYS[k0], string.sub(v, at + 1))
        end
      end
    end
  end
  local tops, tf = {}, {}
  for v in string.gmatch(ARGV[5], '[^,]+') do tf[#tf + 1] = v end
  local tk = k0  -- the top-ups' keys follow; they are granted after the admissions (below)
  if #tf > 0 then k0 = k0 + (#tf - 1) / 3 end
  local replies = {tops}
  for n = 6, #ARGV do
    local t = {}
    for v in string.gmatch(ARGV[n], '[^,]+') do t[#t + 1] = v end
    if tonumber(t[1]) < now then replies[n - 4] = {4, -1, 0} else replies[n - 4] = admit(t, k0) end
    local nkeys, a = tonumber(t[2]) + tonumber(t[3]), 6 + 5 * tonumber(t[2]) + 3 * tonumber(t[3])
    for g = 1, tonumber(t[4]) do
      local size = tonumber(t[a])
      nkeys, a = nkeys + size, a + 1 + 3 * size
    end
    k0 = k0 + nkeys
  end
  for i = 1, #asked do
    local q = asked[i]
    q[1][q[2]] = grant(q[3], tonumber(q[4]), tonumber(q[5]), tonumber(q[6]))
  end
  if #tf > 0 then
    local late = tonumber(tf[1]) < now
    for i = 0, (#tf - 1) / 3 - 1 do
      local key = KEYS[tk + 1 + i]
      local v = redis.call('GET', key)
      local g = 0
      if v and not late then
        g = grant(key, tonumber(tf[2 + 3 * i]), tonumber(tf[3 + 3 * i]), tonumber(tf[4 + 3 * i]))
      end
      tops[#tops + 1] = tonumber(v or '0')
      tops[#tops + 1] = g
    end
  end
  return replies
end
-- A call that fails partway (a Redis error: what it applied stays) still records its settlement
-- batch, so the batch sent again is not applied twice; a copy of the call gets the same error.
local ok, replies = pcall(run)
if not ok and type(replies) ~= 'string' then replies = type(replies) == 'table' and replies.err or tostring(replies) end
redis.call('SET', KEYS[2], cmsgpack.pack(call, settled, replies), 'PX', 86400000)
if not ok then return redis.error_reply(replies) end
return replies
"""

# KEYS: counters to seed; ARGV: value, expire_at_ms (0: never) per key. SET NX: a running
# counter (spend plus reservations in flight) always wins over a seed.
SEED = """
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'NX') and ARGV[2 * i] ~= '0' then
    redis.call('PEXPIREAT', KEYS[i], ARGV[2 * i])
  end
end
return 0
"""

# KEYS[1]: the epoch key; ARGV[1]: a new token. The token in force: the existing one, else ours.
CLAIM = """
local token = redis.call('GET', KEYS[1])
if token then return token end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
