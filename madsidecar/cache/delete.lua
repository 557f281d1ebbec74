-- cache.delete: KEYS are pairs (value key, lease key); returns the values deleted.
local deleted = 0
for i = 1, #KEYS, 2 do
  deleted = deleted + redis.call('DEL', KEYS[i])
  redis.call('DEL', KEYS[i + 1])
end
return deleted
