-- lock.extend and renewal: push the expiry out only if this token still holds the lock.
-- KEYS[1] lock key; ARGV[1] token, ARGV[2] TTL ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
