-- ratelimit.reset: drop a key's counters (every algorithm) and touch its reset marker,
-- whose invalidation tells every node to forget the denials it remembers for the key.
-- KEYS[1..n-1] the counters, KEYS[n] the marker (one hash slot).
local n = #KEYS
for i = 1, n - 1 do
  redis.call('DEL', KEYS[i])
end
redis.call('SET', KEYS[n], '1', 'PX', 1000)
return 1
