-- session.create: the record, its id index and its place in the user's index, one step.
-- KEYS[1] record, KEYS[2] id index, KEYS[3] user index
-- ARGV[1] session id, ARGV[2] user id, ARGV[3] data (MessagePack), ARGV[4] idle TTL ms,
-- ARGV[5] absolute TTL ms, ARGV[6] the token's digest
-- Returns {expires_at_ms, now_ms}. Times are Redis's clock, the same for every node.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local absolute = now + tonumber(ARGV[5])
local expires = math.min(now + tonumber(ARGV[4]), absolute)
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'uid', ARGV[2], 'data', ARGV[3],
  'created', now, 'seen', now, 'idle', ARGV[4], 'abs', absolute, 'exp', expires)
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('SET', KEYS[2], ARGV[6], 'PXAT', expires)
-- The user index is trimmed of expired sessions on every write, and lives as long as
-- its longest-lived session.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[3], tonumber(last[2]))
return {expires, now}
