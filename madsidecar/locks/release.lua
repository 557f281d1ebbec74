-- lock.release: delete the lock only if this token holds it; wake the waiters, if any.
-- KEYS[1] lock key, KEYS[2] waiters flag; ARGV[1] token, ARGV[2] wake-up channel
-- Returns 0 (not held by this token), 1 (released), 2 (released, and waiters were woken).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
-- One DEL for both: it counts the waiters flag as the second key deleted.
if redis.call('DEL', KEYS[1], KEYS[2]) == 2 then
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 2
end
return 1
