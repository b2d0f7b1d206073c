-- Queue a callback unless seen within the dedupe window or the queue is full
-- (see events.rs).
-- KEYS[1] stream, KEYS[2] waiting retries, KEYS[3] fingerprints.
-- ARGV[1] fingerprint, ARGV[2] now ms, ARGV[3] first live first-seen time
-- minus one (now - window), ARGV[4] max_queued, ARGV[5] entry JSON,
-- ARGV[6] most expired fingerprints to trim.
local first = redis.call('ZSCORE', KEYS[3], ARGV[1])
if first and tonumber(first) > tonumber(ARGV[3]) then
  return 'duplicate'
end
local queued = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if queued >= tonumber(ARGV[4]) then
  return 'full'
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
-- Expired fingerprints are the lowest ranks.
local expired = math.min(redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[3]), tonumber(ARGV[6]))
if expired > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, expired - 1)
end
return 'new'
