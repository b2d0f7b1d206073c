-- Set a kv entry unless the namespace would go over its quota, by the rule of
-- storage::kv::over_quota (see kv.rs); the usage is kept in the same step.
-- KEYS[1] namespace hash, KEYS[2] its usage hash.
-- ARGV[1] key, ARGV[2] value, ARGV[3] max keys, ARGV[4] max bytes.
-- Returns {verdict, keys before, bytes before, keys after, bytes after}.
local old = redis.call('HGET', KEYS[1], ARGV[1])
local usage = redis.call('HMGET', KEYS[2], 'keys', 'bytes')
local keys = tonumber(usage[1] or '0')
local bytes = tonumber(usage[2] or '0')
local after_keys = keys
local after_bytes = bytes + #ARGV[1] + #ARGV[2]
if old then
  after_bytes = after_bytes - (#ARGV[1] + #old)
else
  after_keys = keys + 1
end
local verdict = 'ok'
if after_keys > tonumber(ARGV[3]) and after_keys > keys then
  verdict = 'keys'
elseif after_bytes > tonumber(ARGV[4]) and after_bytes > bytes then
  verdict = 'bytes'
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  -- By increments: small numbers reach Redis exactly (Lua prints large
  -- ones in exponent notation).
  redis.call('HINCRBY', KEYS[2], 'keys', after_keys - keys)
  redis.call('HINCRBY', KEYS[2], 'bytes', after_bytes - bytes)
end
return {verdict, keys, bytes, after_keys, after_bytes}
