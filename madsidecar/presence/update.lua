-- presence.update: new meta for an entry: one diff, the new entry joining and the old
-- one leaving (as Phoenix Presence reports it).
-- KEYS[1] entries, KEYS[2] version; ARGV[1] ref, ARGV[2] the new stored value,
-- ARGV[3] the diff channel. Returns the version, or 0 when there is no such entry.
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], version .. ':1:' .. ARGV[2] .. stored)
return version
