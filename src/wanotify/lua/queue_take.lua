-- Take up to ARGV[1] messages off one Celery queue as kombu's Redis transport keeps it, and
-- hold each unacknowledged exactly as kombu's QoS.append does: the same hash and index, the
-- same value ([payload, exchange, routing_key]), so kombu's restore_visible (run by every
-- worker) gives back what a dead worker held, after the visibility timeout.
--
-- A worker that is sending (its dispatcher owns a number) leaves the queue to the workers
-- that are not, while one of them is there and the queue is short: the intake of a burst is
-- then validated and stored away from the send loops it feeds. Those workers say so in the
-- pullers' set (member: the worker, score: when it last looked).
--
-- KEYS: the queue's lists, highest priority first (the queue, then queue\x06\x163, ...);
--       then the unacked hash, the unacked index, and the pullers' set.
-- ARGV: the most messages to take; now (unix seconds, the index's score); this worker's
--       name; 'idle' or 'sending'; how many waiting messages a sending worker takes at
--       anyway; how many seconds a worker's word in the set holds.
-- Returns a flat list: tag, payload, tag, payload... (tag '' for a message that is not
-- kombu's JSON with a delivery tag: junk another producer pushed, taken and refused), or
-- nil when this worker left the messages to an idle one.
local n = tonumber(ARGV[1])
local now = ARGV[2]
local me, mode, help_at, fresh = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local nq = #KEYS - 3
local hash, index, peers = KEYS[nq + 1], KEYS[nq + 2], KEYS[nq + 3]
local t = tonumber(now)
redis.call('ZREMRANGEBYSCORE', peers, '-inf', t - 10 * fresh)  -- workers long gone
if mode == 'idle' then
  redis.call('ZADD', peers, t, me)
else
  redis.call('ZREM', peers, me)
  if redis.call('ZCOUNT', peers, t - fresh, '+inf') > 0 then
    local waiting = 0
    for q = 1, nq do waiting = waiting + redis.call('LLEN', KEYS[q]) end
    if waiting < help_at then return false end
  end
end
local out = {}
local taken = 0
for q = 1, nq do
  if taken >= n then break end
  local raws = redis.call('RPOP', KEYS[q], n - taken)
  if raws then
    for _, raw in ipairs(raws) do
      taken = taken + 1
      local tag = ''
      local ok, msg = pcall(cjson.decode, raw)
      if ok and type(msg) == 'table' and type(msg.properties) == 'table'
          and type(msg.properties.delivery_tag) == 'string' then
        local p = msg.properties
        local info = type(p.delivery_info) == 'table' and p.delivery_info or {}
        local ex = type(info.exchange) == 'string' and info.exchange or ''
        local rk = type(info.routing_key) == 'string' and info.routing_key or ''
        tag = p.delivery_tag
        redis.call('HSET', hash, tag, '[' .. raw .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
        redis.call('ZADD', index, now, tag)
      end
      out[#out + 1] = tag
      out[#out + 1] = raw
    end
  end
end
return out
