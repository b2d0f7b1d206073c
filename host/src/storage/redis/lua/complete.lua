-- Store a leader's answer, fenced by its lease token (see answers.rs).
-- KEYS[1] answer, KEYS[2] lease, KEYS[3] time index, KEYS[4] the id's routes.
-- ARGV[1] token, ARGV[2] answer (the codec's bytes, opaque here), ARGV[3] answer TTL ms,
-- ARGV[4] stored_at_ms, ARGV[5] index member, ARGV[6] first live stored time,
-- ARGV[7] max_records, ARGV[8] route, ARGV[9] retention ms,
-- ARGV[10] prefix of answer keys, ARGV[11] most evictions in this call.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {'superseded', existing}
end
local holder = redis.call('GET', KEYS[2])
-- An expired lease nobody took is no conflict: no other copy is running.
if holder and holder ~= ARGV[1] then
  return {'lost'}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[8])
redis.call('PEXPIRE', KEYS[4], ARGV[9])
redis.call('DEL', KEYS[2])
-- Expired members are the lowest ranks: trim them, then evict the oldest
-- beyond max_records (and their answers), a bounded number per call.
local expired = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. ARGV[6])
if expired > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, math.min(expired, tonumber(ARGV[11])) - 1)
end
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[7])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[3], math.min(over, tonumber(ARGV[11])))
  for i = 1, #oldest, 2 do
    redis.call('DEL', ARGV[10] .. oldest[i])
  end
end
return {'stored'}
