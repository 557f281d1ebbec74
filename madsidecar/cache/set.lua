-- cache.set: store the value and void any lease on the key, atomically, so a fill
-- holding that lease can never land on top of this write.
-- KEYS[1] value key, KEYS[2] lease key; ARGV[1] encoded value, ARGV[2] TTL in ms
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
