-- The sweeper's claim on a node whose lease lapsed: any live node may sweep it, the claim
-- keeps two from doing it at once. All three keys carry the dead node's hash tag.
-- KEYS[1] the dead node's lease, KEYS[2] its channel list, KEYS[3] the sweep claim;
-- ARGV[1] the sweeper's tag, ARGV[2] claim TTL ms.
-- Returns the channel list (entries key, diff channel, ...), or false if not to sweep.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false  -- alive again
end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false  -- another node is sweeping it
end
return redis.call('HGETALL', KEYS[2])
