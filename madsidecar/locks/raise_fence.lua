-- Redlock: after a quorum granted the lock, raise every granting master's counter to the
-- fence issued, so that any later quorum (which shares a master with this one) issues a
-- greater fence.
-- KEYS[1] fence key; ARGV[1] the fence issued
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
