-- Settle released entries: ack the finished ones (drop from inflight and the id set) and
-- hold the others in the delay set until their due time (retry backoff, throttling).
-- ARGV: prefix, n_done, done entries..., then pairs of (due_ms, entry) to hold.
local p = ARGV[1]
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  local e = ARGV[i]
  redis.call('ZREM', p .. 'inflight', e)
  local first = string.find(e, '|', 1, true)
  local second = string.find(e, '|', first + 1, true)
  redis.call('SREM', p .. 'ids', string.sub(e, first + 1, second - 1))
end
local i = 3 + n
while i < #ARGV do
  local due = ARGV[i]
  local e = ARGV[i + 1]
  redis.call('ZREM', p .. 'inflight', e)
  redis.call('ZADD', p .. 'delay', due, '!' .. e)
  i = i + 2
end
return 1
