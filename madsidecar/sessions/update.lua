-- session.update: replace the data of a live session. KEYS[1] record; ARGV[1] data
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return 1
