-- session.list: a user's live sessions, oldest expiry first.
-- KEYS[1] user index; ARGV[1] the namespace's key root
-- Returns {sid, created, seen, exp, data} for each.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local digest = redis.call('GET', ARGV[1] .. 'i:' .. sid)
  if digest then
    local f = redis.call('HMGET', ARGV[1] .. 't:' .. digest, 'sid', 'created', 'seen', 'exp', 'data')
    if f[1] then
      out[#out + 1] = f
    end
  end
end
return out
