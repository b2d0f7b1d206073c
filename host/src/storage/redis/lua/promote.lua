-- Move due retries (not-before <= now) to the stream, oldest first.
-- KEYS[1] waiting retries, KEYS[2] stream; ARGV[1] now ms, ARGV[2] most moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, entry in ipairs(due) do
  redis.call('ZREM', KEYS[1], entry)
  redis.call('XADD', KEYS[2], '*', 'e', entry)
end
return #due
