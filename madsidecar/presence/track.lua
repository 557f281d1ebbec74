-- presence.track: add an entry and publish its join, with the channel's next version.
-- KEYS[1] entries (hash: ref -> MessagePack [key, entry]), KEYS[2] version
-- ARGV[1] ref, ARGV[2] the stored [key, entry], ARGV[3] the diff channel
-- A diff on the wire: "<version>:<number of joins>:" then the joins' and the leaves'
-- stored values, back to back.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], version .. ':1:' .. ARGV[2])
return version
