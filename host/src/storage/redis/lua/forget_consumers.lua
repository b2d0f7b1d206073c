-- Forget the group's consumers (one per enrichd process that ever ran) that
-- hold no callback and were idle longer than ARGV[2] ms; never this host's.
-- Atomic, so a consumer that just took a callback is never dropped with it.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] idle ms, ARGV[3] this host's name.
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then
  return 0
end
local forgotten = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do
    f[c[i]] = c[i + 1]
  end
  if f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
