-- session.revoke {token}: KEYS[1] record; ARGV[1] the namespace's key root.
-- Returns the revoked session's id, or false when there was no such session.
local sid = redis.call('HGET', KEYS[1], 'sid')
if not sid then
  return false
end
local uid = redis.call('HGET', KEYS[1], 'uid')
redis.call('DEL', KEYS[1], ARGV[1] .. 'i:' .. sid)
redis.call('ZREM', ARGV[1] .. 'u:' .. uid, sid)
return sid
