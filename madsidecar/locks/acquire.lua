-- lock.acquire: take the lock if free and issue the next fence, in one step.
-- KEYS[1] lock key, KEYS[2] fence key, KEYS[3] waiters flag (one hash slot)
-- ARGV[1] token, ARGV[2] TTL ms, ARGV[3] how long a waiter's flag lasts (0: not waiting)
-- Returns {1, fence, ttl} when acquired, {0, 0, holder's remaining ms} when not.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- A caller that will wait says so, so that the release publishes a wake-up; the flag
  -- is set before the release can run, so no wake-up is ever missed.
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[3], 1, 'PX', ARGV[3])
  end
  return {0, 0, redis.call('PTTL', KEYS[1])}
end
-- The fence is the counter plus one, but never below Redis's clock in microseconds: a
-- counter lost with Redis's data, or rolled back by a failover to a lagging replica or a
-- restore, still issues fences above every one issued before.
local fence = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
if fence < clock then
  fence = clock
  redis.call('SET', KEYS[2], fence)
end
return {1, fence, tonumber(ARGV[2])}
