-- stream_entries.lua — append a call's order documents to the event stream: a lone document as one
-- entry of kind `single`, more as entries of kind `multi` of at most 1000 documents each (field o:
-- a msgpack array header and the documents' bytes joined, no packing), each adding its documents
-- beyond the first to the metrics hash's stream_extra_events (ack.lua takes them off; reserve.lua's
-- backlog check relies on the 1000). `...`: more fields of every entry (cancel.lua's t). Spliced in
-- by reservation/scripts.py; used by reserve.lua and cancel.lua at the end of a call.
local function append_documents(stream_key, metrics_key, single, multi, documents, ...)
  for first = 1, #documents, 1000 do
    local last = math.min(first + 999, #documents)
    if first == last then
      redis.call('XADD', stream_key, '*', 'k', single, 'o', documents[first], ...)
    else
      local count = last - first + 1
      local header = count < 16 and string.char(0x90 + count)
        or string.char(0xdc, math.floor(count / 256), count % 256)
      redis.call('XADD', stream_key, '*', 'k', multi, 'o', header .. table.concat(documents, '', first, last), ...)
      redis.call('HINCRBY', metrics_key, 'stream_extra_events', count - 1)
    end
  end
end
