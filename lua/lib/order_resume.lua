-- order_resume.lua — shared by case_review.lua (a rejected case) and case_exchange_ship.lua (an
-- exchange that succeeded): the order returns to the status it had before its after-sales case,
-- and back onto that status's timer. Spliced in by reservation/scripts.py. Layout: lua/ship.lua
-- (2 status, 23 previous_status, 25 confirm_due_ms, 28 after_sales_until_ms, 29 after_sales_closed).
local function resume_previous_status(document, confirm_key, window_key)
  document[2], document[23] = document[23], ''
  if document[2] == 'shipped' then
    redis.call('ZADD', confirm_key, document[25], document[1])
  elseif document[2] == 'completed' and not document[29] then
    redis.call('ZADD', window_key, document[28], document[1])
  end
end
