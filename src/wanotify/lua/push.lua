-- Enqueue ready jobs for one sender: append entries to a lane, remember their ids,
-- and say whether a dispatcher must be kicked (nobody owns the sender and no kick pending).
-- KEYS: none (all keys derive from the sender prefix ARGV[1]; one sender = one hash slot)
-- ARGV: prefix, lane (o|t|m), kick_ttl_ms, sender_name, entries...
local p = ARGV[1]
local lane = ARGV[2]
local kick_ttl = tonumber(ARGV[3])
for i = 5, #ARGV do
  local e = ARGV[i]
  redis.call('RPUSH', p .. 'q:' .. lane, e)
  local first = string.find(e, '|', 1, true)
  local second = string.find(e, '|', first + 1, true)
  redis.call('SADD', p .. 'ids', string.sub(e, first + 1, second - 1))
end
redis.call('SADD', 'wn:senders', ARGV[4])
if redis.call('EXISTS', p .. 'owner') == 1 then
  return 0
end
if redis.call('SET', p .. 'kick', lane, 'NX', 'PX', kick_ttl) then
  return 1
end
return 0
