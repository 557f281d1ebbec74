-- hit_many across hash slots (Redis Cluster only): give back what one slot's checks
-- consumed when a check in another slot was denied, so that none consumes.
-- KEYS[i]: check i's counter. ARGV[1]: the time (us) the hit ran at, as check.lua
-- returned it; then four per check: algorithm (sw, sc, gc), limit, window ms, cost.
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 4
  local kind, key = ARGV[at], KEYS[i]
  local limit, window, cost = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]) * 1000, tonumber(ARGV[at + 3])
  if kind == 'sw' then
    -- The hit's units all carry its time as their score; any `cost` of that score will do.
    local score = string.format('%.0f', now)
    local left = cost
    while left > 0 do
      local units = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', 0, math.min(left, 1000))
      if #units == 0 then
        break
      end
      redis.call('ZREM', key, unpack(units))
      left = left - #units
    end
  elseif kind == 'sc' then
    redis.call('HINCRBY', key, window .. ':' .. math.floor(now / window), -cost)
  else
    local tat = tonumber(redis.call('GET', key))
    if tat then
      local back = tat - cost * math.floor(window / limit)
      redis.call('SET', key, string.format('%.0f', back), 'PX', math.max(redis.call('PTTL', key), 1))
    end
  end
end
return 1
