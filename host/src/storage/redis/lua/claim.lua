-- Claim a delivery key (see answers.rs).
-- KEYS[1] answer, KEYS[2] lease; ARGV[1] token, ARGV[2] lease ms.
local answer = redis.call('GET', KEYS[1])
if answer then
  return {'answered', answer}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'leader'}
end
return {'held'}
