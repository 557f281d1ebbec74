-- session.revoke {session_id}: KEYS[1] id index; ARGV[1] the namespace's key root,
-- ARGV[2] the session id. Returns the revoked record's digest, or false.
local digest = redis.call('GET', KEYS[1])
if not digest then
  return false
end
local record = ARGV[1] .. 't:' .. digest
local uid = redis.call('HGET', record, 'uid')
redis.call('DEL', record, KEYS[1])
if uid then
  redis.call('ZREM', ARGV[1] .. 'u:' .. uid, ARGV[2])
end
return digest
