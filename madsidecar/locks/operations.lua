-- Lock operations, run in order, each decided on its own: the sidecar sends every lock
-- operation it queued back to back on its link as one call (MergingScript), so Redis
-- parses and sets up a script once for all of them.
-- ARGV[1]: the wake-up channel. Then one operation after another, each taking its keys
-- from KEYS in turn:
--   'a', token, TTL ms, waiter flag ms (0: the caller will not wait)
--        acquire; keys: lock, fence counter, waiters flag (one hash slot).
--        Replies {1, fence, ttl} when acquired, {0, 0, holder's remaining ms} when not.
--   'r', token
--        release; keys: lock, waiters flag. Replies 0 (not held by this token), 1
--        (released) or 2 (released, and waiters were woken).
--   'e', token, TTL ms
--        extend (and renewal); keys: lock. Replies 1 if still held by the token, else 0.
-- Returns one reply per operation. An operation that fails (a key of the wrong type)
-- replies with its error and changes nothing; the others are unaffected (redis.pcall
-- hands the error back as a table instead of ending the script).
local channel = ARGV[1]
local now, now_text = nil, nil
local reply = {}
local key_at, at, last = 1, 2, #ARGV

while at <= last do
  local op, key, token = ARGV[at], KEYS[key_at], ARGV[at + 1]
  local answer
  if op == 'a' then
    local fence_key = KEYS[key_at + 1]
    local taken = redis.pcall('SET', key, token, 'NX', 'PX', ARGV[at + 2])
    if not taken then
      -- A caller that will wait says so, so that the release publishes a wake-up; the
      -- flag is set before the release can run, so no wake-up is ever missed.
      if ARGV[at + 3] ~= '0' then
        redis.call('SET', KEYS[key_at + 2], 1, 'PX', ARGV[at + 3])
      end
      answer = {0, 0, redis.call('PTTL', key)}
    elseif taken.err then
      answer = taken
    else
      local counter = redis.pcall('GET', fence_key)
      if type(counter) == 'table' then
        redis.call('DEL', key)
        answer = counter
      else
        -- The fence is the counter plus one, but never below Redis's clock in
        -- microseconds: a counter lost with Redis's data, or rolled back by a failover to
        -- a lagging replica or a restore, still issues fences above every one issued
        -- before. One clock reading serves the whole call; one write stores the fence.
        if now == nil then
          local clock = redis.call('TIME')
          now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
          -- Formatting a number costs Lua more than a Redis command: the clock's own text
          -- is the fence whenever the clock decides it (nearly always).
          now_text = clock[1] .. string.rep('0', 6 - #clock[2]) .. clock[2]
        end
        local fence = (tonumber(counter) or 0) + 1
        if fence < now then
          fence = now
          redis.call('SET', fence_key, now_text)
        else
          redis.call('SET', fence_key, string.format('%d', fence))
        end
        answer = {1, fence, tonumber(ARGV[at + 2])}
      end
    end
    key_at, at = key_at + 3, at + 4
  elseif op == 'r' or op == 'e' then
    local holder = redis.pcall('GET', key)
    if type(holder) == 'table' then
      answer = holder
    elseif holder ~= token then
      answer = 0
    elseif op == 'e' then
      redis.call('PEXPIRE', key, ARGV[at + 2])
      answer = 1
    -- One DEL for both: it counts the waiters flag as the second key deleted.
    elseif redis.call('DEL', key, KEYS[key_at + 1]) == 2 then
      redis.call('PUBLISH', channel, key)
      answer = 2
    else
      answer = 1
    end
    if op == 'r' then
      key_at, at = key_at + 2, at + 2
    else
      key_at, at = key_at + 1, at + 3
    end
  else
    return redis.error_reply('unknown lock operation ' .. tostring(op))
  end
  reply[#reply + 1] = answer
end
return reply
