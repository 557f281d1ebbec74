-- session.rotate: the same session under a new token; the old token is dead at once.
-- KEYS[1] old record, KEYS[2] new record; ARGV[1] the new token's digest,
-- ARGV[2] the namespace's key root. Returns 1, or 0 when there is no such session.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return 0
end
local r = {}
for i = 1, #fields, 2 do
  r[fields[i]] = fields[i + 1]
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIREAT', KEYS[2], r['exp'])
redis.call('SET', ARGV[2] .. 'i:' .. r['sid'], ARGV[1], 'PXAT', r['exp'])
redis.call('DEL', KEYS[1])
return 1
