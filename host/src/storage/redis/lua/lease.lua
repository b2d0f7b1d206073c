-- Lease the next callback for one host (see events.rs), in one step:
-- move due retries to the stream, then take a callback whose lease ended (its
-- host died or stalled), else read a new one; record its lease end.
-- KEYS[1] stream, KEYS[2] waiting retries, KEYS[3] lease ends.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] the time retries are due by,
-- ARGV[4] now by the host's clock (for lease ends), ARGV[5] this lease's end,
-- ARGV[6] most retries moved, ARGV[7] most ended leases looked at.
-- Returns {id, entry JSON} ('' when the entry has no JSON), or false.
local function json(fields)
  if type(fields) == 'table' then
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then
        return fields[i + 1]
      end
    end
  end
  return ''
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[6]))
for _, entry in ipairs(due) do
  redis.call('ZREM', KEYS[2], entry)
  redis.call('XADD', KEYS[1], '*', 'e', entry)
end

for _ = 1, tonumber(ARGV[7]) do
  local ended = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4], 'LIMIT', 0, 1)
  if #ended == 0 then
    break
  end
  local id = ended[1]
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  local entry = claimed[1]
  if type(entry) == 'table' and entry[1] then
    redis.call('ZADD', KEYS[3], ARGV[5], id)
    return {id, json(entry[2])}
  end
  -- No longer in the stream: nothing to hand out.
  redis.call('ZREM', KEYS[3], id)
  redis.call('XACK', KEYS[1], ARGV[1], id)
end

local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if type(read) == 'table' and read[1] and read[1][2][1] then
  local entry = read[1][2][1]
  redis.call('ZADD', KEYS[3], ARGV[5], entry[1])
  return {entry[1], json(entry[2])}
end
return false
