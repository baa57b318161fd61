-- Enqueue ready jobs for one sender: append entries to a lane, remember their ids,
-- and say whether a dispatcher must be kicked (nobody owns the sender and no kick pending).
-- KEYS: none (all keys derive from the sender prefix ARGV[1]; one sender = one hash slot)
-- ARGV: prefix, lane (o|t|m), kick_ttl_ms, sender_name, entries...
local p = ARGV[1]
local lane = ARGV[2]
local kick_ttl = tonumber(ARGV[3])
-- One RPUSH and one SADD for the whole batch (callers send at most 500 entries).
local ids = {}
for i = 5, #ARGV do
  local e = ARGV[i]
  local first = string.find(e, '|', 1, true)
  local second = string.find(e, '|', first + 1, true)
  ids[#ids + 1] = string.sub(e, first + 1, second - 1)
end
if #ids > 0 then
  redis.call('RPUSH', p .. 'q:' .. lane, unpack(ARGV, 5))
  redis.call('SADD', p .. 'ids', unpack(ids))
end
redis.call('SADD', 'wn:senders', ARGV[4])
if redis.call('EXISTS', p .. 'owner') == 1 then
  -- Owned: no kick, but an OTP wakes the owner's drain (pacing.lanes.WAKE_CHANNEL), which
  -- would otherwise see it only at its next planned look.
  if lane == 'o' then redis.call('PUBLISH', 'wn:wake', ARGV[4]) end
  return 0
end
if redis.call('SET', p .. 'kick', lane, 'NX', 'PX', kick_ttl) then
  return 1
end
-- An OTP never waits behind a pending kick for slower work (it may sit in a busy queue):
-- it gets its own kick on the otp queue, once.
if lane == 'o' and redis.call('GET', p .. 'kick') ~= 'o' then
  redis.call('SET', p .. 'kick', 'o', 'PX', kick_ttl)
  return 1
end
return 0
