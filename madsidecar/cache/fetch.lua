-- cache.fetch: one round trip decides hit, lease or wait, fleet-wide.
-- KEYS[1] value key, KEYS[2] lease key
-- ARGV[1] lease token, ARGV[2] lease ms, ARGV[3] refresh-ahead ms (0: off)
-- Returns {0, value, pttl} hit; {1, false, 0} miss, lease granted;
--         {2, value, pttl} hit, lease granted to refresh ahead; {3, false, lease pttl} wait.
local value = redis.call('GET', KEYS[1])
if value then
  local pttl = redis.call('PTTL', KEYS[1])
  local ahead = tonumber(ARGV[3])
  if ahead > 0 and pttl >= 0 and pttl < ahead
      and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {2, value, pttl}
  end
  return {0, value, pttl}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, false, 0}
end
return {3, false, redis.call('PTTL', KEYS[2])}
