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
-- The portfolio's daily unique-recipient tier: a recipient first messaged today counts once;
-- marketing to a new recipient waits (held until the next UTC day) when the tier, or the
-- share of it marketing may use, is spent; OTP and transactional still go (and count).
-- The account's cap (WANOTIFY_WABA_LIMITS) is a second GCRA, shared by every number of the
-- WABA: a slot must conform to both. OTPs may use the cap's burst tolerance, other lanes not,
-- so OTPs of one number go first even while other numbers of the account keep the cap busy.
-- ARGV: prefix, now_ms, max_n, interval_ms, burst_ms, lease_ms, pair_interval_ms,
--       pair_burst_ms, wmkt, horizon_ms, tier_key ('' = unlimited), tier_limit,
--       marketing_limit, day_end_ms, waba_key ('' = no cap), waba_interval_ms, waba_burst_ms
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
local tier_key = ARGV[11] or ''
local tier_limit = tonumber(ARGV[12] or '0')
local mkt_limit = tonumber(ARGV[13] or '0')
local day_end = tonumber(ARGV[14] or '0')
local wkey = ARGV[15] or ''
local winterval = tonumber(ARGV[16] or '0')
local wburst = tonumber(ARGV[17] or '0')
local tier_holds = 0

-- true when the entry may go today (and counts it), false when marketing must wait
local function tier_allows(lane, rcpt)
  if tier_key == '' then return true end
  if redis.call('SISMEMBER', tier_key, rcpt) == 1 then return true end
  if lane == 'm' then
    if redis.call('SCARD', tier_key) >= tier_limit then return false end
    if redis.call('SCARD', tier_key .. ':m') >= mkt_limit then return false end
    redis.call('SADD', tier_key .. ':m', rcpt)
  end
  redis.call('SADD', tier_key, rcpt)
  redis.call('PEXPIREAT', tier_key, math.floor(day_end + 3600000))
  redis.call('PEXPIREAT', tier_key .. ':m', math.floor(day_end + 3600000))
  return true
end

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
local wtat = 0
if wkey ~= '' then
  wtat = tonumber(redis.call('GET', wkey) or '0')
  if wtat < now then wtat = now end
end
local wblocked = false

local out = {}
local slots = {}
local held = 0
local rr = tonumber(redis.call('GET', p .. 'rr') or '0')
while #out < maxn and held < 500 do
  -- the next slot: the earliest conforming time for one more message
  local slot = tat - burst
  if slot < now then slot = now end
  if wkey ~= '' and wtat - wburst > slot then slot = wtat - wburst end
  if slot > limit then break end
  local rr_before = rr
  local from = 'o'
  local e = redis.call('LPOP', p .. 'q:o')
  if not e then
    local tl = redis.call('LLEN', p .. 'q:t')
    local ml = redis.call('LLEN', p .. 'q:m')
    if tl == 0 and ml == 0 then break end
    if ml > 0 and (tl == 0 or rr >= wmkt) then
      e = redis.call('LPOP', p .. 'q:m')
      from = 'm'
      rr = 0
    else
      e = redis.call('LPOP', p .. 'q:t')
      from = 't'
      rr = rr + 1
    end
  end
  if wkey ~= '' and from ~= 'o' and wtat > slot then
    -- not an OTP: no share of the account cap's burst tolerance
    slot = wtat
    if slot > limit then
      redis.call('LPUSH', p .. 'q:' .. from, e)
      rr = rr_before
      wblocked = true
      break
    end
  end
  local ok = true
  local reserved = string.sub(e, 1, 1) == '!'
  local body = e
  if reserved then body = string.sub(e, 2) end
  local rcpt = string.match(body, '|([^|]*)$')
  if not tier_allows(string.sub(body, 1, 1), rcpt) then
    -- the day's budget is spent: marketing to a new recipient waits for the next day
    ok = false
    held = held + 1
    tier_holds = tier_holds + 1
    redis.call('ZADD', p .. 'delay', day_end + tier_holds * 0.001, body)
  elseif not reserved then
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
    if slot > tat then tat = slot end
    tat = tat + interval
    if wkey ~= '' then
      if slot > wtat then wtat = slot end
      wtat = wtat + winterval
    end
    redis.call('ZADD', p .. 'inflight', slot + lease, body)
  end
end
redis.call('SET', p .. 'rr', tostring(rr))
redis.call('SET', p .. 'tat', tostring(tat), 'PX', math.ceil(tat - now + 60000))
local wait = tat - burst - now
if wkey ~= '' then
  redis.call('SET', wkey, tostring(wtat), 'PX', math.ceil(wtat - now + 60000))
  local wnext = wtat - wburst
  if wblocked then wnext = wtat end
  if wnext - now > wait then wait = wnext - now end
end
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
