-- session.get with touch: the record, its idle expiry slid first if the last slide is at
-- least the touch interval old (so validation is not a write per request). Never past
-- the absolute expiry.
-- KEYS[1] record; ARGV[1] touch interval ms, ARGV[2] the namespace's key root
-- Returns the record's fields (HGETALL), empty when there is no such session.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return fields
end
local r = {}
for i = 1, #fields, 2 do
  r[fields[i]] = fields[i + 1]
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - tonumber(r['seen']) < tonumber(ARGV[1]) then
  return fields
end
local expires = math.min(now + tonumber(r['idle']), tonumber(r['abs']))
redis.call('HSET', KEYS[1], 'seen', now, 'exp', expires)
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('PEXPIREAT', ARGV[2] .. 'i:' .. r['sid'], expires)
local user = ARGV[2] .. 'u:' .. r['uid']
redis.call('ZREMRANGEBYSCORE', user, '-inf', now)
redis.call('ZADD', user, expires, r['sid'])
local last = redis.call('ZRANGE', user, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', user, tonumber(last[2]))
return redis.call('HGETALL', KEYS[1])
