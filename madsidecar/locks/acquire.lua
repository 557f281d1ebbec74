-- lock.acquire: take the lock if free and issue the next fence, in one step.
-- KEYS[1] lock key, KEYS[2] fence key (one hash slot); ARGV[1] token, ARGV[2] TTL ms
-- Returns {1, fence, ttl} when acquired, {0, 0, holder's remaining ms} when not.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, 0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
if fence == 1 then
  -- A name never locked, or a fence counter lost with Redis's data: start from the
  -- clock (microseconds), so fences stay above any issued before the loss.
  local now = redis.call('TIME')
  fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[2], fence)
end
return {1, fence, tonumber(ARGV[2])}
