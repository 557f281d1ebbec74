-- cache.fill: store the value only while the caller's lease is still the current one.
-- KEYS[1] value key, KEYS[2] lease key; ARGV[1] token, ARGV[2] encoded value, ARGV[3] TTL ms
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
