-- lock.release: delete the lock only if this token holds it, and wake the waiters.
-- KEYS[1] lock key; ARGV[1] token, ARGV[2] wake-up channel
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
