-- presence.list / subscribe: the channel's version and its entries on live nodes only
-- (an entry's ref starts with its node's tag; a node is live while its lease key is).
-- KEYS[1] entries, KEYS[2] version; ARGV[1] the lease key root
-- Returns {version, stored value, ...}.
local out = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local live = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local tag = string.match(fields[i], '^([^.]+)%.')
  if tag then
    if live[tag] == nil then
      live[tag] = redis.call('EXISTS', ARGV[1] .. tag) == 1
    end
    if live[tag] then
      out[#out + 1] = fields[i + 1]
    end
  end
end
return out
