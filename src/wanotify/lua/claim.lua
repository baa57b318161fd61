-- Take ownership of a sender's dispatch (or renew it). ARGV: prefix, token, ttl_ms
local p = ARGV[1]
local cur = redis.call('GET', p .. 'owner')
if cur == false or cur == ARGV[2] then
  redis.call('SET', p .. 'owner', ARGV[2], 'PX', tonumber(ARGV[3]))
  redis.call('DEL', p .. 'kick')
  return 1
end
return 0
