-- presence.list / subscribe: the channel's version and every entry, ref and stored value
-- (the caller skips entries of nodes whose lease lapsed: leases live in other slots).
-- KEYS[1] entries, KEYS[2] version. Returns {version, ref, stored value, ...}.
local out = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields do
  out[#out + 1] = fields[i]
end
return out
