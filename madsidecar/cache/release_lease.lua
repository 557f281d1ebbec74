-- A lease holder went away: drop its lease if it is still the current one, so that a
-- waiter (woken by this key's invalidation) can take a new one.
-- KEYS[1] lease key; ARGV[1] token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
