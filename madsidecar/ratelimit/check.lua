-- ratelimit.hit, hit_many and peek, decided on Redis's clock. The sidecar sends the calls
-- it queued back to back on its link as one (MergingScript): each call is a group of
-- checks, and the groups run in order, each on its own. Within a group every check is
-- decided at once, and all of them consume or none does (a denied hit consumes nothing).
-- ARGV, per group: "hit" or "peek", the number of checks n, then five per check:
-- algorithm (sw, sc, gc), limit, window ms, cost, shadow (1: never blocks the others).
-- KEYS: each check's counter, group after group.
-- Returns one reply per group: {consumed (0/1), then per check: allowed (0/1), remaining,
-- reset ms, retry ms, then Redis's time in us}.
-- Times are integer microseconds; every value stays far below 2^53, so doubles are exact.
-- The body runs anew on every call: the functions below are made once per call, never
-- per check, and a group of one check (a hit) is decided and consumed in one pass,
-- without the per-check tables a group of many needs between its two passes.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
-- Numbers reach Redis as text, and Lua's number formatting costs more than a Redis
-- command: Redis's own clock text is the score of every unit consumed here, and a
-- window's cutoff is formatted once per call.
local now_text = clock[1] .. string.rep('0', 6 - #clock[2]) .. clock[2]
local cutoffs = {}

-- Whether `cost` more units fit now. Returns: an error reply (a counter of the wrong
-- type) or nil; allowed; units available; retry (us); and what consuming needs (sw: the
-- units in the window; sc: the window's index and its two counts; gc: the theoretical
-- arrival times before and after).
local function decide(kind, key, limit, window_arg, window, cost)
  if kind == 'sw' then
    -- Exact log: one sorted-set entry per unit, scored by when it was consumed.
    local cutoff = cutoffs[window_arg]
    if not cutoff then
      cutoff = string.format('%.0f', now - window)
      cutoffs[window_arg] = cutoff
    end
    local removed = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    if type(removed) == 'table' then
      return removed
    end
    local used = redis.call('ZCARD', key)
    if used + cost <= limit then
      return nil, true, limit - used, 0, used
    end
    -- Room once the entry that would leave it leaves the window.
    local at = used + cost - limit - 1
    local entry = redis.call('ZRANGE', key, at, at, 'WITHSCORES')
    return nil, false, limit - used, tonumber(entry[2]) + window - now, used
  elseif kind == 'sc' then
    -- Two fixed windows, the previous one weighted by how much of it the sliding window
    -- still covers (Cloudflare's counter).
    local index = math.floor(now / window)
    local counts = redis.pcall('HMGET', key, window .. ':' .. index, window .. ':' .. (index - 1))
    if counts.err then
      return counts
    end
    local current, previous = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
    local elapsed = now - index * window
    local estimate = previous * (window - elapsed) / window + current
    local available = math.max(math.floor(limit - estimate), 0)
    if estimate + cost <= limit then
      return nil, true, available, 0, index, current, previous
    end
    local wait
    if current + cost <= limit then
      -- Later in this window, once the previous window's weight has fallen enough.
      wait = window * (1 - (limit - cost - current) / previous) - elapsed
    else
      -- In the next window, once this one's weight has.
      wait = (index + 1) * window - now + window * (1 - (limit - cost) / current)
    end
    return nil, false, available, wait, index, current, previous
  end
  -- GCRA: the theoretical arrival time of the next unit, one unit every `interval`, at
  -- most `limit` units ahead of now.
  local interval = math.floor(window / limit)
  local tolerance = interval * limit
  local stored = redis.pcall('GET', key)
  if type(stored) == 'table' then
    return stored
  end
  local tat = tonumber(stored) or now
  if tat < now then
    tat = now
  end
  local after = tat + cost * interval
  local available = math.floor((tolerance - (tat - now)) / interval)
  if after - now <= tolerance then
    return nil, true, available, 0, tat, after
  end
  return nil, false, available, after - tolerance - now, tat, after
end

-- Consume `cost` units (when `consumed`) and answer the time until the counter is back
-- to empty (us), from what `decide` found (a, b, c).
local function settle(consumed, kind, key, window_arg, window, cost, a, b, c)
  if kind == 'sw' then
    if consumed then
      -- A unit's member is the time it was consumed at, unique per counter: a second
      -- unit of the same microsecond (this call's) gets a suffix past the units in the
      -- window, which no member of this microsecond has yet.
      if cost > 1 or redis.call('ZADD', key, now_text, now_text) == 0 then
        local from = 1
        while from <= cost do
          local args, last = {}, math.min(cost, from + 999)
          for unit = from, last do
            args[#args + 1] = now_text
            args[#args + 1] = now_text .. ':' .. (a + unit)
          end
          redis.call('ZADD', key, unpack(args))
          from = last + 1
        end
      end
      redis.call('PEXPIRE', key, window_arg)
      return window
    elseif a > 0 then
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      return tonumber(newest[2]) + window - now
    end
    return 0
  elseif kind == 'sc' then
    local current = b
    if consumed then
      redis.call('HINCRBY', key, window .. ':' .. a, cost)
      redis.call('HDEL', key, window .. ':' .. (a - 2))
      redis.call('PEXPIRE', key, 2 * window_arg)
      current = current + cost
    end
    if current > 0 then
      return (a + 2) * window - now
    elseif c > 0 then
      return (a + 1) * window - now
    end
    return 0
  end
  local tat = a
  if consumed then
    tat = b
    -- Kept for the window, at least as long as its TAT is ahead of now.
    redis.call('SET', key, string.format('%.0f', tat), 'PX', window_arg)
  end
  return tat - now
end

local function ms(us)
  return us > 0 and math.ceil(us / 1000) or 0
end

local replies = {}
local first, group_at = 1, 1
while group_at <= #ARGV do
  local operation, n = ARGV[group_at], tonumber(ARGV[group_at + 1])
  if n == 1 then
    local kind, key, window_arg = ARGV[group_at + 2], KEYS[first], ARGV[group_at + 4]
    local limit, window, cost = tonumber(ARGV[group_at + 3]), tonumber(window_arg) * 1000, tonumber(ARGV[group_at + 5])
    local failure, ok, available, wait, a, b, c = decide(kind, key, limit, window_arg, window, cost)
    if failure then
      replies[#replies + 1] = failure
    else
      -- As for a group of many: a shadow check never stops its group from consuming.
      local consume = (ok or ARGV[group_at + 6] == '1') and operation == 'hit'
      local consumed = consume and ok
      local reset = settle(consumed, kind, key, window_arg, window, cost, a, b, c)
      if consumed then
        available = available - cost
      end
      replies[#replies + 1] = {consume and 1 or 0, ok and 1 or 0, math.max(available, 0), ms(reset), ms(wait), now}
    end
  else
    -- Every check decided first, then all consume or none.
    local allowed, available, retry, a, b, c = {}, {}, {}, {}, {}, {}
    local pass, failure = true, nil
    for i = first, first + n - 1 do
      local at = group_at + 2 + (i - first) * 5
      local window_arg = ARGV[at + 2]
      local ok
      failure, ok, available[i], retry[i], a[i], b[i], c[i] = decide(ARGV[at], KEYS[i], tonumber(ARGV[at + 1]), window_arg, tonumber(window_arg) * 1000, tonumber(ARGV[at + 3]))
      if failure then
        break
      end
      allowed[i] = ok
      if not ok and ARGV[at + 4] ~= '1' then
        pass = false
      end
    end
    if failure then
      replies[#replies + 1] = failure
    else
      local consume = pass and operation == 'hit'
      local reply = {consume and 1 or 0}
      for i = first, first + n - 1 do
        local at = group_at + 2 + (i - first) * 5
        local window_arg, cost = ARGV[at + 2], tonumber(ARGV[at + 3])
        local consumed = consume and allowed[i]
        local reset = settle(consumed, ARGV[at], KEYS[i], window_arg, tonumber(window_arg) * 1000, cost, a[i], b[i], c[i])
        local remaining = available[i]
        if consumed then
          remaining = remaining - cost
        end
        reply[#reply + 1] = allowed[i] and 1 or 0
        reply[#reply + 1] = math.max(remaining, 0)
        reply[#reply + 1] = ms(reset)
        reply[#reply + 1] = ms(retry[i])
      end
      -- The time of the hit, which a cross-slot hit_many needs to undo it (refund.lua).
      reply[#reply + 1] = now
      replies[#replies + 1] = reply
    end
  end
  first, group_at = first + n, group_at + 2 + n * 5
end
return replies
