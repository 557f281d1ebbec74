-- session.revoke_user: every session of a user but one (or all).
-- KEYS[1] user index; ARGV[1] the namespace's key root, ARGV[2] the session id to keep
-- ('' for none). Returns the digests of the sessions revoked (live ones only).
local revoked = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if sid ~= ARGV[2] then
    local index = ARGV[1] .. 'i:' .. sid
    local digest = redis.call('GET', index)
    if digest then
      redis.call('DEL', ARGV[1] .. 't:' .. digest, index)
      revoked[#revoked + 1] = digest
    end
    redis.call('ZREM', KEYS[1], sid)
  end
end
return revoked
