-- lock.inspect: {holder's remaining ms (-2 when free), last fence issued (0 if never)}
-- KEYS[1] lock key, KEYS[2] fence key
return {redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
