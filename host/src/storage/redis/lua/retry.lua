-- Put a leased callback back, due later: ack and delete its stream entry and
-- add it to the waiting set; one no longer pending is not brought back.
-- KEYS[1] stream, KEYS[2] waiting retries.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] entry JSON, ARGV[4] not-before ms.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
