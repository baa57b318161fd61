-- A dispatcher gives up a sender. Only its owner may; the sender is released only when no
-- lane holds work, so a job pushed meanwhile either sees no owner (and kicks) or is seen here.
-- ARGV: prefix, token, force (1: give up even with work left, to let another worker take over)
-- Returns {released (0/1), depth, next_due_ms or -1, inflight}
local p = ARGV[1]
local depth = redis.call('LLEN', p .. 'q:o') + redis.call('LLEN', p .. 'q:t') + redis.call('LLEN', p .. 'q:m')
local nd = redis.call('ZRANGE', p .. 'delay', 0, 0, 'WITHSCORES')
local next_due = -1
if #nd > 0 then next_due = tonumber(nd[2]) end
local inflight = redis.call('ZCARD', p .. 'inflight')
local released = 0
if redis.call('GET', p .. 'owner') == ARGV[2] and (depth == 0 or ARGV[3] == '1') then
  redis.call('DEL', p .. 'owner')
  released = 1
end
return {released, depth, tostring(next_due), inflight}
