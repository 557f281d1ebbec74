-- The sweeper: remove every entry of a node whose lease lapsed, publishing the leaves,
-- then forget the node. Any live node may run it; the claim keeps two from doing it twice.
-- KEYS[1] the dead node's lease, KEYS[2] its channel list, KEYS[3] the node registry,
-- KEYS[4] the sweep claim; ARGV[1] the dead node's tag, ARGV[2] the sweeper's tag,
-- ARGV[3] claim TTL ms. Returns the number of entries removed, or -1 if not swept.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1  -- alive again
end
if not redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return -1  -- another node is sweeping it
end
local removed = 0
local channels = redis.call('HGETALL', KEYS[2])
for i = 1, #channels, 2 do
  local entries, diff_channel = channels[i], channels[i + 1]
  local version_key = string.sub(entries, 1, -2) .. 'v'
  local cursor = '0'
  local leaves = {}
  repeat
    local page = redis.call('HSCAN', entries, cursor, 'MATCH', ARGV[1] .. '.*', 'COUNT', 1000)
    cursor = page[1]
    for j = 1, #page[2], 2 do
      leaves[#leaves + 1] = page[2][j + 1]
      redis.call('HDEL', entries, page[2][j])
    end
  until cursor == '0'
  if #leaves > 0 then
    removed = removed + #leaves
    local version = redis.call('INCR', version_key)
    redis.call('PUBLISH', diff_channel, version .. ':0:' .. table.concat(leaves))
  end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return removed
