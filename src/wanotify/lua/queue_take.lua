-- Take up to ARGV[1] messages off one Celery queue as kombu's Redis transport keeps it, and
-- hold each unacknowledged exactly as kombu's QoS.append does: the same hash and index, the
-- same value ([payload, exchange, routing_key]), so kombu's restore_visible (run by every
-- worker) gives back what a dead worker held, after the visibility timeout.
--
-- KEYS: the queue's lists, highest priority first (the queue, then queue\x06\x163, ...);
--       then the unacked hash and the unacked index.
-- ARGV: the most messages to take; now (unix seconds, the index's score).
-- Returns a flat list: tag, payload, tag, payload... (tag '' for a message that is not
-- kombu's JSON with a delivery tag: junk another producer pushed, taken and refused).
local n = tonumber(ARGV[1])
local now = ARGV[2]
local nq = #KEYS - 2
local hash, index = KEYS[nq + 1], KEYS[nq + 2]
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
