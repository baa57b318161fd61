-- One request against an API key's rate limit: a GCRA (generic cell rate algorithm), atomic.
-- The key's theoretical arrival time (TAT, µs on Redis's clock, shared by every web process)
-- moves one interval per admitted request; a request is admitted while TAT - now stays within
-- the burst tolerance (burst - 1 intervals). Refused requests change nothing.
-- KEYS[1]: the key's TAT
-- ARGV[1]: interval µs (1e6 / requests per second); ARGV[2]: burst (requests at once, >= 1)
-- Returns {admitted (1|0), retry_after_us, remaining, reset_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = (burst - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
if tat - now > tolerance then
  return {0, math.ceil(tat - now - tolerance), 0, math.ceil(tat - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor(burst - (new_tat - now) / interval)
return {1, 0, remaining, math.ceil(new_tat - now)}
