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
-- Written without closures or per-check tables: a script's body runs anew on every call,
-- and creating them cost more than the Redis commands.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
-- Numbers are passed to Redis as text, and Lua's number formatting costs more than a
-- Redis command: Redis's own clock text is the score of every unit consumed here, and a
-- window's cutoff is formatted once per call.
local now_text = clock[1] .. string.rep('0', 6 - #clock[2]) .. clock[2]
local cutoffs = {}
-- Units consumed by this call so far, per counter: what keeps their members unique.
local added = {}
local replies = {}
-- Per check (indexed as KEYS), from the first pass to the second: allowed, units
-- available now, retry (us), and what consuming needs (sw: units in the window; sc:
-- window index and its two counts; gc: the theoretical arrival times before and after).
local allowed, available, retry, a, b, c = {}, {}, {}, {}, {}, {}

local first, group_at = 1, 1
while group_at <= #ARGV do
  local n = tonumber(ARGV[group_at + 1])
  -- A counter of the wrong type fails its group alone, before anything is consumed
  -- (redis.pcall hands the error back instead of ending the script).
  local pass, failure = true, nil
  for i = first, first + n - 1 do
    local at = group_at + 1 + (i - first) * 5
    local kind, key = ARGV[at + 1], KEYS[i]
    local limit, window, cost = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]) * 1000, tonumber(ARGV[at + 4])
    local ok, wait = true, 0
    if kind == 'sw' then
      -- Exact log: one sorted-set entry per unit, scored by when it was consumed.
      local cutoff = cutoffs[ARGV[at + 3]]
      if not cutoff then
        cutoff = string.format('%.0f', now - window)
        cutoffs[ARGV[at + 3]] = cutoff
      end
      failure = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', cutoff)
      if type(failure) == 'table' then
        break
      end
      failure = nil
      local used = redis.call('ZCARD', key)
      a[i], available[i] = used, limit - used
      if used + cost > limit then
        -- Room once the entry that would leave it leaves the window.
        local entry = redis.call('ZRANGE', key, used + cost - limit - 1, used + cost - limit - 1, 'WITHSCORES')
        ok, wait = false, tonumber(entry[2]) + window - now
      end
    elseif kind == 'sc' then
      -- Two fixed windows, the previous one weighted by how much of it the sliding window
      -- still covers (Cloudflare's counter).
      local index = math.floor(now / window)
      local counts = redis.pcall('HMGET', key, window .. ':' .. index, window .. ':' .. (index - 1))
      if counts.err then
        failure = counts
        break
      end
      local current, previous = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
      local elapsed = now - index * window
      local estimate = previous * (window - elapsed) / window + current
      a[i], b[i], c[i] = index, current, previous
      available[i] = math.max(math.floor(limit - estimate), 0)
      if estimate + cost > limit then
        ok = false
        if current + cost <= limit then
          -- Later in this window, once the previous window's weight has fallen enough.
          wait = window * (1 - (limit - cost - current) / previous) - elapsed
        else
          -- In the next window, once this one's weight has.
          wait = (index + 1) * window - now + window * (1 - (limit - cost) / current)
        end
      end
    else
      -- GCRA: the theoretical arrival time of the next unit, one unit every `interval`,
      -- at most `limit` units ahead of now.
      local interval = math.floor(window / limit)
      local tolerance = interval * limit
      local stored = redis.pcall('GET', key)
      if type(stored) == 'table' then
        failure = stored
        break
      end
      local tat = tonumber(stored) or now
      if tat < now then
        tat = now
      end
      a[i], b[i] = tat, tat + cost * interval
      available[i] = math.floor((tolerance - (tat - now)) / interval)
      if b[i] - now > tolerance then
        ok, wait = false, b[i] - tolerance - now
      end
    end
    allowed[i], retry[i] = ok, wait
    if not ok and ARGV[at + 5] ~= '1' then
      pass = false
    end
  end

  if failure then
    replies[#replies + 1] = failure
  else
    local consume = pass and ARGV[group_at] == 'hit'
    local reply = {consume and 1 or 0}
    for i = first, first + n - 1 do
      local at = group_at + 1 + (i - first) * 5
      local kind, key = ARGV[at + 1], KEYS[i]
      local window, cost = tonumber(ARGV[at + 3]) * 1000, tonumber(ARGV[at + 4])
      local consumed = consume and allowed[i]
      local remaining, reset = available[i], 0
      if consumed then
        remaining = remaining - cost
      end
      if kind == 'sw' then
        if consumed then
          -- A unit's member is the time it was consumed at, followed by how many units
          -- this call consumed of the counter before it, if any: unique per counter.
          local before = added[key] or 0
          added[key] = before + cost
          if cost == 1 and before == 0 then
            redis.call('ZADD', key, now_text, now_text)
          else
            local from = 1
            while from <= cost do
              local args, last = {}, math.min(cost, from + 999)
              for unit = from, last do
                args[#args + 1] = now_text
                args[#args + 1] = now_text .. ':' .. (before + unit)
              end
              redis.call('ZADD', key, unpack(args))
              from = last + 1
            end
          end
          redis.call('PEXPIRE', key, ARGV[at + 3])
          reset = window
        elseif a[i] > 0 then
          local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
          reset = tonumber(newest[2]) + window - now
        end
      elseif kind == 'sc' then
        local current = b[i]
        if consumed then
          redis.call('HINCRBY', key, window .. ':' .. a[i], cost)
          redis.call('HDEL', key, window .. ':' .. (a[i] - 2))
          redis.call('PEXPIRE', key, math.ceil(2 * window / 1000))
          current = current + cost
        end
        if current > 0 then
          reset = (a[i] + 2) * window - now
        elseif c[i] > 0 then
          reset = (a[i] + 1) * window - now
        end
      else
        local tat = a[i]
        if consumed then
          tat = b[i]
          -- Kept for the window, at least as long as its TAT is ahead of now.
          redis.call('SET', key, string.format('%.0f', tat), 'PX', ARGV[at + 3])
        end
        reset = tat - now
      end
      reply[#reply + 1] = allowed[i] and 1 or 0
      reply[#reply + 1] = math.max(remaining, 0)
      reply[#reply + 1] = reset > 0 and math.ceil(reset / 1000) or 0
      reply[#reply + 1] = retry[i] > 0 and math.ceil(retry[i] / 1000) or 0
    end
    -- The time of the hit, which a cross-slot hit_many needs to undo it (refund.lua).
    reply[#reply + 1] = now
    replies[#replies + 1] = reply
  end
  first, group_at = first + n, group_at + 2 + n * 5
end
return replies
