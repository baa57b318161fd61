-- Release the jobs one sender may send now, atomically for every worker on every host.
--  * expired leases (a worker died holding them) go back to the head of their lane;
--  * delayed entries that are due (pair-limit holds, retries) go back to the head too;
--  * the sender's rate is a GCRA (interval ms per message, burst tolerance ms), slowed by
--    a temporary factor after a 130429;
--  * lanes: OTP strictly first, then transactional and marketing weighted (one marketing
--    pick after every `wmkt` transactional picks), so marketing never starves;
--  * each recipient has its own GCRA (Meta's pair limit); a job whose recipient is not
--    allowed yet is held in the delay set with its slot reserved, keeping FIFO per recipient.
-- With a horizon, jobs are reserved ahead: each gets the send time of its slot (at most
-- `horizon_ms` from now), so one call and one database claim serve many sends, and the
-- owner fires each at its time. Pair limits are checked at the slot time.
-- Released entries move to the inflight set with a lease; the caller acks them when done.
-- Entries are "lane|job_id|recipient"; a leading '!' marks a reserved pair slot.
-- ARGV: prefix, now_ms, max_n, interval_ms, burst_ms, lease_ms, pair_interval_ms,
--       pair_burst_ms, wmkt, horizon_ms
-- Returns: {wait_ms, depth, next_due_ms or -1, slot_1, entry_1, slot_2, entry_2, ...}
local p = ARGV[1]
local now = tonumber(ARGV[2])
local maxn = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local pint = tonumber(ARGV[7])
local pburst = tonumber(ARGV[8])
local wmkt = tonumber(ARGV[9])
local horizon = tonumber(ARGV[10] or '0')

local function lane_of(e)
  if string.sub(e, 1, 1) == '!' then return string.sub(e, 2, 2) end
  return string.sub(e, 1, 1)
end

local function requeue_front(list)
  for i = #list, 1, -1 do
    local e = list[i]
    if string.sub(e, 1, 1) ~= '!' then e = '!' .. e end
    redis.call('LPUSH', p .. 'q:' .. lane_of(e), e)
  end
end

local expired = redis.call('ZRANGEBYSCORE', p .. 'inflight', '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  redis.call('ZREM', p .. 'inflight', unpack(expired))
  requeue_front(expired)
end
local due = redis.call('ZRANGEBYSCORE', p .. 'delay', '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREM', p .. 'delay', unpack(due))
  requeue_front(due)
end

local slow = tonumber(redis.call('GET', p .. 'slow') or '1')
interval = interval * slow
local tat = tonumber(redis.call('GET', p .. 'tat') or '0')
if tat < now then tat = now end
local limit = now + horizon

local out = {}
local slots = {}
local held = 0
local rr = tonumber(redis.call('GET', p .. 'rr') or '0')
while #out < maxn and held < 500 do
  -- the next slot: the earliest conforming time for one more message
  local slot = tat - burst
  if slot < now then slot = now end
  if slot > limit then break end
  local e = redis.call('LPOP', p .. 'q:o')
  if not e then
    local tl = redis.call('LLEN', p .. 'q:t')
    local ml = redis.call('LLEN', p .. 'q:m')
    if tl == 0 and ml == 0 then break end
    if ml > 0 and (tl == 0 or rr >= wmkt) then
      e = redis.call('LPOP', p .. 'q:m')
      rr = 0
    else
      e = redis.call('LPOP', p .. 'q:t')
      rr = rr + 1
    end
  end
  local ok = true
  local body = e
  if string.sub(e, 1, 1) == '!' then
    body = string.sub(e, 2)
  else
    local rcpt = string.match(body, '|([^|]*)$')
    local pk = p .. 'p:' .. rcpt
    local ptat = tonumber(redis.call('GET', pk) or '0')
    if ptat < slot then ptat = slot end
    local ttl = math.ceil(ptat + pint - now + pburst + 1000)
    redis.call('SET', pk, tostring(ptat + pint), 'PX', ttl)
    if ptat - slot > pburst then
      ok = false
      held = held + 1
      redis.call('ZADD', p .. 'delay', ptat - pburst, '!' .. body)
    end
  end
  if ok then
    out[#out + 1] = body
    slots[#slots + 1] = slot
    tat = tat + interval
    redis.call('ZADD', p .. 'inflight', slot + lease, body)
  end
end
redis.call('SET', p .. 'rr', tostring(rr))
redis.call('SET', p .. 'tat', tostring(tat), 'PX', math.ceil(tat - now + 60000))
local wait = tat - burst - now
if wait < 0 then wait = 0 end
local depth = redis.call('LLEN', p .. 'q:o') + redis.call('LLEN', p .. 'q:t') + redis.call('LLEN', p .. 'q:m')
local nd = redis.call('ZRANGE', p .. 'delay', 0, 0, 'WITHSCORES')
local next_due = -1
if #nd > 0 then next_due = tonumber(nd[2]) end
local res = {tostring(wait), depth, tostring(next_due)}
for i = 1, #out do
  res[#res + 1] = tostring(slots[i])
  res[#res + 1] = out[i]
end
return res
