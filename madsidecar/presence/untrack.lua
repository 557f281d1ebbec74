-- presence.untrack: remove an entry and publish its leave.
-- KEYS[1] entries, KEYS[2] version; ARGV[1] ref, ARGV[2] the diff channel
-- Returns the diff's version, or 0 when there was no such entry.
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], version .. ':0:' .. stored)
return version
