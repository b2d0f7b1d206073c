-- Put a leased callback back, due later: ack and delete its stream entry,
-- forget its lease and add it to the waiting set; one no longer pending is
-- not brought back.
-- KEYS[1] stream, KEYS[2] waiting retries, KEYS[3] lease ends.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] entry JSON, ARGV[4] not-before ms.
redis.call('ZREM', KEYS[3], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
