-- ratelimit.hit, hit_many and peek: every check decided at once, on Redis's clock, and
-- all of them consume or none does (a denied hit consumes nothing).
-- KEYS[i]: check i's counter. ARGV[1]: "hit" or "peek"; then five per check:
-- algorithm (sw, sc, gc), limit, window ms, cost, shadow (1: never blocks the others).
-- Returns {consumed (0/1), then per check: allowed (0/1), remaining, reset ms, retry ms}.
-- Times are integer microseconds; every value stays far below 2^53, so doubles are exact.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local hit = ARGV[1] == 'hit'

local function fmt(n)
  return string.format('%.0f', n)
end

local function ms(us)
  if us <= 0 then
    return 0
  end
  return math.ceil(us / 1000)
end

-- Exact log: one sorted-set entry per unit, scored by when it was consumed.
local sliding_window = {}
function sliding_window.decide(c)
  redis.call('ZREMRANGEBYSCORE', c.key, '-inf', fmt(now - c.window))
  c.used = redis.call('ZCARD', c.key)
  c.available = c.limit - c.used
  if c.used + c.cost <= c.limit then
    return true, 0
  end
  -- Free once the entry that would leave room for `cost` units leaves the window.
  local index = c.used + c.cost - c.limit - 1
  local entry = redis.call('ZRANGE', c.key, index, index, 'WITHSCORES')
  return false, tonumber(entry[2]) + c.window - now
end
function sliding_window.consume(c)
  -- Members are unique per key: the same microsecond never holds the same count twice.
  local score = fmt(now)
  local stem = score .. ':'
  local i = 1
  while i <= c.cost do
    local args = {}
    local last = math.min(c.cost, i + 999)
    for n = i, last do
      args[#args + 1] = score
      args[#args + 1] = stem .. (c.used + n)
    end
    redis.call('ZADD', c.key, unpack(args))
    i = last + 1
  end
  redis.call('PEXPIRE', c.key, math.ceil(c.window / 1000))
end
function sliding_window.reset(c, consumed)
  if consumed then
    return c.window
  end
  if c.used == 0 then
    return 0
  end
  local newest = redis.call('ZRANGE', c.key, -1, -1, 'WITHSCORES')
  return tonumber(newest[2]) + c.window - now
end

-- Two fixed windows, the previous one weighted by how much of it the sliding window
-- still covers (Cloudflare's counter): two integers per key.
local sliding_counter = {}
function sliding_counter.decide(c)
  local index = math.floor(now / c.window)
  c.index = index
  c.current_field = c.window .. ':' .. index
  local counts = redis.call('HMGET', c.key, c.current_field, c.window .. ':' .. (index - 1))
  local current, previous = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
  c.current, c.previous = current, previous
  local elapsed = now - index * c.window
  local estimate = previous * (c.window - elapsed) / c.window + current
  c.available = math.max(math.floor(c.limit - estimate), 0)
  if estimate + c.cost <= c.limit then
    return true, 0
  end
  if current + c.cost <= c.limit then
    -- Later in this window, once the previous window's weight has fallen far enough.
    local needed = c.window * (1 - (c.limit - c.cost - current) / previous)
    return false, needed - elapsed
  end
  -- In the next window, once this one's weight has.
  local needed = c.window * (1 - (c.limit - c.cost) / current)
  return false, (index + 1) * c.window - now + needed
end
function sliding_counter.consume(c)
  redis.call('HINCRBY', c.key, c.current_field, c.cost)
  redis.call('HDEL', c.key, c.window .. ':' .. (c.index - 2))
  redis.call('PEXPIRE', c.key, math.ceil(2 * c.window / 1000))
  c.current = c.current + c.cost
end
function sliding_counter.reset(c, consumed)
  if c.current > 0 then
    return (c.index + 2) * c.window - now
  end
  if c.previous > 0 then
    return (c.index + 1) * c.window - now
  end
  return 0
end

-- GCRA: the theoretical arrival time of the next unit, one unit every `interval`, at
-- most `limit` ahead of now.
local gcra = {}
function gcra.decide(c)
  c.interval = math.floor(c.window / c.limit)
  local tolerance = c.interval * c.limit
  local tat = tonumber(redis.call('GET', c.key)) or now
  if tat < now then
    tat = now
  end
  c.tat = tat
  c.new_tat = tat + c.cost * c.interval
  c.available = math.floor((tolerance - (tat - now)) / c.interval)
  if c.new_tat - now <= tolerance then
    return true, 0
  end
  return false, c.new_tat - tolerance - now
end
function gcra.consume(c)
  redis.call('SET', c.key, fmt(c.new_tat), 'PX', math.max(ms(c.new_tat - now), 1))
end
function gcra.reset(c, consumed)
  if consumed then
    return c.new_tat - now
  end
  return c.tat - now
end

local ALGORITHMS = {sw = sliding_window, sc = sliding_counter, gc = gcra}

local checks = {}
local all_pass = true
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 5
  local c = {
    key = KEYS[i],
    algorithm = ALGORITHMS[ARGV[base + 1]],
    limit = tonumber(ARGV[base + 2]),
    window = tonumber(ARGV[base + 3]) * 1000,
    cost = tonumber(ARGV[base + 4]),
  }
  c.allowed, c.retry = c.algorithm.decide(c)
  if not c.allowed and ARGV[base + 5] ~= '1' then
    all_pass = false
  end
  checks[i] = c
end

local consume = hit and all_pass
local reply = {consume and 1 or 0}
for i = 1, #checks do
  local c = checks[i]
  local consumed = consume and c.allowed
  local remaining = c.available
  if consumed then
    c.algorithm.consume(c)
    remaining = remaining - c.cost
  end
  reply[#reply + 1] = c.allowed and 1 or 0
  reply[#reply + 1] = math.max(remaining, 0)
  reply[#reply + 1] = ms(c.algorithm.reset(c, consumed))
  reply[#reply + 1] = ms(c.retry)
end
return reply
