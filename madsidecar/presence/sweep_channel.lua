-- The sweeper, one channel: remove a dead node's entries and publish their leaves.
-- KEYS[1] entries, KEYS[2] version; ARGV[1] the dead node's tag, ARGV[2] the diff channel.
-- Returns the number of entries removed.
local cursor = '0'
local leaves = {}
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'MATCH', ARGV[1] .. '.*', 'COUNT', 1000)
  cursor = page[1]
  for j = 1, #page[2], 2 do
    leaves[#leaves + 1] = page[2][j + 1]
    redis.call('HDEL', KEYS[1], page[2][j])
  end
until cursor == '0'
if #leaves > 0 then
  local version = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[2], version .. ':0:' .. table.concat(leaves))
end
return #leaves
