-- Delete a kv entry and take it off the namespace's usage.
-- KEYS[1] namespace hash, KEYS[2] its usage hash; ARGV[1] key.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'keys', -1)
redis.call('HINCRBY', KEYS[2], 'bytes', -(#ARGV[1] + #old))
return 1
