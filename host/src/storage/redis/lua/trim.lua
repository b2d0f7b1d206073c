-- Remove the members of a sorted set scored below ARGV[1] (they are its
-- lowest ranks), at most ARGV[2] of them. KEYS[1] the set. Returns how many.
local n = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
n = math.min(n, tonumber(ARGV[2]))
if n > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
end
return n
